"""Local processes: podnode processes and their executions on this machine, started, watched and stopped.

procs.py       free ports, /proc, process groups, stopping with a grace period then SIGKILL, descendants
cluster.py     LocalCluster: N podnode processes on loopback (pod up, the tests, the benchmarks)
supervisor.py  what `pod up` does when a node dies, leaves or must stop
left.py        the record a node that left the cluster keeps in its data dir (the node writes it, pod up reads it)
"""
