"""One node under cProfile, every thread profiled by its own CPU time (not wall time, which on a busy machine is
mostly waiting for the GIL or a core): `python -m podnode.bench.profiled_node PREFIX podnode NODE-ARGS...`.

Writes PREFIX.THREAD.prof for each thread (MainThread: asyncio, HTTP, the agent; the others: pysyncobj's Raft
thread and helpers) when the node exits. Used by `python -m podnode.bench.cpu --profile DIR`, as
`python -m podnode.bench.profiled_node PREFIX podnode NODE-ARGS...`: the word podnode is the program name, by
which the nodes tell a live node's cgroups from a dead one's (local.procs.is_node_process).
"""

from __future__ import annotations

import atexit
import cProfile
import marshal
import sys
import threading
import time

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()


def _profiled_run(run):
    def wrapper(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append((self.name, prof))
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()
    return wrapper


def _dump(prefix: str) -> None:
    with _lock:
        profiles = list(_profiles)
    seen: dict[str, int] = {}
    for name, prof in profiles:
        # snapshot_stats reads the entries without disabling the profiler: a daemon thread may still run
        prof.snapshot_stats()
        n = seen[name] = seen.get(name, 0) + 1
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) + (f"-{n}" if n > 1 else "")
        with open(f"{prefix}.{safe}.prof", "wb") as fh:
            marshal.dump(prof.stats, fh)


def main(argv: list[str]) -> None:
    prefix, program, node_args = argv[0], argv[1], argv[2:]
    if program != "podnode":
        raise SystemExit("usage: python -m podnode.bench.profiled_node PREFIX podnode NODE-ARGS...")
    threading.Thread.run = _profiled_run(threading.Thread.run)
    main_prof = cProfile.Profile(time.thread_time)
    _profiles.append(("MainThread", main_prof))
    atexit.register(_dump, prefix)
    from ..server.main import main as node_main
    main_prof.enable()
    node_main(node_args)


if __name__ == "__main__":
    main(sys.argv[1:])
