"""The pod up supervisor's decisions (restart, back-off, leaving, letting go), with fake node processes."""

from __future__ import annotations

from pathlib import Path

from podnode.local import supervisor
from podnode.local.cluster import LocalNode
from podnode.local.left import mark_left, read_left
from podnode.local.supervisor import Backoff, Supervisor


def test_backoff_doubles_to_30_s_and_resets_after_a_long_run():
    b = Backoff()
    assert [b.delay_after(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay_after(31.0) == 1
    assert b.delay_after(2.0) == 2


class FakeProc:
    def __init__(self, pid: int, code: int | None = None):
        self.pid, self.returncode = pid, code

    def poll(self):
        return self.returncode


class FakeCluster:
    def __init__(self, tmp_path: Path):
        self.log_dir = tmp_path
        self.nodes = [LocalNode(f"n{i}", 1000 + i, 2000 + i, tmp_path / f"n{i}") for i in (1, 2, 3)]
        for i, n in enumerate(self.nodes):
            n.data_dir.mkdir()
            n.proc = FakeProc(900001 + i)
        self.started: list[str] = []

    def start_node(self, node: LocalNode) -> None:
        self.started.append(node.node_id)
        node.proc = FakeProc(900100 + len(self.started))


def supervised(tmp_path, **kwargs):
    cluster, said, now = FakeCluster(tmp_path), [], [100.0]
    sup = Supervisor(cluster, say=said.append, clock=lambda: now[0], **kwargs)
    sup.mark_up()
    sup.clean_orphans = lambda: None
    return cluster, sup, said, now


def test_a_node_that_dies_is_restarted_after_the_backoff(tmp_path):
    cluster, sup, said, now = supervised(tmp_path)
    sup.left = lambda node: False
    cluster.nodes[0].proc.returncode = -9
    sup.tick()
    assert said[-1].startswith("n1 exited (signal 9); the cluster carries on with 2 of 3; restarting n1 in 1 s")
    now[0] += 0.5
    sup.tick()
    assert cluster.started == []
    now[0] += 0.6
    sup.tick()
    assert cluster.started == ["n1"]
    cluster.nodes[0].proc.returncode = 1   # dies again at once: the next wait is doubled
    sup.tick()
    assert "n1 exited (exit code 1)" in said[-1] and "restarting n1 in 2 s" in said[-1], said


def test_a_node_that_left_is_not_restarted_nor_one_under_no_restart(tmp_path):
    cluster, sup, said, now = supervised(tmp_path)
    sup.left = lambda node: node.node_id == "n3"
    cluster.nodes[2].proc.returncode = 0
    sup.tick()
    assert said[-1] == "n3 left the cluster; the cluster carries on with 2 nodes (n3 is not restarted)"
    (tmp_path / "b").mkdir()
    cluster2, sup2, said2, now2 = supervised(tmp_path / "b", restart=False)
    sup2.left = lambda node: False
    cluster2.nodes[1].proc.returncode = -9
    sup2.tick()
    now2[0] += 60
    sup2.tick()
    assert "not restarting it (--no-restart" in said2[-1] and cluster.started == [] and cluster2.started == []


def test_the_left_record_is_read_back(tmp_path):
    cluster, sup, said, now = supervised(tmp_path)
    mark_left(cluster.nodes[1].data_dir, "n2", "drained")
    assert sup.left(cluster.nodes[1]) is True
    assert sup.left(cluster.nodes[0]) is False   # no record, and no node answers: not left


def test_a_restarted_node_that_raft_no_longer_counts_is_let_go_not_waited_for(tmp_path, monkeypatch):
    cluster, sup, said, now = supervised(tmp_path)
    n1, n2, n3 = cluster.nodes
    member_view = {"leader": "n2", "raftAddress": n2.raft_addr, "peers": [{"address": n3.raft_addr}]}
    monkeypatch.setattr(supervisor, "status", lambda node: None if node is n1 else member_view)
    monkeypatch.setattr(supervisor, "state_says_left", lambda node, member: False)
    stopped = []
    cluster.stop_node = lambda node, timeout_s: stopped.append(node.node_id)
    sup.left = lambda node: False
    n1.proc.returncode = -9
    sup.tick()
    now[0] += 1.0
    sup.tick()                                   # restarted; it finds no leader
    now[0] += supervisor.STRAGGLER_S - 1
    sup.tick()
    assert stopped == [] and "no longer a member" not in said[-1]
    now[0] += 2
    sup.tick()
    assert stopped == ["n1"] and said[-1].startswith("n1 is no longer a member of the cluster"), said
    assert [w.node.node_id for w in sup.watched] == ["n2", "n3"]
    assert read_left(n1.data_dir) is not None   # the next pod up starts without it
