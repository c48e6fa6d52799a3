"""The policy grows the cluster under a queue and shrinks it when idle, through real providers."""

from __future__ import annotations

import json

from ..conftest import Client, pid_alive, approved, install_script, start_cluster, wait_until

FAST = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", "1.5",
        "--scaling-interval-s", "0.5"]
GROW = "minWorkers=1,maxWorkers=5,maxWait=1000,terminationTime=1500,cooldown=500"




def workers(client: Client) -> dict[str, dict]:
    return {w["id"]: w for w in client.ok("getWorkers", 0)["workers"]}


def grow_and_shrink(cluster, client: Client, scripts, provider: str) -> None:
    approved(Client(cluster.urls), "slow", scripts.add(f"slow-{provider}.sh",
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
        client = Client(cluster.urls[:1])
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
        client = Client(cluster.urls[:1])
        launched, body = grow_and_shrink(cluster, client, scripts, "libcloud")
        assert all(workers(client)[n]["hourlyPrice"] == 0.05 for n in launched)
        assert body["spentSoFar"] > 0 and body["spendPerHour"] == 0
    finally:
        cluster.stop()


def test_failed_launches_are_counted_not_leaked_and_back_off(tmp_path, scripts):
    cluster = cloud_cluster(tmp_path, "huge")   # the driver has no such size: every launch fails
    try:
        client = Client(cluster.urls)
        client.ok("newPolicy", name="more", rules="minWorkers=4,maxWorkers=5,cooldown=500")
        client.ok("applyPolicy", name="more")
        body = wait_until(lambda: (b := client.ok("getWorkers", 0))["launchFailures"].get("count", 0) >= 1 and b,
                          timeout_s=30, what="a failed launch recorded")
        assert "huge" in body["launchFailures"]["lastReason"] and body["launching"] == []
        assert len(body["workers"]) == 3
        # It backs off: the leader says so instead of retrying every evaluation.
        status = wait_until(lambda: (s := cluster.status(cluster.leader())) and "backing off" in
                            s.get("scaling", {}).get("reason", "") and s, timeout_s=30, what="backing off")
        assert status["scaling"]["launch"] == 0
        assert client.ok("getWorkers", 0)["launchFailures"]["count"] == body["launchFailures"]["count"]
    finally:
        cluster.stop()
