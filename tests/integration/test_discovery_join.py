"""--join auto finds the cluster of the same name over zeroconf; another cluster on the same network
is never joined by mistake."""

from __future__ import annotations

import secrets

from podnode.local.cluster import LocalCluster

from ..conftest import Client, start_cluster, wait_until


def test_join_auto_finds_its_own_cluster_only(tmp_path):
    alpha, beta = f"alpha-{secrets.token_hex(3)}", f"beta-{secrets.token_hex(3)}"
    a = start_cluster(tmp_path / "a", nodes=3, extra_args=["--election-timeout-s", "0.3", "--cluster-name", alpha])
    b = LocalCluster(tmp_path / "b", nodes=1, extra_args=["--election-timeout-s", "0.3", "--cluster-name", beta])
    try:
        b.start(timeout_s=30)
        newcomer = a.add_node(join="auto", node_id="n9",
                              extra_args=["--election-timeout-s", "0.3", "--cluster-name", alpha])
        wait_until(lambda: {w["id"]: w["status"] for w in Client(a.urls[:1], a.token).ok("getWorkers")["workers"]}
                   .get("n9") == "up", timeout_s=40, what="n9 joined alpha through zeroconf")
        assert "n9" not in {w["id"] for w in Client(b.urls, b.token).ok("getWorkers")["workers"]}
        assert newcomer.raft_addr in {p["address"] for p in a.status(a.nodes[0])["peers"]}
    finally:
        a.stop()
        b.stop()
