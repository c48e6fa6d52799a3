"""podnode.procs and the pod up supervisor's decisions, on real (short-lived) local processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from podnode import procs
from podnode.localcluster import LocalNode
from podnode.supervisor import Backoff, Supervisor, mark_left
from tests.conftest import wait_until


def test_free_ports_are_distinct_and_bindable():
    ports = procs.free_ports(5)
    assert len(set(ports)) == 5
    assert all(procs.port_free(p) for p in ports)


def test_a_listening_port_is_not_free():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not procs.port_free(sock.getsockname()[1])


def test_descendants_include_a_setsid_grandchild_and_kill_tree_ends_them():
    proc = subprocess.Popen(["bash", "-c", "setsid sleep 30 & wait"], start_new_session=True)
    try:
        sleeper = wait_until(lambda: [p for p in procs.descendants(proc.pid) if procs.cmdline(p)[:1] == ["sleep"]],
                             timeout_s=10, what="the setsid sleep")[0]
        procs.kill_tree(proc.pid)
        assert procs.wait_gone([sleeper], 5.0) == []
    finally:
        procs.signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def test_a_subreaper_adopts_an_orphan_that_called_setsid():
    """In a child Python (pytest must not become a subreaper): the orphan is re-parented to it and found."""
    script = textwrap.dedent("""
        import json, subprocess, time
        from podnode import procs
        ok = procs.become_subreaper()
        subprocess.run(["bash", "-c", "setsid sleep 30 >/dev/null 2>&1 < /dev/null & exit 0"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not procs.children():
            time.sleep(0.05)
        kids = [(p, procs.cmdline(p)) for p in procs.children()]
        procs.kill_tree()
        print(json.dumps({"ok": ok, "kids": kids, "after": procs.descendants()}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True
    assert [argv[:1] for _, argv in out["kids"]] == [["sleep"]], out
    assert out["after"] == [], out


def test_stop_popen_kills_what_ignores_sigterm_after_the_grace():
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 30 & wait"], start_new_session=True)
    polite = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        wait_until(lambda: procs.descendants(stubborn.pid), timeout_s=10, what="the stubborn child")
        assert procs.stop_popen(stubborn, grace_s=0.3) is True
        assert stubborn.returncode == -signal.SIGKILL
        assert procs.stop_popen(polite, grace_s=5.0) is False
        assert polite.returncode == -signal.SIGTERM
    finally:
        for p in (stubborn, polite):
            procs.signal_group(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def test_stop_foreign_node_leaves_a_process_that_is_not_that_node_alone():
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert procs.stop_foreign_node(other.pid, "w1", grace_s=0.1) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=5)


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
