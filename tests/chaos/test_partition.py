"""A real partition: nodes in their own network namespaces, one cut off from the others, then healed."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from podnode.local.cluster import LocalCluster, LocalNode

from ..conftest import Client, approved, install_script, wait_until
from . import netns
from .test_failures import CHAOS_ARGS, read_final, running_where, submit

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"partition test skipped: {REASON}")


@dataclass
class NetnsNode(LocalNode):
    host_ns: str = ""
    cluster_ip: str = ""

    @property
    def raft_addr(self) -> str:
        return f"{self.cluster_ip}:{self.raft_port}"


class NetnsCluster(LocalCluster):
    """LocalCluster whose nodes run inside namespaces: HTTP on every address, Raft on the cluster link."""

    def __init__(self, net: netns.Network, data_dir: Path, secret: str):
        super().__init__(data_dir, nodes=0, secret=secret)
        self.nodes = [NetnsNode(f"n{i + 1}", 8080, 9080, Path(data_dir) / f"n{i + 1}", host=h.mgmt_ip, token=self.token,
                                host_ns=h.name, cluster_ip=h.cluster_ip, extra_args=CHAOS_ARGS + ["--slots", "2"])
                      for i, h in enumerate(net.hosts)]

    def command(self, node: NetnsNode) -> list[str]:
        peers = ",".join(n.raft_addr for n in self.nodes if n is not node)
        return ["ip", "netns", "exec", node.host_ns, sys.executable, "-m", "podnode", "--id", node.node_id,
                "--http", f"0.0.0.0:{node.http_port}", "--raft", node.raft_addr, "--peers", peers,
                "--advertise-host", node.cluster_ip, "--secret", self.secret, "--allow-file-urls",
                "--data-dir", str(node.data_dir), *node.extra_args]


@pytest.fixture
def partitioned(tmp_path):
    net = netns.Network(3)
    cluster = NetnsCluster(net, tmp_path / "cluster", secrets.token_hex(16))
    try:
        cluster.start(timeout_s=60)
        yield net, cluster
    finally:
        cluster.stop()
        net.close()


def test_cut_off_leader_refuses_writes_majority_goes_on_and_heal_runs_nothing_twice(partitioned, tmp_path):
    net, cluster = partitioned
    client = Client(cluster.urls, cluster.token)
    script = tmp_path / "part.sh"
    # The b* executions outlast the cut, so the cut-off node is running some when it is declared lost.
    script.write_text(install_script('echo "start $1 attempt $POD_ATTEMPT"; case "$1" in b*) sleep 6;; '
                                     '*) sleep 2;; esac; echo "end $1"'))
    approved(client, "part", script.as_uri())
    before = [submit(client, "part", f"b{i}") for i in range(6)]
    leader = wait_until(cluster.leader, what="leader")
    host = next(h for h in net.hosts if h.mgmt_ip == leader.host)
    majority = Client([n.url for n in cluster.nodes if n is not leader], cluster.token)
    minority = Client([leader.url], cluster.token)
    on_leader = wait_until(lambda: set(running_where(cluster, [leader])) & set(before), what="leader running work")
    term_before = cluster.status(leader)["term"]

    net.cut(host)
    try:
        # The cut-off old leader steps down and refuses writes; it changes nothing.
        code, body = wait_until(lambda: (r := minority.call("newExecution", name="part", input="nope"))[0] == 503
                                and r, timeout_s=30, what="503 on the minority side")
        assert "retry" in body["error"]
        # The majority elects a leader in a later term and carries on, moving the old leader's work.
        new_leader = wait_until(lambda: (n := cluster.leader()) is not None and n is not leader and n,
                                timeout_s=30, what="new leader on the majority side")
        cut_off = wait_until(lambda: (c := cluster.status(leader)) and c["role"] != "leader"
                             and c["leader"] != leader.node_id and c, timeout_s=15, what="old leader steps down")
        commit_cut_off = cut_off["commitIndex"]
        assert cluster.status(new_leader)["term"] > term_before
        during = [submit(majority, "part", f"d{i}") for i in range(4)]
        wait_until(lambda: {w["id"]: w for w in majority.ok("getWorkers")["workers"]}[leader.node_id]["status"]
                   == "lost", timeout_s=30, what="old leader declared lost")
        moved = wait_until(lambda: all(majority.ok("getExecutionStatus", executionId=i)["execution"]["attempts"] == 2
                                       for i in on_leader), timeout_s=30, what="the old leader's work requeued")
        assert moved
        # The minority side started nothing new and committed nothing while cut off.
        cut_off = cluster.status(leader)
        assert set(running_where(cluster, [leader])) <= on_leader, (on_leader, cut_off["executions"])
        assert cut_off["commitIndex"] == commit_cut_off, (commit_cut_off, cut_off)
        assert cut_off["role"] != "leader", cut_off
    finally:
        net.heal(host)

    # Healed: the old leader catches up, stops what moved away, and comes back into service.
    wait_until(lambda: (s := cluster.status(leader)) and s["leader"] not in (None, leader.node_id), timeout_s=30,
               what="old leader follows the new one")
    wait_until(lambda: {w["id"]: w for w in client.ok("getWorkers")["workers"]}[leader.node_id]["status"] == "up",
               timeout_s=30, what="old leader back up")
    finals = {i: read_final(client, i) for i in before + during}
    for final in finals.values():
        assert final["status"] == "finished", final
        assert final["stdout"].count("start") == 1 and final["stdout"].count("end") == 1, final
    assert all(final["stdout"].startswith("start d") for i, final in finals.items() if i in during)
    # The cut-off node's running work ran again on the majority: a second attempt, saying why.
    for exec_id in on_leader:
        final = finals[exec_id]
        assert final["attempts"] == 2 and final["workerId"] != leader.node_id, final
        assert "attempt 2" in final["stdout"] and leader.node_id in final["lastError"], final
    assert "nope" not in {e["stdin"] for e in client.ok("getAllExecutions")["executions"]}
    # Nothing is left running twice anywhere.
    assert not any(len(nodes) > 1 for nodes in running_where(cluster).values())
