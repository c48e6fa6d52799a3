"""Benchmark: what a long queue costs. A local 3-node cluster, an activity whose executions wait for a gate file,
so that the queue only grows while it is shut.

    python -m podnode.bench.depth [--queued 100000] [--concurrency 32] [--short 2000]

Prints, with the queue empty and with --queued executions waiting: the submit rate of the first and of the last
10,000 submissions; the drain rate (finished and read per second) once the gate opens, against the throughput
of a short queue; each node's resident memory per queued execution; the snapshot's size and the longest pause
it caused the apply thread (from the nodes' logs); the time of a getAllExecutions page. And the ratios.
Figures, not assertions: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from ..local.cluster import LocalCluster
from .loadclient import LoadClient
from .throughput import call, install_activity

TERMINAL = {"finished", "error", "terminated"}
WINDOW = 10_000


def install_script(gate: Path) -> str:
    main = f'#!/usr/bin/env bash\nwhile [ ! -e "{gate}" ]; do sleep 0.5; done\necho "done $1"\n'
    return "#!/usr/bin/env bash\ncat > main.sh <<'EOF'\n" + main + "EOF\nchmod +x main.sh\n"


async def pool(n: int, concurrency: int, job) -> list:
    """Run job(0..n-1) with `concurrency` workers taking the next index; results in index order."""
    out: list = [None] * n
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            out[i] = await job(i)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def submit(client: LoadClient, urls: list[str], i: int) -> tuple[int, float]:
    body = await call(client, urls[i % len(urls)], action="newExecution", name="depth", input=str(i))
    return body["execution"]["id"], time.perf_counter()


async def read_to_end(client: LoadClient, urls: list[str], exec_id: int) -> None:
    while True:
        body = await call(client, urls[exec_id % len(urls)], action="getExecutionStatus",
                          executionId=str(exec_id), wait="10")
        if body["execution"]["status"] in TERMINAL:
            return


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


PAUSE = re.compile(r"snapshot: the apply thread paused ([0-9.]+) ms")


def snapshot_pauses_ms(cluster: LocalCluster) -> list[float]:
    pauses = []
    for node in cluster.nodes:
        log = cluster.log_dir / f"{node.node_id}.log"
        if log.exists():
            pauses += [float(m.group(1)) for m in PAUSE.finditer(log.read_text(errors="replace"))]
    return pauses


async def settled(client: LoadClient, urls: list[str], total: int) -> dict:
    """Wait until every node has applied the `total` executions; the counts."""
    while True:
        answers = [(await call(client, url, action="getAllExecutions", limit=1))["counts"] for url in urls]
        if all(sum(counts.values()) == total for counts in answers):
            return answers[0]
        await asyncio.sleep(0.2)


async def page_ms(client: LoadClient, url: str, **params) -> tuple[float, dict]:
    """The median time of a page, of 11 (the machine is shared: one slow answer says little)."""
    times, body = [], {}
    for _ in range(11):
        start = time.perf_counter()
        body = await call(client, url, action="getAllExecutions", **params)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, body


async def bench(cluster: LocalCluster, workdir: Path, queued: int, concurrency: int, short: int,
                drain: int | None = None) -> None:
    urls = cluster.urls
    gate = workdir / "gate"
    gate.touch()
    install = workdir / "install.sh"
    install.write_text(install_script(gate))
    async with LoadClient(timeout_s=120, token=cluster.token) as client:
        await install_activity(client, urls, "depth", install)

        # 1. A short queue: submit and read as fast as the cluster runs them (the gate is open).
        async def through(i: int) -> None:
            exec_id, _ = await submit(client, urls, i)
            await read_to_end(client, urls, exec_id)
        start = time.perf_counter()
        await pool(short, concurrency, through)
        short_rate = short / (time.perf_counter() - start)
        print(f"short queue: {short} executions submitted, run and read at {short_rate:7.1f}/s")

        # 2. The queue grows: the gate is shut, the first executions hold the slots, the rest wait.
        gate.unlink()
        rss_before = {n.node_id: rss_bytes(n.proc.pid) for n in cluster.nodes}
        fill_start = time.perf_counter()
        base = min(1000, queued // 2)   # a short queue first, to time a page of 1000 with it
        submitted = await pool(base, concurrency, lambda i: submit(client, urls, i))
        paused = time.perf_counter()
        await settled(client, urls, base)
        first_page_ms, _ = await page_ms(client, urls[1], limit=1000)
        gap = time.perf_counter() - paused   # the page's time is not the fill's: taken out of the timestamps
        rest = await pool(queued - base, concurrency, lambda i: submit(client, urls, base + i))
        submitted += [(exec_id, t - gap) for exec_id, t in rest]
        fill_s = time.perf_counter() - fill_start - gap
        ids = sorted(exec_id for exec_id, _ in submitted)
        done_at = sorted(t for _, t in submitted)
        window = min(WINDOW, queued // 2)
        first_rate = window / (done_at[window - 1] - fill_start)
        last_rate = window / (done_at[-1] - done_at[-window - 1])
        print(f"fill: {queued} submitted in {fill_s:.1f} s; submit rate of the first {window}: {first_rate:7.1f}/s,"
              f" of the last {window}: {last_rate:7.1f}/s   ratio last/first {last_rate / first_rate:.2f}")

        # 3. With the queue long: memory, pages, snapshots.
        counts = await settled(client, urls, queued)
        print(f"counts: {counts}")
        for node in cluster.nodes:
            grown = rss_bytes(node.proc.pid) - rss_before[node.node_id]
            print(f"  {node.node_id}: resident memory +{grown / 2**20:6.1f} MiB,"
                  f" {grown / queued:6.0f} bytes per queued execution (goal < 500)")
        deep_ms, body = await page_ms(client, urls[1], limit=1000)
        mid = ids[len(ids) // 2]
        mid_ms, _ = await page_ms(client, urls[1], limit=1000, cursor=f"i{mid}")
        waiting_ms, _ = await page_ms(client, urls[1], limit=1000, status="waiting", cursor=f"i{mid}")
        print(f"getAllExecutions, 1000 a page: {first_page_ms:.1f} ms with {base} queued; with {queued} queued"
              f" {deep_ms:.1f} ms (first page), {mid_ms:.1f} ms (from the middle), {waiting_ms:.1f} ms"
              f" (status=waiting)   ratio {deep_ms / max(first_page_ms, 1e-3):.2f}")
        sizes = {n.node_id: (n.data_dir / "raft.snapshot").stat().st_size
                 for n in cluster.nodes if (n.data_dir / "raft.snapshot").exists()}
        pauses = snapshot_pauses_ms(cluster)
        print(f"snapshots: {len(pauses)} taken on the 3 nodes; size now {sizes} bytes"
              f" ({max(sizes.values(), default=0) / max(queued, 1):.0f} bytes per execution);"
              f" longest apply pause {max(pauses, default=0):.1f} ms (goal < 50), median"
              f" {statistics.median(pauses) if pauses else 0:.1f} ms")

        # 4. The gate opens: the queue drains; every result is read.
        gate.touch()
        start = time.perf_counter()
        drained = ids[:drain] if drain else ids
        await pool(len(drained), concurrency, lambda i: read_to_end(client, urls, drained[i]))
        drain_rate = len(drained) / (time.perf_counter() - start)
        print(f"drain: the first {len(drained)} of {len(ids)} finished and read at {drain_rate:7.1f}/s   ratio to"
              f" the short queue's {short_rate:.1f}/s: {drain_rate / short_rate:.2f}")


def snapshot_in_process(queued: int, workdir: Path) -> None:
    """The same snapshot in this process, on a replica of its own holding `queued` waiting executions: the pause
    of the fork against packing the state on the apply thread, as snapshots were written before."""
    import msgpack

    from ..config import RaftTiming
    from ..local.procs import free_port
    from ..raft import commands as C
    from ..raft.replica import Replica

    replica = Replica(self_addr=f"127.0.0.1:{free_port()}", peers=[], data_dir=str(workdir / "replica"),
                      password="bench", timing=RaftTiming(), on_change=lambda touched: None)
    try:
        deadline = time.monotonic() + 30
        while not replica.is_leader():
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's replica was not elected")
            time.sleep(0.05)
        with replica.lock:
            state = replica.state
            state.apply(C.NodeUp(node="n1", raftAddr="127.0.0.1:1", httpUrl="http://x", slots=2, now=time.time()))
            state.apply(C.ActivityNew(name="depth", url="http://x/install.sh", now=time.time()))
            for i in range(queued):
                state.apply(C.ExecNew(name="depth", input=str(i), now=time.time()).to_wire())
        for _ in range(3):   # entries in the log, so that there is something to compact
            done = threading.Event()
            replica.apply_command(C.encode(C.Sync().to_wire()), callback=lambda res, err: done.set())
            done.wait(10)
        start = time.perf_counter()
        with replica.lock:
            packed = msgpack.packb(replica.state.to_dict(), use_bin_type=True)
        under_lock_ms = (time.perf_counter() - start) * 1000
        replica.forceLogCompaction()
        snapshot = workdir / "replica" / "raft.snapshot"
        deadline = time.monotonic() + 120
        while not (replica.snapshot_pauses_s and snapshot.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's replica wrote no snapshot")
            time.sleep(0.05)
        pause_ms = replica.snapshot_pauses_s[-1] * 1000
        print(f"snapshot of {queued} queued, in this process: the apply thread paused {pause_ms:.1f} ms (fork;"
              f" goal < 50), packing it on the apply thread as before took {under_lock_ms:.0f} ms"
              f" ({under_lock_ms / max(pause_ms, 1e-3):.0f}x); {len(packed)} bytes,"
              f" {len(packed) / max(queued, 1):.0f} bytes per execution")
    finally:
        replica.destroy_synchronous()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.depth", description=__doc__.splitlines()[0])
    ap.add_argument("--queued", type=int, default=100_000, help="executions to queue behind the gate")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--short", type=int, default=2000, help="executions in the short-queue run")
    ap.add_argument("--slots", type=int, default=2, help="slots per node")
    ap.add_argument("--drain", type=int, default=None,
                    help="read only the first N once the gate opens (default: all; draining is the long part)")
    a = ap.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pod-bench-depth-") as tmp:
        Path(tmp).chmod(0o755)   # executions may run as another user: they must see the gate
        extra = ["--max-waiting-executions", "0", "--max-unread-result-bytes", "0"]
        with LocalCluster(Path(tmp) / "cluster", nodes=3, slots=a.slots, extra_args=extra) as cluster:
            cluster.start(timeout_s=60)
            print(f"cluster: 3 nodes, {a.slots} slots each; {a.queued} to queue, {a.concurrency} requests in flight")
            asyncio.run(bench(cluster, Path(tmp), a.queued, a.concurrency, a.short, a.drain))
        snapshot_in_process(a.queued, Path(tmp))
    print(f"the whole run took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
