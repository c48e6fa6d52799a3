"""Benchmark: executions submitted as arrays (newExecutions) and read in bulk (getExecutionResults) through a local
3-node cluster, against raw subprocess spawning of the same main.sh, in one run.

    python -m podnode.bench --array [--executions 10000] [--chunk 10000] [--window 0] [--runs 3] [--concurrency 16]

Each run submits N inputs in arrays of --chunk to one node and reads the results from another, by ids, as they
end (every output checked); its rate is N over the time from the first submit to the last result read. The raw
rate (asyncio.create_subprocess_exec, throughput.py's raw_spawn, at --concurrency) is measured before the first
run and after each; a run's ratio is against the faster of the two around it, so drift can only understate it.
Figures, not assertions: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..local.cluster import LocalCluster, get_json
from .loadclient import LoadClient
from .throughput import INSTALL, MAIN, _same_child_watcher, install_activity, raw_spawn, run_pool

READ_WAIT_S = 5.0
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
READ_INTERVAL_S = 0.25   # at most one bulk read per this long: each gathers what ended meanwhile


async def post_json(url: str, token: str, body: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    """POST a JSON body to the action API (LoadClient sends GETs only); the answer, or RuntimeError."""
    status, answer = await asyncio.to_thread(get_json, f"{url}/POD/", timeout_s, token=token,
                                             data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"{body.get('action')}: HTTP {status} {answer}")
    return answer


def cpu_s(pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the node processes, and of the children they reaped (the executions)."""
    own = children = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
        except OSError:
            continue
        own += (int(fields[11]) + int(fields[12])) * _TICK_S
        children += (int(fields[13]) + int(fields[14])) * _TICK_S
    return own, children


async def install(client: LoadClient, urls: list[str], workdir: Path) -> None:
    script = workdir / "install.sh"
    script.write_text(INSTALL)
    await install_activity(client, urls, "bench", script)


async def array_run(urls: list[str], token: str, n: int, chunk: int, run: int,
                    window: int = 0) -> tuple[float, dict[str, float]]:
    """Submit n inputs in arrays (the next one only while fewer than `window` are not read, if given), read
    every result in bulk and check it; (seconds, where the time went)."""
    inputs = [f"r{run}-{i}" for i in range(n)]
    start = time.perf_counter()
    expected: dict[int, str] = {}
    pending: list[int] = []
    reads, next_input, submitted = 0, 0, start
    while next_input < n or pending:
        while next_input < n and (not window or len(pending) + chunk <= window or not pending):
            part = inputs[next_input:next_input + chunk]
            body = await post_json(urls[0], token, {"action": "newExecutions", "name": "bench", "inputs": part,
                                                    "requestId": f"bench-{run}-{next_input}"})
            expected.update(zip(body["executionIds"], part))
            pending += body["executionIds"]
            next_input += len(part)
            submitted = time.perf_counter()
        began = time.perf_counter()
        body = await post_json(urls[-1], token, {"action": "getExecutionResults", "executionIds": pending[:10_000],
                                                "wait": READ_WAIT_S})
        reads += 1
        if body["notFound"]:
            raise RuntimeError(f"results lost: {body['notFound'][:10]}")
        done = set()
        for ex in body["executions"]:
            if ex["status"] != "finished" or ex["stdout"] != f"hello {expected[ex['id']]}\n":
                raise RuntimeError(f"wrong result {ex}")
            done.add(ex["id"])
        pending = [i for i in pending if i not in done]
        if pending and not (window and next_input < n and len(pending) + chunk <= window):
            await asyncio.sleep(max(0.0, READ_INTERVAL_S - (time.perf_counter() - began)))
    elapsed = time.perf_counter() - start
    return elapsed, {"submit_s": submitted - start, "reads": reads}  # submit_s: until the last array was taken


async def bench(urls: list[str], token: str, workdir: Path, *, n: int, chunk: int, runs: int,
                concurrency: int, pids: list[int], window: int = 0) -> None:
    main = workdir / "raw" / "main.sh"
    main.parent.mkdir()
    main.write_text(MAIN)
    main.chmod(0o755)
    _same_child_watcher()

    raw_cpu_ms: list[float] = []

    async def raw() -> float:
        before = os.times()
        elapsed, _ = await run_pool(n, concurrency, lambda i: raw_spawn(main, i))
        after = os.times()
        raw_cpu_ms.append((after.children_user + after.children_system - before.children_user
                           - before.children_system) / n * 1000)
        return n / elapsed

    async with LoadClient(timeout_s=60, token=token) as client:
        await install(client, urls, workdir)
    await array_run(urls, token, min(n, 200), chunk, -1)   # warm-up
    raw_rates = [await raw()]
    rates, ratios = [], []
    for run in range(runs):
        cpu, (nodes_before, runs_before) = time.process_time(), cpu_s(pids)
        elapsed, where = await array_run(urls, token, n, chunk, run, window)
        client_cpu_s = time.process_time() - cpu
        nodes_after, runs_after = cpu_s(pids)
        raw_rates.append(await raw())
        rate, reference = n / elapsed, max(raw_rates[-2:])
        rates.append(rate)
        ratios.append(rate / reference)
        print(f"run {run + 1}: {n} executions in arrays of {chunk}"
              f"{f' (at most {window} not read)' if window else ''}: {rate:7.1f} executions/s "
              f"({elapsed:.1f} s; the last array was taken after {where['submit_s']:.2f} s; "
              f"{where['reads']} bulk reads; "
              f"the client used {client_cpu_s:.1f} s of CPU)   raw {reference:7.1f} spawns/s   "
              f"ratio {rate / reference:.2f}", flush=True)
        print(f"  CPU per execution: nodes {(nodes_after - nodes_before) / n * 1000:.2f} ms, the executions "
              f"(sandbox and main.sh) {(runs_after - runs_before) / n * 1000:.2f} ms, this client "
              f"{client_cpu_s / n * 1000:.2f} ms", flush=True)
    print(f"raw asyncio.create_subprocess_exec, concurrency {concurrency}: "
          f"{', '.join(f'{r:.0f}' for r in raw_rates)} spawns/s (before the first run and after each); "
          f"main.sh alone used {statistics.median(raw_cpu_ms):.2f} ms of CPU per spawn")
    print(f"median of {runs}: {statistics.median(rates):.1f} executions/s, "
          f"ratio POD arrays / raw {statistics.median(ratios):.2f}   (goal >= 0.8)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench --array", description=__doc__.splitlines()[0])
    ap.add_argument("--executions", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=10_000, help="inputs per newExecutions request (at most 10000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=0,
                    help="submit the next array only while fewer than this many are not read (0: all at once)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent spawns of the raw reference")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--slots", type=int, default=None, help="slots per node (default: the CPU count)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pod-bench-array-") as tmp:
        with LocalCluster(Path(tmp) / "cluster", nodes=a.nodes, slots=a.slots) as cluster:
            cluster.start(timeout_s=60)
            print(f"cluster: {a.nodes} nodes, {cluster.status(cluster.nodes[0])['slots']['total']} slots each",
                  flush=True)
            pids = [node.proc.pid for node in cluster.nodes]
            asyncio.run(bench(cluster.urls, cluster.token, Path(tmp), n=a.executions, chunk=a.chunk, runs=a.runs,
                              concurrency=a.concurrency, pids=pids, window=a.window))


if __name__ == "__main__":
    main()
