"""Benchmark: executions submitted as arrays (newExecutions) and read in bulk (getExecutionResults) through a local
3-node cluster, against raw subprocess spawning of the same main.sh, in one run.

    python -m podnode.bench --array [--executions 10000] [--chunk 10000] [--runs 3] [--concurrency 16]

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
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..local.cluster import LocalCluster, get_json
from .loadclient import LoadClient
from .throughput import INSTALL, MAIN, _same_child_watcher, call, raw_spawn, run_pool

READ_WAIT_S = 5.0
READ_INTERVAL_S = 0.25   # at most one bulk read per this long: each gathers what ended meanwhile


async def post_json(url: str, token: str, body: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    """POST a JSON body to the action API (LoadClient sends GETs only); the answer, or RuntimeError."""
    status, answer = await asyncio.to_thread(get_json, f"{url}/POD/", timeout_s, token=token,
                                             data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"{body.get('action')}: HTTP {status} {answer}")
    return answer


async def install(client: LoadClient, urls: list[str], workdir: Path) -> None:
    script = workdir / "install.sh"
    script.write_text(INSTALL)
    await call(client, urls[0], action="newActivity", name="bench", installationScriptLocation=script.as_uri())
    while True:
        act = (await call(client, urls[1], action="getActivityStatus", name="bench"))["activity"]
        if act["status"] == "approved" and len(act["installations"]) == len(urls) and \
                all(i["status"] == "installed" for i in act["installations"]):
            return
        await asyncio.sleep(0.1)


async def array_run(urls: list[str], token: str, n: int, chunk: int, run: int) -> tuple[float, dict[str, float]]:
    """Submit n inputs in arrays, read every result in bulk and check it; (seconds, where the time went)."""
    inputs = [f"r{run}-{i}" for i in range(n)]
    start = time.perf_counter()
    expected: dict[int, str] = {}
    for k in range(0, n, chunk):
        part = inputs[k:k + chunk]
        body = await post_json(urls[0], token, {"action": "newExecutions", "name": "bench", "inputs": part,
                                                "requestId": f"bench-{run}-{k}"})
        expected.update(zip(body["executionIds"], part))
    submitted = time.perf_counter()
    pending = list(expected)
    reads = 0
    while pending:
        began = time.perf_counter()
        body = await post_json(urls[1], token, {"action": "getExecutionResults", "executionIds": pending[:10_000],
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
        if pending:
            await asyncio.sleep(max(0.0, READ_INTERVAL_S - (time.perf_counter() - began)))
    elapsed = time.perf_counter() - start
    return elapsed, {"submit_s": submitted - start, "reads": reads}


async def bench(urls: list[str], token: str, workdir: Path, *, n: int, chunk: int, runs: int,
                concurrency: int) -> None:
    main = workdir / "raw" / "main.sh"
    main.parent.mkdir()
    main.write_text(MAIN)
    main.chmod(0o755)
    _same_child_watcher()

    async def raw() -> float:
        elapsed, _ = await run_pool(n, concurrency, lambda i: raw_spawn(main, i))
        return n / elapsed

    async with LoadClient(timeout_s=60, token=token) as client:
        await install(client, urls, workdir)
    await array_run(urls, token, min(n, 200), chunk, -1)   # warm-up
    raw_rates = [await raw()]
    rates, ratios = [], []
    for run in range(runs):
        cpu = time.process_time()
        elapsed, where = await array_run(urls, token, n, chunk, run)
        client_cpu_s = time.process_time() - cpu
        raw_rates.append(await raw())
        rate, reference = n / elapsed, max(raw_rates[-2:])
        rates.append(rate)
        ratios.append(rate / reference)
        print(f"run {run + 1}: {n} executions in arrays of {chunk}: {rate:7.1f} executions/s "
              f"({elapsed:.1f} s; submitting took {where['submit_s']:.2f} s; {where['reads']} bulk reads; "
              f"the client used {client_cpu_s:.1f} s of CPU)   raw {reference:7.1f} spawns/s   "
              f"ratio {rate / reference:.2f}", flush=True)
    print(f"raw asyncio.create_subprocess_exec, concurrency {concurrency}: "
          f"{', '.join(f'{r:.0f}' for r in raw_rates)} spawns/s (before the first run and after each)")
    print(f"median of {runs}: {statistics.median(rates):.1f} executions/s, "
          f"ratio POD arrays / raw {statistics.median(ratios):.2f}   (goal >= 0.8)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench --array", description=__doc__.splitlines()[0])
    ap.add_argument("--executions", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=10_000, help="inputs per newExecutions request (at most 10000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent spawns of the raw reference")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--slots", type=int, default=None, help="slots per node (default: the CPU count)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pod-bench-array-") as tmp:
        with LocalCluster(Path(tmp) / "cluster", nodes=a.nodes, slots=a.slots) as cluster:
            cluster.start(timeout_s=60)
            print(f"cluster: {a.nodes} nodes, {cluster.status(cluster.nodes[0])['slots']['total']} slots each",
                  flush=True)
            asyncio.run(bench(cluster.urls, cluster.token, Path(tmp), n=a.executions, chunk=a.chunk, runs=a.runs,
                              concurrency=a.concurrency))


if __name__ == "__main__":
    main()
