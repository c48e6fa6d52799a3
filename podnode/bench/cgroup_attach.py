"""`python -m podnode.bench.cgroup_attach`: how long moving a process into a cgroup takes, back to back and after
the machine was idle a moment. Each execution starts by such a move (exec/spawn.c); the kernel serialises moves
with a lock whose writer waits for an RCU grace period when no move happened lately, so the first one after a
pause can cost milliseconds. Needs root and a cgroup hierarchy (the pids one of v1, else the v2 root).

Then the start of one execution as a node makes it (its sandbox: cgroups, the run-as user, pod-spawn), after the
same pauses: from ExecutionRun.start() to main.sh's first instruction (bash's $EPOCHREALTIME), with a fresh spawn
and with a spawn armed ahead (exec/armed.py), which has made that move before it is asked for."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ..exec.armed import ArmedPool
from ..exec.reaper import cleanup
from ..exec.runner import ExecutionRun
from ..exec.sandbox import Limits, Sandbox, detect_cgroups, resolve_run_as, spawn_helper


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


async def start_ms(sb: Sandbox, adir: Path, gap_s: float, runs: int, *, armed: bool) -> list[float]:
    """Milliseconds from ExecutionRun.start() to main.sh's first instruction, `gap_s` after the previous run."""
    pool = ArmedPool.start(sb, 1) if armed else None
    took = []
    try:
        for i in range(runs):
            await asyncio.sleep(gap_s)
            if pool is not None:   # the refill after the previous run is ready (it is, long before the gap ends)
                while not pool.poll():
                    await asyncio.sleep(0.001)
            run = ExecutionRun(execution_id=i, attempt=1, activity="bench", activity_dir=adir, input="",
                               output_cap_bytes=4096, kill_grace_s=1.0, sandbox=sb)
            start = time.time()
            await run.start()
            result = await run.wait()
            took.append((float(result.stdout) - start) * 1000)
        if pool is not None and pool.used != runs:
            raise RuntimeError(f"only {pool.used} of {runs} runs were armed")
    finally:
        if pool is not None:
            pool.close()
            sb.armed = None
    return took[3:]


async def starts(runs: int) -> None:
    helper, how = spawn_helper()
    backend, why = detect_cgroups("auto", f"podbench-start-{os.getpid()}")
    sb = Sandbox(run_as=resolve_run_as(None), cgroups=backend, helper=helper, spawn=how, defaults=Limits())
    print(f"an execution's start, from ExecutionRun.start() to main.sh's first instruction ({sb.description}):")
    try:
        with tempfile.TemporaryDirectory(prefix="pod-bench-start-") as tmp:
            adir = Path(tmp) / "act"
            adir.mkdir()
            (adir / "main.sh").write_text("#!/bin/bash\necho $EPOCHREALTIME\n")
            (adir / "main.sh").chmod(0o755)
            Path(tmp).chmod(0o755)
            sb.own(adir)
            for gap_s in (0.0, 0.05, 0.3):
                line = f"  {gap_s * 1000:5.0f} ms after the previous run:"
                for armed in (False, True):
                    took = await start_ms(sb, adir, gap_s, runs, armed=armed)
                    line += f"   {'armed' if armed else 'fresh'} p50 {statistics.median(took):6.2f} ms" \
                            f" max {max(took):6.2f} ms"
                print(line, flush=True)
    finally:
        sb.close()
        if backend is not None:
            cleanup(backend.node_dirs, set())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.cgroup_attach", description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=25)
    a = ap.parse_args(argv)
    # Not named pod-*-PID: a node starting meanwhile would take it for a dead node's and remove it (sweep_stale).
    cgroup = hierarchy() / f"podbench-attach-{os.getpid()}"
    cgroup.mkdir()
    try:
        print(f"moving a new process into {cgroup}, {a.moves} times per pause:")
        for gap_s in (0.0, 0.05, 0.3):
            took = attach_ms(cgroup, gap_s, a.moves)
            print(f"  {gap_s * 1000:5.0f} ms after the previous move: p50 {statistics.median(took):7.3f} ms   "
                  f"max {max(took):7.3f} ms")
    finally:
        cgroup.rmdir()
    if spawn_helper()[0] is not None:
        asyncio.run(starts(a.moves))


if __name__ == "__main__":
    main()
