"""Real failures on real node processes: SIGKILL, SIGSTOP and restarts, with the invariants checked.

Invariants: every execution the API accepted reaches exactly one terminal status that a client can read;
no execution runs on two nodes at once once the cluster has settled; nothing acknowledged goes missing.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
import uuid

import pytest

from podnode.local.cluster import LocalCluster

from ..conftest import Client, approved, install_script, start_cluster, wait_until

LOST_AFTER_S = 1.5
CHAOS_ARGS = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", str(LOST_AFTER_S)]
TERMINAL = {"finished", "error", "terminated"}


@pytest.fixture
def chaos_cluster(tmp_path):
    cluster = start_cluster(tmp_path, nodes=3, slots=2, extra_args=CHAOS_ARGS)
    yield cluster
    cluster.stop()


def live_client(cluster: LocalCluster, *, exclude=()) -> Client:
    return Client([n.url for n in cluster.nodes if n not in exclude], cluster.token)


def read_final(client: Client, exec_id: int, timeout_s: float = 60.0) -> dict:
    """Read an execution until it has ended (retrying through 503s); the read also consumes it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = client.call("getExecutionStatus", executionId=exec_id, wait=5)
        if code == 200 and body["execution"]["status"] in TERMINAL:
            return body["execution"]
        assert code in (200, 503), (exec_id, code, body)
        if code == 503:
            time.sleep(0.2)
    raise AssertionError(f"execution {exec_id} did not end within {timeout_s} s")


def submit(client: Client, name: str, input_: str, timeout_s: float = 30.0) -> int:
    """newExecution with a requestId, retried through 503s and timeouts as a careful client would."""
    request_id = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            code, body = client.call("newExecution", name=name, input=input_, requestId=request_id)
        except OSError:
            code, body = 0, {}
        if code == 200:
            return body["execution"]["id"]
        assert code in (0, 503), (code, body)
        time.sleep(0.2)
    raise AssertionError(f"newExecution {input_} not accepted within {timeout_s} s")


def status_of(client: Client, exec_id: int) -> str | None:
    """An execution's status without reading (and so consuming) it."""
    for e in client.ok("getAllExecutions")["executions"]:
        if e["id"] == exec_id:
            return e["status"]
    return None


def running_where(cluster: LocalCluster, nodes=None) -> dict[int, list[str]]:
    """Execution id -> the nodes whose /status says they run it now."""
    where: dict[int, list[str]] = {}
    for node in nodes or cluster.nodes:
        status = cluster.status(node)
        for run in (status or {}).get("executions", []):
            where.setdefault(run["id"], []).append(node.node_id)
    return where


def node_running_most(cluster: LocalCluster, client: Client, ids: list[int], *, not_leader: bool):
    leader = cluster.leader()
    counts = {}
    for exec_id in ids:
        code, body = client.call("getExecutionStatus", executionId=exec_id)
        if code == 200 and body["execution"]["status"] == "in progress":
            counts[body["execution"]["workerId"]] = counts.get(body["execution"]["workerId"], 0) + 1
    candidates = [n for n in cluster.nodes if counts.get(n.node_id) and not (not_leader and n is leader)]
    return max(candidates, key=lambda n: counts[n.node_id]) if candidates else None


def busiest_follower(cluster: LocalCluster, client: Client, ids: list[int]):
    """The follower running most of these executions, and the ids it runs."""
    victim = wait_until(lambda: node_running_most(cluster, client, ids, not_leader=True),
                        what="a follower running executions")
    on_victim = [i for i in ids if client.ok("getExecutionStatus", executionId=i)["execution"]["workerId"]
                 == victim.node_id]
    return victim, on_victim


def test_sigkill_a_worker_moves_its_executions(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "fast", scripts.add("fast.sh", install_script('sleep 0.5; echo "fast $1"')))
    early = [submit(client, "fast", str(i)) for i in range(6)]   # 6 slots: 2 per node; left unread
    wait_until(lambda: all(status_of(client, i) == "finished" for i in early), what="early ones finished")
    approved(client, "slowjob", scripts.add("slowjob.sh", install_script('sleep 2; echo "done $1"')))
    ids = [submit(client, "slowjob", str(i)) for i in range(6)]
    victim, on_victim = busiest_follower(chaos_cluster, client, ids)
    chaos_cluster.stop_node(victim, sig=signal.SIGKILL)
    survivors = live_client(chaos_cluster, exclude=[victim])
    # Finished output survives the node that produced it: it is in the replicated state.
    early_finals = [read_final(survivors, i) for i in early]
    assert [f["stdout"] for f in early_finals] == [f"fast {i}\n" for i in range(6)]
    assert victim.node_id in {f["workerId"] for f in early_finals}
    finals = {i: read_final(survivors, i) for i in ids}
    for i, exec_id in enumerate(ids):
        assert finals[exec_id]["status"] == "finished", finals[exec_id]
        assert finals[exec_id]["stdout"] == f"done {i}\n"
    for exec_id in on_victim:
        assert finals[exec_id]["attempts"] == 2 and finals[exec_id]["workerId"] != victim.node_id
        assert victim.node_id in finals[exec_id]["lastError"]
    workers = {w["id"]: w for w in survivors.ok("getWorkers")["workers"]}
    assert workers[victim.node_id]["status"] == "lost"


def test_max_attempts_ends_in_error_naming_the_lost_node(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "once", scripts.add("once.sh", install_script("sleep 30")), maxAttempts=1)
    ids = [submit(client, "once", str(i)) for i in range(6)]
    victim, on_victim = busiest_follower(chaos_cluster, client, ids)
    chaos_cluster.stop_node(victim, sig=signal.SIGKILL)
    survivors = live_client(chaos_cluster, exclude=[victim])
    for exec_id in on_victim:
        final = read_final(survivors, exec_id)
        assert final["status"] == "error" and final["attempts"] == 1
        assert "lost" in final["errorDescription"] and "gave up after 1 attempts" in final["errorDescription"]


def test_sigstop_past_lost_after_then_sigcont_runs_nothing_twice(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "marker", scripts.add("marker.sh", install_script(
        'echo "start $1 attempt $POD_ATTEMPT"; sleep 3; echo "end $1"')))
    ids = [submit(client, "marker", str(i)) for i in range(6)]
    victim, on_victim = busiest_follower(chaos_cluster, client, ids)
    chaos_cluster.signal_node(victim, signal.SIGSTOP)
    try:
        survivors = live_client(chaos_cluster, exclude=[victim])
        # Its work moves once it has been unreachable for LOST_AFTER_S.
        wait_until(lambda: all(survivors.ok("getExecutionStatus", executionId=i)["execution"]["workerId"]
                               not in (victim.node_id,) for i in on_victim), timeout_s=20, what="work moved")
    finally:
        chaos_cluster.signal_node(victim, signal.SIGCONT)
    # Back, it stops the stale processes and its late reports are ignored.
    wait_until(lambda: not (set(running_where(chaos_cluster, [victim])) & set(on_victim)), timeout_s=20,
               what="stale runs stopped on the unfrozen node")
    finals = {i: read_final(client, i) for i in ids}
    for i, exec_id in enumerate(ids):
        final = finals[exec_id]
        assert final["status"] == "finished", final
        assert final["stdout"].count("start") == 1 and final["stdout"].endswith(f"end {i}\n"), final
    for exec_id in on_victim:
        assert finals[exec_id]["attempts"] == 2 and finals[exec_id]["workerId"] != victim.node_id
        assert "attempt 2" in finals[exec_id]["stdout"]
    # The node comes back into service.
    wait_until(lambda: {w["id"]: w for w in client.ok("getWorkers")["workers"]}[victim.node_id]["status"] == "up",
               timeout_s=20, what="node re-registered")
    assert not any(len(nodes) > 1 for nodes in running_where(chaos_cluster).values())


def test_sigkill_the_leader_under_load_loses_nothing(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "quick", scripts.add("quick.sh", install_script('sleep 0.05; echo "q $1"')))
    accepted: dict[str, int] = {}
    errors: list = []
    leader = chaos_cluster.leader()
    survivors = [n for n in chaos_cluster.nodes if n is not leader]

    def load(worker: int) -> None:
        try:
            c = Client([n.url for n in survivors], chaos_cluster.token)   # the survivors' clients keep going
            for i in range(60):
                key = f"{worker}-{i}"
                accepted[key] = submit(c, "quick", key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= 40, what="load under way")
    term_before = chaos_cluster.status(leader)["term"]
    chaos_cluster.stop_node(leader, sig=signal.SIGKILL)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(accepted) == 240 and len(set(accepted.values())) == 240
    reader = Client([n.url for n in survivors], chaos_cluster.token)
    for key, exec_id in accepted.items():
        final = read_final(reader, exec_id)
        assert final["status"] == "finished" and final["stdout"] == f"q {key}\n", final
    # A new leader was elected in a later term, and every survivor follows it, none the killed node.
    views = wait_until(lambda: (v := [chaos_cluster.status(n) for n in survivors]) and all(v) and v,
                       what="survivors answer /status")
    assert {v["leader"] for v in views} <= {n.node_id for n in survivors}, views
    assert len({v["leader"] for v in views}) == 1, views
    assert all(v["term"] > term_before for v in views), (term_before, views)


def test_request_id_across_a_leader_kill_creates_one_execution(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "idem", scripts.add("idem2.sh", install_script('sleep 1; echo "once $1"')))
    leader = chaos_cluster.leader()
    survivors = live_client(chaos_cluster, exclude=[leader])
    first = survivors.ok("newExecution", name="idem", input="x", requestId="req-failover")["execution"]["id"]
    chaos_cluster.stop_node(leader, sig=signal.SIGKILL)
    again = wait_until(lambda: (r := survivors.call("newExecution", name="idem", input="x",
                                                     requestId="req-failover"))[0] == 200 and r[1],
                       timeout_s=30, what="retry accepted by the new leader")
    assert again["execution"]["id"] == first
    assert read_final(survivors, first)["stdout"] == "once x\n"
    ids = [e["id"] for e in survivors.ok("getAllExecutions")["executions"]]
    assert first not in ids   # consumed by the read, and no second execution was created
    assert not ids


def test_restart_one_node_then_the_whole_cluster(chaos_cluster, scripts):
    client = live_client(chaos_cluster)
    approved(client, "keep", scripts.add("keep.sh", install_script('echo "kept $1"')))
    done_id = submit(client, "keep", "before")
    wait_until(lambda: status_of(client, done_id) == "finished", what="finished, left unread")
    # One node: SIGKILL, lose its activity files, start again; it rejoins from its journal and reinstalls.
    node = chaos_cluster.nodes[1]
    chaos_cluster.stop_node(node, sig=signal.SIGKILL)
    shutil.rmtree(node.data_dir / "activities" / "keep")
    chaos_cluster.start_node(node)
    chaos_cluster.wait_ready(timeout_s=30)
    assert client.ok("getActivityStatus", 1, name="keep")["activity"]["status"] == "approved"
    wait_until(lambda: (node.data_dir / "activities" / "keep" / "main.sh").is_file(), what="reinstalled")
    wait_until(lambda: {i["workerId"]: i["status"] for i in client.ok("getActivityStatus", name="keep")
                        ["activity"]["installations"]}.get(node.node_id) == "installed", what="installed again")
    # The whole cluster, with work queued: every node killed at once, then started.
    approved(client, "block", scripts.add("block.sh", install_script("sleep 30")))
    blockers = [submit(client, "block", str(i)) for i in range(6)]   # fill the 6 slots
    queued = [submit(client, "keep", f"q{i}") for i in range(3)]

    def blockers_running():
        runs = [client.ok("getExecutionStatus", executionId=i)["execution"] for i in blockers]
        return all(r["status"] == "in progress" for r in runs) and {r["id"]: r["workerId"] for r in runs}
    ran_on = wait_until(blockers_running, what="every blocker running")
    for n in chaos_cluster.nodes:
        chaos_cluster.signal_node(n, signal.SIGKILL)
    for n in chaos_cluster.nodes:
        n.proc.wait(timeout=10)
        chaos_cluster.start_node(n)
    chaos_cluster.wait_ready(timeout_s=30)
    client = live_client(chaos_cluster)
    assert client.ok("getActivityStatus", name="keep")["activity"]["status"] == "approved"
    assert read_final(client, done_id)["stdout"] == "kept before\n"
    # The blockers' first attempts died with the cluster's previous run: reported lost and queued again.
    for exec_id in blockers:
        retried = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id)["execution"])
                             ["attempts"] == 2 and e, timeout_s=30, what=f"blocker {exec_id} retried")
        assert retried["status"] in ("waiting", "in progress"), retried
        assert ran_on[exec_id] in (retried.get("lastError") or ""), (ran_on[exec_id], retried)
        assert client.ok("terminateExecution", executionId=exec_id)["execution"]["status"] == "terminated"
    for i, exec_id in enumerate(queued):
        final = read_final(client, exec_id)
        assert final["status"] == "finished" and final["stdout"] == f"kept q{i}\n", final


def test_stopping_the_whole_cluster_retries_its_running_work(chaos_cluster, scripts):
    """A stop (SIGTERM to every node) is a restart, not a failure: running executions are retried afterwards,
    never ended as `error` with the exit code of the node's own SIGTERM."""
    client = live_client(chaos_cluster)
    # Stopped one after the other, a node may hand its run to a node that stops next: room for a few attempts.
    approved(client, "longrun", scripts.add("longrun.sh", install_script('echo "run $1"; sleep 30')), maxAttempts=5)
    ids = [submit(client, "longrun", str(i)) for i in range(4)]
    wait_until(lambda: all(client.ok("getExecutionStatus", executionId=i)["execution"]["status"] == "in progress"
                           for i in ids), what="all running")
    chaos_cluster.stop()
    for n in chaos_cluster.nodes:
        chaos_cluster.start_node(n)
    chaos_cluster.wait_ready(timeout_s=30)
    client = live_client(chaos_cluster)
    for exec_id in ids:
        retried = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id)["execution"])
                             ["status"] == "in progress" and e["attempts"] >= 2 and e["stdout"] == f"run {e['stdin']}\n"
                             and e, timeout_s=30, what=f"execution {exec_id} running again after the restart")
        # Why the earlier attempt ended: its node restarted (or was declared lost before it registered again).
        why = retried.get("lastError", "")
        assert retried["exitCode"] is None and ("restarted" in why or "was lost" in why), why
        assert client.ok("terminateExecution", executionId=exec_id)["execution"]["status"] == "terminated"
