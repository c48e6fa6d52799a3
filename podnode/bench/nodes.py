"""Benchmark: a cluster of many nodes on this machine: what the leader spends, what a node weighs, how fast one joins.

    python -m podnode.bench.nodes [--nodes 20] [--executions 600] [--concurrency 16] [--slots 1] [--array]

In one run:
  - throughput of a trivial execution against a 3-node cluster (the reference), then against N nodes
    (3 seeds, the rest joined: up to --max-voters of them vote, the others are observers);
  - the leader's CPU per execution: utime+stime of the leader's process (/proc/PID/stat, all its threads,
    not its executions' processes) over a measured batch, divided by the executions; and the executions/s
    that implies for one leader core. The load goes to the other nodes only, so the figure is the cost of
    leading (planning, committing, replicating to every node, hearing observers), not of serving the client;
  - the leader's CPU while the cluster is idle (Raft heartbeats to every node, observers' /internal/alive);
  - resident memory (VmRSS) per node;
  - the time for a new node to join and take work: from the start of its process to its first finished
    execution (its HTTP API answering, registered, the activity installed on it, one execution run there).

With --array, each batch is submitted as arrays (newExecutions, one per node but the leader) and read in bulk
(getExecutionResults, the next ended ones of the activity): the leader's cost per execution without a request and
a Raft entry of its own for each submission.

With --profile FILE, py-spy (if installed) samples the leader during the measured batch and writes its
stacks to FILE (speedscope JSON; --profile-format raw for collapsed stacks). Figures, not assertions: the
machine is shared, so the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..local.cluster import LocalCluster, LocalNode
from .array import post_json
from .loadclient import LoadClient
from .throughput import TERMINAL, call, submit_and_read, submit_and_wait

MAIN = '#!/usr/bin/env bash\necho "hello $1"\n'
INSTALL = "#!/usr/bin/env bash\ncat > main.sh <<'EOF'\n" + MAIN + "EOF\nchmod +x main.sh\n"
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
GOAL_LEADER_MS = 0.25


# ---- measuring processes ------------------------------------------------------------------------------------
def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process so far, all its threads (not its children's); or of one thread."""
    stat = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S    # utime, stime: fields 14 and 15 of stat


def system_cpu_s(pid: int) -> float:
    """The system (kernel) part of cpu_s: sockets, polling, forks."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[12]) * CLOCK_TICK_S


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of the process's main thread: a node's asyncio loop (HTTP, manager, agent). The rest is
    pysyncobj's Raft thread (and short-lived helper threads)."""
    try:
        return cpu_s(pid, pid)
    except FileNotFoundError:
        return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- the action API ---------------------------------------------------------------------------------------
WAY: dict = {"way": submit_and_wait, "array": False, "token": None}   # --read: submit_and_read; --array: arrays


async def one_execution(client: LoadClient, urls: list[str], i: int) -> str:
    """One request through one node (newExecution&wait), or with --read submit through one node and read the result
    through the next; the node it ran on."""
    return (await WAY["way"](client, urls, i))["workerId"]


async def run_pool(n: int, concurrency: int, urls: list[str], client: LoadClient,
                   first: int = 0) -> tuple[float, list[str]]:
    """n executions, `concurrency` at a time; the seconds they took and the nodes they ran on."""
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> str:
        async with sem:
            return await one_execution(client, urls, i)
    if WAY["array"]:
        return await run_arrays(n, urls, WAY["token"], first)
    start = time.perf_counter()
    workers = await asyncio.gather(*(guarded(first + i) for i in range(n)))
    return time.perf_counter() - start, list(workers)


async def run_arrays(n: int, urls: list[str], token: str | None, first: int = 0) -> tuple[float, list[str]]:
    """--array: n inputs submitted as one array through each node in turn (n split among them), their results read
    in bulk (the next ended ones of the activity, through each node in turn) until all n are back and checked; the
    seconds it took and the nodes they ran on."""
    start = time.perf_counter()
    parts = [list(range(first + k, first + n, len(urls))) for k in range(len(urls))]
    expected: dict[int, str] = {}
    for url, part in zip(urls, parts):
        if part:
            inputs = [f"a{i}" for i in part]
            body = await post_json(url, token or "", {"action": "newExecutions", "name": "bench", "inputs": inputs})
            expected.update(zip(body["executionIds"], inputs))
    workers: list[str] = []
    reads = 0
    while len(workers) < n:
        body = await post_json(urls[reads % len(urls)], token or "",
                               {"action": "getExecutionResults", "activity": "bench", "limit": 5000, "wait": 1})
        reads += 1
        for e in body["executions"]:
            if e["stdout"] != f"hello {expected.pop(e['id'])}\n":
                raise RuntimeError(f"wrong output {e}")
            workers.append(e["workerId"])
    return time.perf_counter() - start, workers


async def install_everywhere(client: LoadClient, urls: list[str], script: Path, nodes: int) -> None:
    await call(client, urls[0], action="newActivity", name="bench", installationScriptLocation=script.as_uri())
    while True:
        act = (await call(client, urls[-1], action="getActivityStatus", name="bench"))["activity"]
        done = [i for i in act["installations"] if i["status"] == "installed"]
        if act["status"] == "approved" and len(done) >= nodes:
            return
        await asyncio.sleep(0.2)


# ---- the cluster --------------------------------------------------------------------------------------------
def node_args(slots: int, max_voters: int) -> list[str]:
    return ["--slots", str(slots), "--max-voters", str(max_voters), "--no-announce"]


def registered(cluster: LocalCluster, via: LocalNode) -> dict[str, str]:
    from ..local.cluster import get_json
    try:
        code, body = get_json(f"{via.url}/POD/?action=getWorkers", timeout_s=10, token=cluster.token)
    except OSError:
        return {}
    return {w["id"]: w["status"] for w in body.get("workers", [])} if code == 200 else {}


def exited(cluster: LocalCluster, node: LocalNode, lines: int = 15) -> str:
    """A node that exited: its exit code and the end of its log (the log is in a directory removed at the end)."""
    log = cluster.log_dir / (node.node_id + ".log")
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
    return f"{node.node_id} exited with code {node.proc.returncode if node.proc else '?'}; its log ends:\n" + \
        "\n".join("  " + line for line in tail)


def wait_up(cluster: LocalCluster, nodes: list[LocalNode], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(exited(cluster, node))
        leader = cluster.leader()
        if leader is not None and all(registered(cluster, leader).get(n.node_id) == "up" for n in nodes):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{[n.node_id for n in nodes]} not all up within {timeout_s} s")


def grow(cluster: LocalCluster, total: int, max_voters: int) -> None:
    """Join nodes until there are `total`: those that will vote one at a time (a join decides its role), then
    the observers all at once."""
    while len(cluster.nodes) < min(total, max_voters):
        node = cluster.add_node(join=cluster.nodes[0].url)
        wait_up(cluster, [node])
    joined = [cluster.add_node(join=cluster.nodes[0].url) for _ in range(total - len(cluster.nodes))]
    if joined:
        wait_up(cluster, joined)


def roles(cluster: LocalCluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        role = (cluster.status(node) or {}).get("role", "?")
        counts[role] = counts.get(role, 0) + 1
    return counts


def pids(cluster: LocalCluster) -> dict[str, int]:
    return {n.node_id: (cluster.status(n) or {}).get("pid") or n.proc.pid for n in cluster.nodes}


# ---- the measurements ---------------------------------------------------------------------------------------
def profiler(pid: int, out: str | None, fmt: str, gil: bool = False) -> subprocess.Popen | None:
    if not out:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("  (--profile: py-spy is not installed; pip install py-spy)")
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--output", out, "--format", fmt, "--rate", "200",
                             "--nonblocking", "--threads", *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


SYSCALLS = ("sendto", "recvfrom", "poll", "epoll_wait", "write", "read")


def syscall_counter(pid: int, on: bool) -> subprocess.Popen | None:
    """perf counting the leader's system calls of each kind, when asked and perf can."""
    perf = shutil.which("perf")
    if not on or perf is None:
        if on:
            print("  (--syscalls: perf is not installed)")
        return None
    events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS) + ",raw_syscalls:sys_enter"
    return subprocess.Popen([perf, "stat", "-x", ",", "-e", events, "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def syscall_counts(perf: subprocess.Popen | None) -> dict[str, int]:
    if perf is None:
        return {}
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=30)
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].isdigit():
            counts[parts[2].rpartition(":")[2].replace("sys_enter_", "").replace("sys_enter", "all")] = int(parts[0])
    return counts


async def measure(cluster: LocalCluster, workdir: Path, *, executions: int, concurrency: int, label: str,
                  profile: str | None = None, profile_format: str = "speedscope", profile_gil: bool = False,
                  syscalls: bool = False) -> dict[str, float]:
    """Install the activity, warm up, then a measured batch through every node but the leader."""
    leader = cluster.leader()
    assert leader is not None
    leader_pid = pids(cluster)[leader.node_id]
    others = [n.url for n in cluster.nodes if n is not leader]
    WAY["token"] = cluster.token
    script = workdir / f"install-{label}.sh"
    script.write_text(INSTALL)
    async with LoadClient(timeout_s=120, token=cluster.token) as client:
        await install_everywhere(client, cluster.urls, script, len(cluster.nodes))
        await run_pool(min(100, executions), concurrency, others, client, first=-1000)   # warm-up
        idle_s = 3.0
        node_pids = [p for n, p in pids(cluster).items() if n != leader.node_id]
        before, others_before = cpu_s(leader_pid), sum(cpu_s(p) for p in node_pids)
        await asyncio.sleep(idle_s)
        idle_cpu = (cpu_s(leader_pid) - before) / idle_s
        others_idle = (sum(cpu_s(p) for p in node_pids) - others_before) / idle_s / len(node_pids)
        spy = profiler(leader_pid, profile, profile_format, profile_gil)
        perf = syscall_counter(leader_pid, syscalls)
        index_before = (cluster.status(leader) or {}).get("commitIndex") or 0
        client_before, before, main_before = time.process_time(), cpu_s(leader_pid), main_thread_cpu_s(leader_pid)
        system_before = system_cpu_s(leader_pid)
        elapsed, workers = await run_pool(executions, concurrency, others, client)
        leader_cpu, client_cpu = cpu_s(leader_pid) - before, time.process_time() - client_before
        main_cpu = main_thread_cpu_s(leader_pid) - main_before
        system_cpu = system_cpu_s(leader_pid) - system_before
        counts = syscall_counts(perf)
        entries = ((cluster.status(leader) or {}).get("commitIndex") or 0) - index_before
    if spy is not None:
        spy.send_signal(signal.SIGINT)     # py-spy writes its output when interrupted
        spy.wait(timeout=60)
    return {"rate": executions / elapsed, "leader_ms": leader_cpu / executions * 1000,
            "leader_busy_ms": (leader_cpu - idle_cpu * elapsed) / executions * 1000,
            "main_ms": main_cpu / executions * 1000, "idle_pct": idle_cpu * 100,
            "system_ms": system_cpu / executions * 1000, "others_idle_pct": others_idle * 100,
            "client_ms": client_cpu / executions * 1000, "elapsed": elapsed, "entries": entries / executions,
            "on_leader": sum(1 for w in workers if w == leader.node_id) / executions * 100,
            "peers": len(cluster.nodes) - 1, **{f"sys_{k}": v / executions for k, v in counts.items()}}


def report(label: str, m: dict[str, float], executions: int, concurrency: int) -> None:
    per_core = 1000 / m["leader_ms"] if m["leader_ms"] > 0 else float("inf")
    how = "in arrays, read in bulk" if WAY["array"] else f"concurrency {concurrency}"
    print(f"{label}: {executions} executions, {how}: {m['rate']:7.1f} executions/s"
          f"   (load average {load_average()})")
    print(f"  leader CPU per execution: {m['leader_ms']:.3f} ms  -> {per_core:,.0f} executions/s per leader core"
          f"   (goal < {GOAL_LEADER_MS} ms)")
    print(f"    its asyncio thread (HTTP, manager, agent) {m['main_ms']:.3f} ms, its Raft thread and others"
          f" {m['leader_ms'] - m['main_ms']:.3f} ms; above its idle cost {m['leader_busy_ms']:.3f} ms")
    print(f"    in the kernel (sockets, polling, forks) {m['system_ms']:.3f} ms")
    print(f"    idle: the leader {m['idle_pct']:.1f} % of a core, another node {m['others_idle_pct']:.1f} %")
    print(f"    {m['entries']:.2f} Raft log entries per execution, each sent to {m['peers']} other nodes;"
          f"  {m['on_leader']:.0f} % of the executions ran on the leader")
    if "sys_all" in m:
        print("    leader system calls per execution: " + ", ".join(
            f"{k[4:]} {v:.1f}" for k, v in m.items() if k.startswith("sys_")))
    print(f"  (the load generator used {m['client_ms']:.2f} ms of CPU per execution on the same cores)")


def join_and_take_work(cluster: LocalCluster, timeout_s: float = 120.0) -> dict[str, float]:
    """Start one more node; seconds from its process start to: its API answering, registered up, the
    activity installed on it, its first execution finished (submitted through it: a node places new work
    on itself when it can)."""
    from ..local.cluster import get_json
    leader = cluster.leader()
    assert leader is not None
    start = time.monotonic()
    node = cluster.add_node(join=leader.url)
    marks: dict[str, float] = {}
    deadline = start + timeout_s
    i = 0
    while time.monotonic() < deadline and "first execution" not in marks:
        if node.proc is not None and node.proc.poll() is not None:
            raise RuntimeError(exited(cluster, node))
        try:
            code, body = get_json(f"{node.url}/health", timeout_s=5)
        except OSError:
            time.sleep(0.02)
            continue
        marks.setdefault("HTTP answering", time.monotonic() - start)
        if "registered up" not in marks and registered(cluster, leader).get(node.node_id) == "up":
            marks["registered up"] = time.monotonic() - start
        i += 1
        try:
            code, body = get_json(f"{node.url}/POD/?action=newExecution&name=bench&input=j{i}", timeout_s=10,
                                  token=cluster.token)
        except OSError:
            code = 0
        if code != 200:
            time.sleep(0.05)
            continue
        exec_id = body["execution"]["id"]
        while time.monotonic() < deadline:
            code, body = get_json(f"{node.url}/POD/?action=getExecutionStatus&executionId={exec_id}&wait=10",
                                  timeout_s=15, token=cluster.token)
            if code == 200 and body["execution"]["status"] in TERMINAL:
                break
            time.sleep(0.02)
        if body.get("execution", {}).get("workerId") == node.node_id:
            marks["first execution"] = time.monotonic() - start
        else:
            time.sleep(0.05)
    if "first execution" not in marks:
        raise TimeoutError(f"{node.node_id} took no work within {timeout_s} s")
    return marks


def run(a: argparse.Namespace, tmp: Path) -> None:
    WAY["way"] = submit_and_read if a.read else submit_and_wait
    WAY["array"] = a.array
    how = ("submitted in arrays, one per node but the leader, read in bulk (the next ended ones of the activity)"
           if a.array else "submitted, then read through another node" if a.read else "one request, newExecution&wait")
    print(f"machine: {os.cpu_count()} cores, load average {load_average()}; each execution: {how}")
    args = node_args(a.slots, a.max_voters)
    with LocalCluster(tmp / "three", nodes=3, extra_args=args) as three:
        three.start(timeout_s=120)
        small = asyncio.run(measure(three, tmp, executions=a.executions, concurrency=a.concurrency, label="three",
                                    syscalls=a.syscalls))
    report(f"3 nodes x {a.slots} slots", small, a.executions, a.concurrency)

    with LocalCluster(tmp / "many", nodes=3, extra_args=args) as cluster:
        started = time.monotonic()
        cluster.start(timeout_s=120)
        grow(cluster, a.nodes, a.max_voters)
        print(f"{a.nodes} nodes up in {time.monotonic() - started:.1f} s: {roles(cluster)}")
        big = asyncio.run(measure(cluster, tmp, executions=a.executions, concurrency=a.concurrency, label="many",
                                  profile=a.profile, profile_format=a.profile_format, syscalls=a.syscalls,
                                  profile_gil=a.profile_gil))
        report(f"{a.nodes} nodes x {a.slots} slots", big, a.executions, a.concurrency)
        if a.profile:
            print(f"  py-spy profile of the leader during the batch: {a.profile}")
        leader = cluster.leader()
        rss = {n: rss_mb(p) for n, p in pids(cluster).items()}
        print(f"resident memory per node (VmRSS): median {statistics.median(rss.values()):.0f} MB,"
              f" min {min(rss.values()):.0f} MB, max {max(rss.values()):.0f} MB,"
              f" leader {rss.get(leader.node_id if leader else '', 0):.0f} MB")
        joins = [join_and_take_work(cluster) for _ in range(a.joins)]
        for k, marks in enumerate(joins):
            print(f"node {a.nodes + k + 1} joining: " + ", ".join(f"{what} {s:.2f} s" for what, s in marks.items())
                  + "   (from the start of its process)")
    print(f"load average at the end: {load_average()}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.nodes", description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20, help="nodes in the large cluster (3 seeds, the rest join)")
    ap.add_argument("--executions", type=int, default=600, help="executions in each measured batch")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--slots", type=int, default=1, help="slots per node (small: every node shares 2 cores)")
    ap.add_argument("--max-voters", type=int, default=5)
    ap.add_argument("--read", action="store_true",
                    help="submit, then read through another node (2 requests), instead of newExecution&wait")
    ap.add_argument("--array", action="store_true",
                    help="submit each batch as arrays (newExecutions), read the results in bulk (getExecutionResults)")
    ap.add_argument("--joins", type=int, default=1, help="nodes joined one after another at the end, each timed")
    ap.add_argument("--profile", default=None, help="py-spy the leader during the large cluster's batch into FILE")
    ap.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    ap.add_argument("--syscalls", action="store_true", help="count the leader's system calls with perf (if installed)")
    ap.add_argument("--profile-format", default="speedscope", choices=("speedscope", "raw", "flamegraph"))
    a = ap.parse_args(argv)
    if a.nodes < 3:
        ap.error("--nodes must be at least 3")
    with tempfile.TemporaryDirectory(prefix="pod-nodes-") as tmp:
        run(a, Path(tmp))


if __name__ == "__main__":
    main()
