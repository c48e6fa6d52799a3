"""Nodes join a running cluster through any member, install its activities and take work."""

from __future__ import annotations

from ..conftest import Client, approved, install_script, start_cluster, wait_until


def test_a_node_joins_through_any_member_and_takes_work(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=3, slots=1)
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "joinwork", scripts.add("joinwork.sh", install_script('sleep 1; echo "ran $1"')))
        newcomer = cluster.add_node(join=cluster.nodes[1].url)   # a follower, most likely
        wait_until(lambda: {w["id"]: w["status"] for w in client.ok("getWorkers")["workers"]}.get(newcomer.node_id)
                   == "up", timeout_s=30, what="n4 registered")
        # Every member now counts it as a peer, and it installs the existing activity.
        wait_until(lambda: all(newcomer.raft_addr in {p["address"] for p in cluster.status(n)["peers"]}
                               for n in cluster.nodes[:3]), what="n4 is a Raft member everywhere")
        assert cluster.status(newcomer)["leader"] is not None
        wait_until(lambda: {i["workerId"]: i["status"] for i in client.ok("getActivityStatus", name="joinwork")
                            ["activity"]["installations"]}.get(newcomer.node_id) == "installed", what="installed")
        client = Client(cluster.urls, cluster.token)
        ids = [client.ok("newExecution", name="joinwork", input=str(i))["execution"]["id"] for i in range(4)]
        workers = set()
        for exec_id in ids:
            final = wait_until(lambda: (e := client.ok("getExecutionStatus", executionId=exec_id, wait=5)
                                        ["execution"])["status"] == "finished" and e, what="finished")
            workers.add(final["workerId"])
        assert newcomer.node_id in workers   # 4 slots, 4 executions at once: one ran on the newcomer
        # Joining again (a restart with --join) changes nothing.
        cluster.stop_node(newcomer)
        cluster.start_node(newcomer)
        cluster.wait_ready(timeout_s=30)
        assert sorted(p["address"] for p in cluster.status(cluster.nodes[0])["peers"]) == \
            sorted(n.raft_addr for n in cluster.nodes[1:])
    finally:
        cluster.stop()


def test_join_and_leave_under_load_lose_nothing(tmp_path, scripts):
    import threading

    from ..chaos.test_failures import read_final, submit

    cluster = start_cluster(tmp_path, nodes=3, slots=2, extra_args=["--election-timeout-s", "0.3",
                                                                     "--node-lost-after-s", "1.5"])
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "churn", scripts.add("churn.sh", install_script('sleep 0.3; echo "c $1"')))
        stable = Client([cluster.nodes[0].url, cluster.nodes[1].url], cluster.token)   # neither joins nor leaves
        accepted: dict[str, int] = {}
        errors: list = []
        stop = threading.Event()

        def load() -> None:
            try:
                i = 0
                while not stop.is_set() and i < 150:
                    accepted[str(i)] = submit(stable, "churn", str(i))
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_until(lambda: len(accepted) >= 20, what="load under way")
            newcomer = cluster.add_node(join=cluster.nodes[0].url)
            wait_until(lambda: {w["id"]: w["status"] for w in stable.ok("getWorkers")["workers"]}
                       .get(newcomer.node_id) == "up", timeout_s=30, what="newcomer up")
            leaver = cluster.nodes[2]
            stable.ok("drainWorker", workerId=leaver.node_id, deadline=30)
            wait_until(lambda: leaver.proc.poll() is not None, timeout_s=60, what="leaver gone")
            wait_until(lambda: len(accepted) >= 120, timeout_s=60, what="more load after the churn")
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not errors, errors
        finals = {key: read_final(stable, exec_id) for key, exec_id in accepted.items()}
        assert len(set(accepted.values())) == len(accepted)
        for key, final in finals.items():
            assert final["status"] == "finished" and final["stdout"] == f"c {key}\n", final
        ran_on = {f["workerId"] for f in finals.values()}
        assert newcomer.node_id in ran_on and leaver.node_id in ran_on
    finally:
        cluster.stop()
