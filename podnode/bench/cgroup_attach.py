"""`python -m podnode.bench.cgroup_attach`: how long moving a process into a cgroup takes, back to back and after
the machine was idle a moment. Each execution starts by such a move (exec/spawn.c); the kernel serialises moves
with a lock whose writer waits for an RCU grace period when no move happened lately, so the first one after a
pause can cost milliseconds. Needs root and a cgroup hierarchy (the pids one of v1, else the v2 root)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path


def hierarchy() -> Path:
    v1 = Path("/sys/fs/cgroup/pids")
    return v1 if (v1 / "cgroup.procs").exists() else Path("/sys/fs/cgroup")


def attach_ms(cgroup: Path, gap_s: float, moves: int) -> list[float]:
    """Milliseconds to write a fresh child's pid into cgroup.procs, `gap_s` after the previous move."""
    took = []
    for _ in range(moves):
        time.sleep(gap_s)
        child = subprocess.Popen(["sleep", "0.01"])
        try:
            start = time.perf_counter()
            (cgroup / "cgroup.procs").write_text(str(child.pid))
            took.append((time.perf_counter() - start) * 1000)
        finally:
            child.wait()
    return took[3:]   # the first moves warm up


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.cgroup_attach", description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=25)
    a = ap.parse_args(argv)
    cgroup = hierarchy() / f"pod-bench-attach-{os.getpid()}"
    cgroup.mkdir()
    try:
        print(f"moving a new process into {cgroup}, {a.moves} times per pause:")
        for gap_s in (0.0, 0.05, 0.3):
            took = attach_ms(cgroup, gap_s, a.moves)
            print(f"  {gap_s * 1000:5.0f} ms after the previous move: p50 {statistics.median(took):7.3f} ms   "
                  f"max {max(took):7.3f} ms")
    finally:
        cgroup.rmdir()


if __name__ == "__main__":
    main()
