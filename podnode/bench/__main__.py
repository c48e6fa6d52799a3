"""`python -m podnode.bench`: the throughput benchmark, as before the benchmarks became a package;
`python -m podnode.bench --array`: arrays of executions and results in bulk (array.py)."""

import sys

if "--array" in sys.argv[1:]:
    from .array import main as array_main
    array_main([a for a in sys.argv[1:] if a != "--array"])
else:
    from .throughput import main
    main()
