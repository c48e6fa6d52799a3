"""Benchmarks and their load client, apart from the node's own modules: nothing in a node imports them.

    python -m podnode.bench            throughput and latency (throughput.py)
    python -m podnode.bench.failover   recovery after a SIGKILL (failover.py)
    python -m podnode.bench.scaling    time to a launched node taking work (scaling.py)
    python -m podnode.bench.cpu        where the CPU of one execution goes, optionally with cProfile (cpu.py)
    python -m podnode.bench.nodes      many nodes: leader CPU per execution, memory per node, joining (nodes.py)
    python -m podnode.bench --array    10,000 inputs as arrays, read in bulk (array.py)
    python -m podnode.bench.cgroup_attach  moving a process into a cgroup, back to back and after a pause

loadclient.py is the lean HTTP client the throughput benchmark drives the cluster with.
"""
