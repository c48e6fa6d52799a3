"""Where the CPU of one execution goes: the throughput benchmark's load, measured from /proc.

    python -m podnode.bench.cpu [--executions N] [--concurrency C] [--nodes 3] [--profile DIR]

Runs the same load as `python -m podnode.bench` (main.sh is `echo "hello $1"`, submitted through one node and
read through another) and prints, in ms of CPU per execution: the nodes' own (their Python: HTTP, Raft, apply,
agent, spawning), what they spawned (pod-spawn or the wrapper, then main.sh: env, bash), the load client, and
all of the machine. The machine is shared: compare figures of one run, or of runs in the same hour.

--profile DIR runs each node under cProfile by CPU time of each thread (profiled_node.py; slower: the figures
are then the profiler's too), writes DIR/NODE.THREAD.prof when the nodes stop, and prints the functions of all
nodes together by their own time, the main threads (asyncio: HTTP, agent) apart from the other threads (Raft).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from ..local.cluster import LocalCluster, LocalNode
from .loadclient import LoadClient
from .throughput import INSTALL, install_activity, one_execution, run_pool, submit_and_read, submit_and_wait

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    f = text[text.rindex(")") + 2:].split()   # fields from 3 (state) on: utime is 14, stime 15, cutime 16, cstime 17
    return (int(f[11]) + int(f[12])) * TICK_S, (int(f[13]) + int(f[14])) * TICK_S


def machine_cpu() -> float:
    """CPU seconds the whole machine spent busy (not idle, not iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) * TICK_S


class ProfiledCluster(LocalCluster):
    """A LocalCluster whose nodes run under cProfile, each writing DIR/NODE.THREAD.prof when it stops."""

    def __init__(self, *args, profile_dir: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.profile_dir = profile_dir

    def command(self, node: LocalNode) -> list[str]:
        cmd = super().command(node)
        assert cmd[1:3] == ["-m", "podnode"], cmd
        return [cmd[0], "-m", "podnode.bench.profiled_node", str(self.profile_dir / node.node_id), "podnode",
                *cmd[3:]]


async def measure(cluster: LocalCluster, workdir: Path, n: int, concurrency: int, way=submit_and_read) -> None:
    urls = cluster.urls
    pids = [node.proc.pid for node in cluster.nodes]
    async with LoadClient(timeout_s=60, token=cluster.token) as client:
        install = workdir / "install.sh"
        install.write_text(INSTALL)
        await install_activity(client, urls, "bench", install)
        for i in range(20):   # warm-up
            await one_execution(client, urls, i, way)
        before = [proc_cpu(p) for p in pids]
        machine_before, client_before = machine_cpu(), time.process_time()
        elapsed, _ = await run_pool(n, concurrency, lambda i: one_execution(client, urls, i, way))
        client_s = time.process_time() - client_before
        machine_s = machine_cpu() - machine_before
        after = [proc_cpu(p) for p in pids]
    own = [(a[0] - b[0]) / n * 1000 for a, b in zip(after, before)]
    kids = [(a[1] - b[1]) / n * 1000 for a, b in zip(after, before)]
    per = 1000 / n
    print(f"{n} executions, concurrency {concurrency}: {n / elapsed:.1f} executions/s; ms of CPU per execution:")
    print(f"  nodes' own (Python)         {sum(own):6.2f}   ({', '.join(f'{x:.2f}' for x in own)})")
    print(f"  spawned by the nodes        {sum(kids):6.2f}   (the spawn chain and main.sh, reaped)")
    print(f"  load client                 {client_s * per:6.2f}")
    rest = machine_s * per - sum(own) - sum(kids) - client_s * per
    print(f"  rest of the machine         {rest:6.2f}   (other users of this machine, reapers, the kernel's own)")
    print(f"  whole machine               {machine_s * per:6.2f}   ({machine_s / elapsed:.2f} of "
          f"{os.cpu_count()} cores busy)")


def print_profile(profile_dir: Path, top: int) -> None:
    main = sorted(str(p) for p in profile_dir.glob("*.MainThread.prof"))
    other = sorted(str(p) for p in profile_dir.glob("*.prof") if str(p) not in main)
    if not main:
        print(f"no profiles in {profile_dir} (a node that did not stop cleanly writes none)")
        return
    for title, files in (("main threads (asyncio)", main), ("other threads (pysyncobj)", other)):
        if files:
            print(f"\n==== {title}: {', '.join(Path(f).name for f in files)}")
            stats = pstats.Stats(*files, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.cpu", description=__doc__.splitlines()[0])
    ap.add_argument("--executions", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--slots", type=int, default=None, help="slots per node (default: the CPU count)")
    ap.add_argument("--wait", action="store_true",
                    help="each execution in one request (newExecution&wait) instead of submit, then read")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR", help="run the nodes under cProfile")
    ap.add_argument("--top", type=int, default=40, help="functions to print with --profile")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pod-bench-cpu-") as tmp:
        if a.profile is not None:
            a.profile.mkdir(parents=True, exist_ok=True)
            for old in a.profile.glob("*.prof"):
                old.unlink()
            cluster = ProfiledCluster(Path(tmp) / "cluster", nodes=a.nodes, slots=a.slots, profile_dir=a.profile)
        else:
            cluster = LocalCluster(Path(tmp) / "cluster", nodes=a.nodes, slots=a.slots)
        with cluster:
            cluster.start(timeout_s=60)
            asyncio.run(measure(cluster, Path(tmp), a.executions, a.concurrency,
                                submit_and_wait if a.wait else submit_and_read))
    if a.profile is not None:
        print_profile(a.profile, a.top)


if __name__ == "__main__":
    main()
