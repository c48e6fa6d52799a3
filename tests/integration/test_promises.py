"""What the README promises and no other test checked: every /status field, the wait cap, drain at the
deadline, and file:// install scripts refused on a node reachable from the network."""

from __future__ import annotations

import secrets
import time

from podnode.local.cluster import LocalCluster, LocalNode

from ..conftest import FAST_RAFT, Client, approved, install_script, pid_alive, start_cluster, wait_until

# ---- GET /status: every field the README lists, with its type, on the leader and on a follower --------------
ROLES = {"leader", "follower", "candidate", "observer"}


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_status_fields(status: dict, node: LocalNode, cluster: LocalCluster) -> None:
    ids = {n.node_id for n in cluster.nodes}
    assert status["node"] == node.node_id
    assert status["role"] in ROLES
    assert status["leader"] in ids
    assert isinstance(status["term"], int) and status["term"] >= 1
    assert isinstance(status["commitIndex"], int) and status["commitIndex"] >= 1
    peers = status["peers"]
    assert isinstance(peers, list) and len(peers) == len(cluster.nodes) - 1
    assert {p["id"] for p in peers} == ids - {node.node_id}
    assert {p["address"] for p in peers} == {n.raft_addr for n in cluster.nodes if n is not node}
    assert all(p["connected"] is True for p in peers), peers
    assert status["slots"] == {"total": 2, "busy": len(status["executions"])}
    assert isinstance(status["executions"], list)
    assert isinstance(status["activities"], dict)
    assert _is_num(status["spendPerHour"]) and _is_num(status["spentSoFar"])
    assert isinstance(status["version"], str) and status["version"]
    assert status["pid"] == node.proc.pid
    assert _is_num(status["uptimeSeconds"]) and status["uptimeSeconds"] >= 0


def test_status_lists_every_field_on_leader_and_follower(cluster, client, scripts):
    approved(client, "statusrun", scripts.add("statusrun.sh", install_script("echo started; sleep 30")))
    exec_id = client.ok("newExecution", name="statusrun")["execution"]["id"]
    try:
        worker = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id)["execution"])
                            ["status"] == "in progress" and e["workerId"], what="running")
        leader = wait_until(cluster.leader, what="leader")
        follower = next(n for n in cluster.nodes if n is not leader)
        for node in (leader, follower):
            status = wait_until(lambda: (s := cluster.status(node)) and s["activities"].get("statusrun") == "installed"
                                and s, what=f"/status of {node.node_id} listing the activity installed")
            check_status_fields(status, node, cluster)
            assert status["leader"] == leader.node_id
            assert status["role"] == ("leader" if node is leader else "follower")
        # The execution is listed by the node that runs it, and only there.
        runner = next(n for n in cluster.nodes if n.node_id == worker)
        run = wait_until(lambda: next((r for r in cluster.status(runner)["executions"] if r["id"] == exec_id), None),
                         what=f"execution {exec_id} in {worker}'s /status")
        assert run["activity"] == "statusrun" and run["attempt"] == 1 and isinstance(run["pid"], int), run
        assert cluster.status(runner)["slots"]["busy"] >= 1
        others = {n.node_id: [r["id"] for r in cluster.status(n)["executions"]] for n in cluster.nodes
                  if n is not runner}
        assert not any(exec_id in ids for ids in others.values()), others
        # Only the leader shows its last plan (its scaling decision: the next test).
        lead = wait_until(lambda: (s := cluster.status(leader)) and s.get("lastPlan") and s, what="leader's plan")
        assert isinstance(lead["lastPlan"], dict) and _is_num(lead["lastPlan"]["at"]), lead["lastPlan"]
        assert isinstance(lead["lastPlan"]["commands"], list), lead["lastPlan"]
        follows = cluster.status(follower)
        assert "lastPlan" not in follows and "scaling" not in follows, follows
    finally:
        client.ok("terminateExecution", executionId=exec_id)


def test_leader_status_shows_its_scaling_decision_without_a_provider(cluster):
    leader = wait_until(cluster.leader, what="leader")
    lead = wait_until(lambda: (s := cluster.status(leader)) and s.get("lastPlan") and s, what="leader's plan")
    assert isinstance(lead.get("scaling"), dict), sorted(lead)
    assert isinstance(lead["scaling"].get("reason"), str) and lead["scaling"]["reason"], lead["scaling"]


# ---- getExecutionStatus wait=S: capped, and answers as soon as the execution ends --------------------------
def test_long_wait_is_accepted_and_answers_when_the_execution_ends(client, scripts):
    approved(client, "twosec", scripts.add("twosec.sh", install_script('sleep 2; echo "slept $1"')))
    exec_id = client.ok("newExecution", name="twosec", input="x")["execution"]["id"]
    started = time.monotonic()
    done = client.ok("getExecutionStatus", executionId=exec_id, wait=3600)["execution"]
    took = time.monotonic() - started
    assert done["status"] == "finished" and done["stdout"] == "slept x\n", done
    assert took < 15, f"wait=3600 answered after {took:.1f} s, not when the execution ended (about 2 s)"


# ---- drainWorker at its deadline: the work runs again elsewhere and the node leaves ----------------------------
def test_drain_at_the_deadline_requeues_the_work_elsewhere(tmp_path, scripts, shared_dir):
    deadline_s = 4.0
    pids = shared_dir   # main.sh runs as the run-as user: it cannot write into tmp_path
    cluster = start_cluster(tmp_path / "cluster", nodes=3, slots=1)
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "drainee", scripts.add("drainee.sh", install_script(
            f'echo $$ > {pids}/"$POD_EXECUTION_ID-$POD_ATTEMPT"\n'
            'if [ "$POD_ATTEMPT" = 1 ]; then exec sleep 60; fi\necho "ran again, attempt $POD_ATTEMPT"')))
        ids = [client.ok("newExecution", name="drainee", input=str(i))["execution"]["id"] for i in range(2)]

        def placed():
            runs = [client.ok("getExecutionStatus", executionId=i)["execution"] for i in ids]
            return all(r["status"] == "in progress" and (pids / f"{r['id']}-1").exists() for r in runs) and runs
        runs = wait_until(placed, what="both running")
        leader = wait_until(cluster.leader, what="leader")
        moving = next(r for r in runs if r["workerId"] != leader.node_id)  # 2 of 3 one-slot nodes: one follower
        staying = next(r for r in runs if r is not moving)
        victim = next(n for n in cluster.nodes if n.node_id == moving["workerId"])
        first_pid = int((pids / f"{moving['id']}-1").read_text())

        rest = client_of_rest(cluster, victim)   # the drained node goes away: ask the others
        asked = time.monotonic()
        body = rest.ok("drainWorker", workerId=victim.node_id, deadline=deadline_s)
        assert body == {"worker": {"id": victim.node_id, "status": "draining"}, "status": "draining"}
        # Before the deadline the node is draining and keeps its running work.
        assert {w["id"]: w["status"] for w in rest.ok("getWorkers")["workers"]}[victim.node_id] == "draining"
        now = rest.ok("getExecutionStatus", executionId=moving["id"])["execution"]
        assert (now["status"], now["workerId"], now["attempts"]) == ("in progress", victim.node_id, 1), now
        # At the deadline it is queued again and runs on the free node.
        moved_after_s: list[float] = []

        def second_attempt_ended():
            e = rest.ok("getExecutionStatus", executionId=moving["id"])["execution"]   # an ended one is consumed
            if e["attempts"] >= 2 and not moved_after_s:
                moved_after_s.append(time.monotonic() - asked)
            return e["status"] not in ("waiting", "in progress") and e
        final = wait_until(second_attempt_ended, timeout_s=40, what="requeued at the deadline and run again")
        assert moved_after_s and moved_after_s[0] >= deadline_s - 0.5, \
            f"work moved after {moved_after_s} s, before the {deadline_s} s deadline"
        assert final["status"] == "finished" and final["stdout"] == "ran again, attempt 2\n", final
        assert final["attempts"] == 2 and final["workerId"] not in (victim.node_id, None), final
        assert final["workerId"] != staying["workerId"], final   # that node's one slot is still taken
        assert victim.node_id in final.get("lastError", ""), final
        # The node has left the cluster, its process stopped by itself and the first attempt with it.
        wait_until(lambda: {w["id"]: w["status"] for w in rest.ok("getWorkers")["workers"]}[victim.node_id] == "left",
                   what="drained node left")
        assert victim.proc.wait(timeout=30) == 0   # it stopped by itself, cleanly
        wait_until(lambda: not pid_alive(first_pid), timeout_s=15, what="the first attempt's process gone")
        rest.ok("terminateExecution", executionId=staying["id"])
    finally:
        cluster.stop()


def client_of_rest(cluster: LocalCluster, gone: LocalNode) -> Client:
    return Client([n.url for n in cluster.nodes if n is not gone], cluster.token)


# ---- file:// install scripts: refused on a node whose HTTP is not loopback -------------------------------------
class OpenHttpCluster(LocalCluster):
    """One node whose HTTP API listens on every address (0.0.0.0); the test still talks to it over loopback."""

    def command(self, node: LocalNode) -> list[str]:
        cmd = super().command(node)
        cmd[cmd.index("--http") + 1] = f"0.0.0.0:{node.http_port}"
        return cmd


def test_file_urls_refused_on_a_node_reachable_from_the_network(tmp_path):
    script = tmp_path / "local.sh"
    script.write_text(install_script("echo local"))
    url = script.as_uri()
    base = FAST_RAFT + ["--no-announce"]
    cluster = OpenHttpCluster(tmp_path / "open", nodes=1, slots=1, extra_args=base, secret=secrets.token_hex(16))
    try:
        cluster.start(timeout_s=30)
        client = Client(cluster.urls, cluster.token)
        code, body = client.call("newActivity", name="local", installationScriptLocation=url)
        assert code == 400, (code, body)
        assert "file:// install script URLs are not allowed on this node" in body["error"], body
        assert client.call("getActivityStatus", name="local")[0] == 404
        # --allow-file-urls is how an operator accepts them there.
        node = cluster.nodes[0]
        cluster.stop_node(node)
        node.extra_args = base + ["--slots", "1", "--allow-file-urls"]
        cluster.start_node(node)
        cluster.wait_ready(timeout_s=30)
        created = approved(client, "local", url)
        assert created["id"] == 1, created   # the refused request created no activity before it
    finally:
        cluster.stop()
