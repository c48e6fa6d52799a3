"""Seven nodes with at most five Raft voters: the rest observe, run work, and replace lost voters."""

from __future__ import annotations

import signal

from ..conftest import Client, approved, install_script, start_cluster, wait_until
from .test_failures import read_final, submit

ARGS = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", "1.5", "--max-voters", "5"]


def roles(cluster) -> dict[str, str]:
    return {n.node_id: (cluster.status(n) or {}).get("role") for n in cluster.nodes if n.proc.poll() is None}


def voters(cluster) -> set[str]:
    return {n for n, r in roles(cluster).items() if r in ("leader", "follower", "candidate")}


def test_seven_nodes_capped_voters_survive_losing_voters(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=3, slots=2, extra_args=ARGS)
    try:
        for _ in range(4):
            node = cluster.add_node(join=cluster.nodes[0].url)
            first = Client(cluster.urls[:1], cluster.token)
            wait_until(lambda: {w["id"]: w["status"] for w in first.ok("getWorkers")["workers"]}
                       .get(node.node_id) == "up", timeout_s=30, what=f"{node.node_id} up")
        # A node's own /status answers once it has caught up (503 before, None here): poll, do not sample once.
        expected = {"n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter", "n5": "voter",
                    "n6": "observer", "n7": "observer"}
        wait_until(lambda: {n: ("voter" if r in ("leader", "follower", "candidate") else r)
                            for n, r in roles(cluster).items()} == expected,
                   timeout_s=30, what="five voters and two observers, each saying so on its own /status")
        client = Client(cluster.urls, cluster.token)
        approved(client, "wide", scripts.add("wide.sh", install_script('sleep 1; echo "w $1"')))
        ids = [submit(client, "wide", str(i)) for i in range(14)]   # 7 nodes x 2 slots
        finals = [read_final(client, i) for i in ids]
        assert {"n6", "n7"} & {f["workerId"] for f in finals}, "observers run work too"

        # Lose a voter (not the leader): an observer is promoted, and five voters remain.
        for round_ in range(2):
            leader = wait_until(cluster.leader, what="leader")
            victim = next(n for n in cluster.nodes if n.node_id in voters(cluster) and n is not leader)
            cluster.stop_node(victim, sig=signal.SIGKILL)
            wait_until(lambda: len(voters(cluster)) == 5, timeout_s=30, what=f"voter replaced (round {round_})")
            alive = [n for n in cluster.nodes if n.proc.poll() is None]

            def leader_peers() -> set[str]:
                leader = cluster.leader()
                return {p["address"] for p in ((cluster.status(leader) or {}) if leader else {}).get("peers", [])}
            # The promoted observer says "follower" as soon as it votes; the lost voter leaves the leader's Raft
            # peers in a membership change of its own, a moment later: poll for it, do not sample once.
            wait_until(lambda: victim.raft_addr not in leader_peers() and len(leader_peers()) == 4,
                       timeout_s=30, what=f"{victim.node_id} out of the leader's Raft peers (round {round_})")
            client = Client([n.url for n in alive], cluster.token)
            ids = [submit(client, "wide", f"r{round_}-{i}") for i in range(6)]
            for i, exec_id in enumerate(ids):
                assert read_final(client, exec_id)["stdout"] == f"w r{round_}-{i}\n"
        assert not any(r == "observer" for r in roles(cluster).values())   # both observers were promoted
    finally:
        cluster.stop()
