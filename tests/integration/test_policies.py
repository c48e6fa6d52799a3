"""Scaling policies through the original POD's actions, workers and their cost, and draining a worker."""

from __future__ import annotations

from ..conftest import Client, approved, install_script, start_cluster, wait_until


def test_policy_actions_and_bad_rules(cluster):
    client = Client(cluster.urls, cluster.token)
    assert client.ok("getActivePolicy") == {"policy": None}
    p1 = client.ok("newPolicy", name="p1", rules="minWorkers=1, maxWorkers=4,maxWait=2000,terminationTime=10000")
    assert p1["policy"]["rules"] == "minWorkers=1,maxWorkers=4,maxWait=2000,terminationTime=10000"
    assert p1["policy"]["values"]["maxWait"] == 2000 and p1["policy"]["active"] is False
    before = client.ok("getPolicies")
    bad = [
        ({"name": "b1", "rules": "minWorkers=1,bogus=3"}, 400, "unknown"),
        ({"name": "b2", "rules": "maxWait=-5"}, 400, "maxWait"),
        ({"name": "b3", "rules": "minWorkers=5,maxWorkers=2"}, 400, "minWorkers"),
        ({"name": "b4", "rules": "fixedWorkers=3,minWorkers=1"}, 400, "fixedWorkers"),
        ({"name": "b5", "rules": "maxWorkers"}, 400, "="),
        ({"name": "b6"}, 400, "rules"),
        ({"name": "../x", "rules": "minWorkers=1"}, 400, "name"),
        ({"name": "p1", "rules": "minWorkers=2"}, 409, "already exists"),
    ]
    for params, code, text in bad:
        got, body = client.call("newPolicy", **params)
        assert got == code and text in body["error"], (params, got, body)
    assert client.ok("getPolicies") == before
    assert client.call("applyPolicy", name="nope")[0] == 404
    applied = client.ok("applyPolicy", name="p1")
    assert applied["status"] == "applied" and applied["policy"]["active"] is True
    assert client.ok("getActivePolicy", 2)["policy"]["name"] == "p1"
    code, body = client.call("deletePolicy", name="p1")
    assert code == 409 and "active" in body["error"]
    client.ok("newPolicy", name="p2", rules="fixedWorkers=3,cooldown=60000")
    client.ok("applyPolicy", name="p2")
    assert client.ok("deletePolicy", name="p1")["status"] == "deleted"
    assert [p["name"] for p in client.ok("getPolicies")["policies"]] == ["p2"]
    assert client.ok("resetPolicies")["removed"] == ["p2"]
    assert client.ok("getActivePolicy") == {"policy": None} and client.ok("getPolicies") == {"policies": []}


def test_workers_report_state_load_and_spend(cluster):
    body = Client(cluster.urls, cluster.token).ok("getWorkers")
    assert body["spendPerHour"] == 0 and body["spentSoFar"] == 0 and body["launching"] == []
    assert {w["id"] for w in body["workers"]} == {"n1", "n2", "n3"}
    for w in body["workers"]:
        assert w["status"] == "up" and w["provider"] == "static" and w["hourlyPrice"] == 0
        assert 0 <= w["load"] <= 1 and w["slots"] == 2


def test_a_drained_worker_finishes_its_work_leaves_raft_and_stops(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=4, slots=1)
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "drainjob", scripts.add("drainjob.sh", install_script('sleep 1.5; echo "d $1"')))
        leader = wait_until(cluster.leader, what="leader")
        victim = next(n for n in cluster.nodes if n is not leader)
        ids = [client.ok("newExecution", name="drainjob", input=str(i))["execution"]["id"] for i in range(4)]
        wait_until(lambda: all(e["status"] == "in progress" for e in client.ok("getAllExecutions")["executions"]),
                   what="all four running")
        assert client.call("drainWorker", workerId="nobody")[0] == 404
        drained = client.ok("drainWorker", workerId=victim.node_id, deadline=60)
        assert drained == {"worker": {"id": victim.node_id, "status": "draining"}, "status": "draining"}
        code, body = client.call("drainWorker", workerId=victim.node_id)
        assert code == 409 and "draining" in body["error"]
        others = [n for n in cluster.nodes if n is not victim]
        client = Client([n.url for n in others], cluster.token)   # the drained node will stop answering
        # Its running execution finishes there; then it leaves Raft and stops by itself.
        for i, exec_id in enumerate(ids):
            final = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id, wait=5)
                                        ["execution"])["status"] == "finished" and e, what="finished")
            assert final["stdout"] == f"d {i}\n" and final["attempts"] == 1
        wait_until(lambda: victim.proc.poll() is not None, timeout_s=30, what="drained node exited")
        wait_until(lambda: all(victim.raft_addr not in {p["address"] for p in cluster.status(n)["peers"]}
                               for n in others), timeout_s=30, what="out of Raft")
        assert {w["id"]: w["status"] for w in client.ok("getWorkers")["workers"]}[victim.node_id] == "left"
        # The three that remain still commit and run work.
        exec_id = client.ok("newExecution", name="drainjob", input="after")["execution"]["id"]
        final = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id, wait=5)
                                    ["execution"])["status"] == "finished" and e, what="finished after")
        assert final["stdout"] == "d after\n" and final["workerId"] != victim.node_id
    finally:
        cluster.stop()
