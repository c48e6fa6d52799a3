"""`python -m podnode.bench`: the throughput benchmark, as before the benchmarks became a package."""

from .throughput import main

main()
