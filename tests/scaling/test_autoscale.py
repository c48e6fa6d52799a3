"""The policy grows the cluster under a queue and shrinks it when idle, through real providers."""

from __future__ import annotations

import json
import time

from ..conftest import Client, approved, install_script, pid_alive, start_cluster, wait_until

FAST = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", "1.5",
        "--scaling-interval-s", "0.5"]
GROW = "minWorkers=1,maxWorkers=5,maxWait=1000,terminationTime=1500,cooldown=500"




def workers(client: Client) -> dict[str, dict]:
    return {w["id"]: w for w in client.ok("getWorkers", 0)["workers"]}


def grow_and_shrink(cluster, client: Client, scripts, provider: str) -> None:
    approved(Client(cluster.urls, cluster.token), "slow", scripts.add(f"slow-{provider}.sh",
                                                       install_script('sleep 3; echo "slow $1"')))
    client.ok("newPolicy", name="grow", rules=GROW)
    client.ok("applyPolicy", name="grow")
    ids = [client.ok("newExecution", name="slow", input=str(i))["execution"]["id"] for i in range(8)]
    # A queue of 5 on 3 busy slots: the leader launches nodes, they join and take work.
    wait_until(lambda: sum(w["provider"] == provider and w["status"] == "up" for w in workers(client).values())
               >= 1, timeout_s=60, what=f"a {provider} node launched and up")
    status = cluster.status(cluster.leader())
    assert "scaling" in status and status["scaling"]["reason"], status
    ran_on = set()
    for i, exec_id in enumerate(ids):
        final = wait_until(lambda: (e := client.ok("getExecutionStatus", 0, executionId=exec_id, wait=5)
                                    ["execution"])["status"] == "finished" and e, timeout_s=90, what="finished")
        assert final["stdout"] == f"slow {i}\n"
        ran_on.add(final["workerId"])
    launched = {n for n, w in workers(client).items() if w["provider"] == provider}
    assert launched & ran_on, (launched, ran_on)
    assert len(workers(client)) <= 5   # maxWorkers
    # Idle: the launched nodes are drained, leave and are destroyed; the seed nodes stay.
    wait_until(lambda: all(workers(client)[n]["status"] == "left" for n in launched), timeout_s=90,
               what="launched nodes scaled in")
    assert all(w["status"] == "up" for n, w in workers(client).items() if n not in launched)
    body = client.ok("getWorkers", 0)
    assert body["launching"] == []
    return launched, body


def test_local_provider_grows_and_shrinks(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=3, slots=1, extra_args=FAST + ["--provider", "local"])
    try:
        client = Client(cluster.urls[:1], cluster.token)
        launched, _ = grow_and_shrink(cluster, client, scripts, "local")
        pids = {n: int(w["ref"]) for n, w in workers(client).items() if n in launched}
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), timeout_s=30, what="processes gone")
    finally:
        cluster.stop()


def cloud_cluster(tmp_path, size: str):
    """Three seed nodes whose provider is libcloud with the test driver, servers of the given size."""
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"driver": "podtest", "key": "k", "image": "pod-image", "size": size,
                                  "driver_kwargs": {"data_dir": str(tmp_path / "cloud")}, "slots": 1,
                                  "register": "tests.scaling.podtest_driver:register"}))
    return start_cluster(tmp_path / "c", nodes=3, slots=1,
                         extra_args=FAST + ["--provider", "libcloud", "--provider-config", str(config)])


def test_libcloud_provider_through_a_test_driver(tmp_path, scripts):
    cluster = cloud_cluster(tmp_path, "small")
    try:
        client = Client(cluster.urls[:1], cluster.token)
        launched, body = grow_and_shrink(cluster, client, scripts, "libcloud")
        assert all(workers(client)[n]["hourlyPrice"] == 0.05 for n in launched)
        assert body["spentSoFar"] > 0 and body["spendPerHour"] == 0
    finally:
        cluster.stop()


def test_failed_launches_are_counted_not_leaked_and_back_off(tmp_path, scripts):
    cluster = cloud_cluster(tmp_path, "sold-out")   # a size the driver lists but never has: every launch fails
    try:
        client = Client(cluster.urls, cluster.token)
        client.ok("newPolicy", name="more", rules="minWorkers=4,maxWorkers=5,cooldown=500")
        client.ok("applyPolicy", name="more")
        body = wait_until(lambda: (b := client.ok("getWorkers", 0))["launchFailures"].get("count", 0) >= 1 and b,
                          timeout_s=30, what="a failed launch recorded")
        assert "out of capacity for sold-out" in body["launchFailures"]["lastReason"]
        wait_until(lambda: client.ok("getWorkers", 0)["launching"] == [], timeout_s=10, what="no launch left")
        assert len(body["workers"]) == 3
        # It backs off: the leader says so instead of retrying every evaluation.
        status = wait_until(lambda: (s := cluster.status(cluster.leader())) and "backing off" in
                            s.get("scaling", {}).get("reason", "") and s, timeout_s=30, what="backing off")
        assert status["scaling"]["launch"] == 0
        failures = client.ok("getWorkers", 0)["launchFailures"]["count"]
        assert failures == body["launchFailures"]["count"]
    finally:
        cluster.stop()


def test_a_provider_that_cannot_describe_a_new_node_launches_nothing_and_says_why(tmp_path, scripts):
    cluster = cloud_cluster(tmp_path, "huge")   # the driver has no such size: prepare() fails, and is retried
    try:
        client = Client(cluster.urls, cluster.token)
        client.ok("newPolicy", name="more", rules="minWorkers=4,maxWorkers=5,cooldown=500")
        client.ok("applyPolicy", name="more")
        status = wait_until(lambda: (s := cluster.status(cluster.leader())) and "waiting for the provider's price"
                            in s.get("scaling", {}).get("reason", "") and s, timeout_s=30, what="waiting for price")
        assert "no size with id or name 'huge'" in status["scaling"]["reason"]
        assert "available sizes: small" in status["scaling"]["reason"]     # what there is, to fix the configuration
        assert "(wanted 1: 3 nodes below minWorkers=4)" in status["scaling"]["reason"]
        body = client.ok("getWorkers", 0)
        assert body["launching"] == [] and body["launchFailures"].get("count", 0) == 0
        assert len(body["workers"]) == 3
    finally:
        cluster.stop()


FLOOR = "minWorkers=1,maxWorkers=3,maxWait=1000,terminationTime=8000"


def test_one_node_grows_to_three_under_a_backlog_and_shrinks_back_to_one(tmp_path, scripts, record_property):
    """`pod up --nodes 1` under minWorkers=1,maxWorkers=3,maxWait=1000,terminationTime=8000: the two launched
    nodes go again once idle (the floor is minWorkers and the one seed node, not three), and the one node
    left still commits (the launched nodes were observers: it was the only voter all along)."""
    cluster = start_cluster(tmp_path, nodes=1, slots=1, extra_args=FAST + ["--provider", "local"])
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "slow", scripts.add("slow-floor.sh", install_script('sleep 3; echo "slow $1"')))
        client.ok("newPolicy", name="floor", rules=FLOOR)
        client.ok("applyPolicy", name="floor")
        ids = [client.ok("newExecution", name="slow", input=str(i))["execution"]["id"] for i in range(8)]
        most = 0

        def grown():
            nonlocal most
            body = client.ok("getWorkers", 0)
            held = [w for w in body["workers"] if w["status"] != "left"] + body["launching"]
            most = max(most, len(held))
            return sum(w["status"] == "up" for w in body["workers"]) == 3

        wait_until(grown, timeout_s=60, what="3 nodes up")
        assert cluster.status(cluster.nodes[0])["peers"] == []   # the launched nodes do not vote
        finish_ms = []
        for i, exec_id in enumerate(ids):
            final = wait_until(lambda: (e := client.ok("getExecutionStatus", 0, executionId=exec_id, wait=5)
                                        ["execution"])["status"] == "finished" and e, timeout_s=90, what="finished")
            assert final["stdout"] == f"slow {i}\n"
            finish_ms.append(final["finishTime"])
            grown()
        launched = {n: w for n, w in workers(client).items() if w["provider"] == "local"}
        assert len(launched) == 2 and most == 3, (launched, most)
        last_finish_s = max(finish_ms) / 1000

        def shrunk():
            grown()
            return all(workers(client)[n]["status"] == "left" for n in launched) and time.time()

        scaled_in_at = wait_until(shrunk, timeout_s=90, interval_s=0.2, what="back to one node")
        after_s = scaled_in_at - last_finish_s
        record_property("scale_in_after_last_finish_s", round(after_s, 1))
        interval_s = FAST[FAST.index("--scaling-interval-s") + 1]
        print(f"\nlast finish to scale-in (both launched nodes left): {after_s:.1f} s "
              f"(terminationTime 8 s, scaling interval {interval_s} s, 3 idle readings)")
        assert 8.0 <= after_s < 30.0, after_s
        assert most == 3
        assert [w["status"] for n, w in workers(client).items() if n not in launched] == ["up"]
        wait_until(lambda: not any(pid_alive(int(w["ref"])) for w in launched.values()), timeout_s=30,
                   what="launched processes gone")
        # The one node left commits on its own and runs work; the floor holds (nothing more is scaled in).
        again = client.ok("newExecution", name="slow", input="again")["execution"]["id"]
        final = wait_until(lambda: (e := client.ok("getExecutionStatus", 0, executionId=again, wait=5)
                                    ["execution"])["status"] == "finished" and e, timeout_s=30, what="finished")
        assert final["workerId"] == "n1"
        assert {n for n, w in workers(client).items() if w["provider"] == "local"} == set(launched)
    finally:
        cluster.stop()
