"""podnode.local.procs on real (short-lived) local processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from podnode.local import procs
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
        from podnode.local import procs
        ok = procs.become_subreaper()
        subprocess.run(["bash", "-c", "setsid sleep 30 >/dev/null 2>&1 < /dev/null & exit 0"])
        deadline = time.monotonic() + 5
        # Poll until the orphan has been adopted and has exec'd sleep (it is briefly still `setsid`).
        while time.monotonic() < deadline and not any(procs.cmdline(p)[:1] == ["sleep"] for p in procs.children()):
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


def test_working_in_finds_processes_by_their_directory(tmp_path):
    work = tmp_path / "n1" / "activities" / "a"
    work.mkdir(parents=True)
    inside = subprocess.Popen(["sleep", "30"], cwd=work, start_new_session=True)
    outside = subprocess.Popen(["sleep", "30"], cwd=tmp_path, start_new_session=True)
    try:
        assert inside.pid in procs.working_in(tmp_path / "n1" / "activities")
        assert procs.working_in(tmp_path, part="activities") == [inside.pid]
        assert outside.pid in procs.working_in(tmp_path)
        assert procs.kill_until_gone(lambda: procs.working_in(tmp_path), timeout_s=5.0) == []
    finally:
        for p in (inside, outside):
            p.kill()
            p.wait(timeout=5)
