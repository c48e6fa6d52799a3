"""The sandbox against real node processes: executions run unprivileged, in a clean environment, and nothing
they start survives terminate, a timeout or the node's SIGKILL; the memory limit holds."""

from __future__ import annotations

import os
import signal
import stat
import time
import uuid
from pathlib import Path

import pytest

from podnode.local.procs import cmdline, pids

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the node switches users only when it is root")
ALLOWED_ENV = {"PATH", "HOME", "LANG", "POD_EXECUTION_ID", "POD_ACTIVITY", "POD_ATTEMPT",
               "PWD", "SHLVL", "_", "OLDPWD"}   # the last four bash sets itself


def marked(marker: str) -> list[int]:
    """Live processes whose command line holds `marker` (each test's sleeps carry a unique one)."""
    return [p for p in pids() if any(marker in a for a in cmdline(p))]


def gone(marker: str) -> bool:
    return not marked(marker)


def new_marker() -> str:
    """A unique sleep duration, e.g. 900.48213: `sleep` takes it, and only this test's processes carry it."""
    return f"900.{uuid.uuid4().int % 10**8:08d}"


def run_and_wait(client: Client, name: str, *, input: str = "", timeout_s: float = 30.0) -> dict:
    exec_id = client.ok("newExecution", name=name, input=input)["execution"]["id"]

    def ended():
        rec = client.ok("getExecutionStatus", executionId=exec_id, wait=5)["execution"]
        return rec if rec["status"] not in ("waiting", "in progress") else None
    return wait_until(ended, timeout_s=timeout_s, what=f"execution {exec_id} ended")


@pytest.fixture
def one_node(tmp_path, request):
    """A single node; the test's marker (`node_args`) picks extra flags."""
    args = getattr(request, "param", [])
    cluster = start_cluster(tmp_path, nodes=1, slots=2, extra_args=FAST_RAFT + list(args))
    yield cluster
    cluster.stop()


@ROOT_ONLY
def test_executions_run_unprivileged_and_dirs_are_closed(one_node, scripts):
    client = Client(one_node.urls, one_node.token)
    approved(client, "whoami", scripts.add("whoami.sh", install_script('id -u; id -g; stat -c %u .')))
    rec = run_and_wait(client, "whoami")
    uid, gid, owner = rec["stdout"].splitlines()[:3]
    assert rec["status"] == "finished", rec
    assert uid != "0" and gid != "0" and owner == uid, rec["stdout"]
    data = Path(one_node.nodes[0].data_dir)
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 in (0, 0o010)     # root's; at most passable by pod's group
    assert data.stat().st_uid == 0
    for journal in data.glob("raft.*"):
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600, journal
    act = data / "activities" / "whoami"
    assert stat.S_IMODE(act.stat().st_mode) == 0o700 and str(act.stat().st_uid) == uid


def test_the_environment_holds_nothing_of_the_node(tmp_path, scripts, monkeypatch):
    marker = "pod-marker-" + uuid.uuid4().hex
    monkeypatch.setenv("POD_TEST_MARKER", marker)
    monkeypatch.setenv("POD_SECRET", "secret-" + marker)
    monkeypatch.setenv("POD_TOKEN", "token-" + marker)
    cluster = start_cluster(tmp_path, nodes=1, slots=1)
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "env", scripts.add("env.sh", install_script("env")))
        rec = run_and_wait(client, "env")
        out = rec["stdout"]
        assert rec["status"] == "finished", rec
        assert marker not in out and "POD_SECRET" not in out and "POD_TOKEN" not in out, out
        secret = getattr(cluster, "secret", None)
        assert not secret or secret not in out
        names = {line.partition("=")[0] for line in out.splitlines() if "=" in line}
        assert names <= ALLOWED_ENV, names - ALLOWED_ENV
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert env["HOME"].endswith("/activities/env") and env["POD_ACTIVITY"] == "env"
        assert env["POD_EXECUTION_ID"] == str(rec["id"]) and env["POD_ATTEMPT"] == "1"
    finally:
        cluster.stop()


def test_setsid_and_double_forked_children_die_with_terminate(one_node, scripts):
    client = Client(one_node.urls, one_node.token)
    m = new_marker()
    body = (f"setsid sleep {m}1 &\n"                           # a session of its own
            f"( setsid sleep {m}2 & )\n"                        # double-forked: its parent is gone
            f"bash -c 'sleep {m}3 & disown' &\n"
            f"echo started; sleep {m}4\n")
    approved(client, "escape", scripts.add(f"escape-{m}.sh", install_script(body)))
    exec_id = client.ok("newExecution", name="escape")["execution"]["id"]
    wait_until(lambda: len(marked(m)) >= 4, what="the four sleeps running")
    assert client.ok("terminateExecution", executionId=exec_id)["execution"]["status"] == "terminated"
    wait_until(lambda: gone(m), timeout_s=5, what=f"every process of execution {exec_id} gone")


@ROOT_ONLY
def test_the_armed_spawns_are_out_of_reach_of_executions(one_node, scripts):
    """The node keeps pod-spawns armed ahead (exec/armed.py): root until their job, so an execution (the run-as
    user) can neither signal them nor see their descriptors (the control socket)."""
    client = Client(one_node.urls, one_node.token)
    body = ('for p in /proc/[0-9]*; do\n'
            '  if tr "\\0" " " < $p/cmdline 2>/dev/null | grep -q "pod-spawn[^ ]* -a "; then\n'
            '    kill -0 ${p#/proc/} 2>/dev/null && echo "signalled ${p#/proc/}" || echo "refused ${p#/proc/}"\n'
            '    ls $p/fd >/dev/null 2>&1 && echo "fds ${p#/proc/}" || echo "hidden ${p#/proc/}"\n'
            '  fi\n'
            'done\n')
    approved(client, "reach", scripts.add("reach.sh", install_script(body)))
    rec = run_and_wait(client, "reach")
    words = [line.split()[0] for line in rec["stdout"].splitlines()]
    assert rec["status"] == "finished" and words, rec   # the node's other slot has one armed
    assert set(words) == {"refused", "hidden"}, rec["stdout"]
    for pid in {int(line.split()[1]) for line in rec["stdout"].splitlines()}:
        assert pid in pids()


@pytest.mark.parametrize("one_node", [["--exec-timeout-s", "2"]], indirect=True)
def test_a_timeout_ends_the_execution_in_error_and_kills_everything(one_node, scripts):
    client = Client(one_node.urls, one_node.token)
    m = new_marker()
    approved(client, "slow", scripts.add(f"slow-{m}.sh", install_script(f"( setsid sleep {m}1 & )\nsleep {m}2")))
    started = time.monotonic()
    rec = run_and_wait(client, "slow")
    assert rec["status"] == "error", rec
    assert "timed out after 2 s" in rec.get("errorDescription", ""), rec
    assert time.monotonic() - started < 15
    wait_until(lambda: gone(m), timeout_s=5, what="the timed-out execution's processes gone")


@pytest.mark.parametrize("one_node", [["--exec-memory-mb", "64"]], indirect=True)
def test_the_memory_limit_holds(one_node, scripts):
    client = Client(one_node.urls, one_node.token)
    body = ('x=$(head -c 300000000 /dev/zero | tr "\\0" a)\n'    # 300 MB in a shell variable
            'echo "allocated ${#x}"\n')
    approved(client, "hog", scripts.add("hog.sh", install_script(body)))
    rec = run_and_wait(client, "hog", timeout_s=60)
    assert "allocated 300000000" not in rec["stdout"], rec
    assert rec["status"] == "error", rec


def test_a_sigkilled_node_leaves_no_process_of_its_executions(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=3, slots=1)
    try:
        client = Client(cluster.urls, cluster.token)
        m = new_marker()
        body = (f'setsid sleep {m}${{POD_ATTEMPT}}1 &\n( setsid sleep {m}${{POD_ATTEMPT}}2 & )\n'
                f'sleep {m}${{POD_ATTEMPT}}3\n')
        approved(client, "orphan", scripts.add(f"orphan-{m}.sh", install_script(body)))
        exec_id = client.ok("newExecution", name="orphan")["execution"]["id"]
        first = m + "1"   # attempt 1's sleeps: 900.xxxxxxxx11, ...12, ...13
        wait_until(lambda: len(marked(first)) >= 3, what="attempt 1's three sleeps running")
        worker = client.ok("getExecutionStatus", executionId=exec_id)["execution"]["workerId"]
        node = next(n for n in cluster.nodes if n.node_id == worker)
        node_pid = node.proc.pid
        cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/**/pod-{worker}-{node_pid}") if p.is_dir()]
        armed = [p for p in pids() if "-a" in cmdline(p)[1:2] and str(node_pid) in cmdline(p)[4:5]]
        assert armed, "the node keeps a spawn armed for its next execution"
        os.kill(node_pid, signal.SIGKILL)
        node.proc.wait()
        killed_at = time.monotonic()
        wait_until(lambda: gone(first), timeout_s=3, interval_s=0.05, what="attempt 1's processes gone")
        wait_until(lambda: not any(p in pids() for p in armed), timeout_s=3, what="its armed spawns gone")
        assert time.monotonic() - killed_at < 3
        wait_until(lambda: not any(p.exists() for p in cgroups), timeout_s=5, what="its cgroups removed")
    finally:
        cluster.stop()


@pytest.mark.parametrize("one_node", [["--cgroups", "none", "--exec-max-processes", "0"]], indirect=True)
def test_without_cgroups_terminate_and_a_sigkill_still_reach_a_setsid_child(one_node, scripts):
    """The fallback: a session of its own, main's descendants, and the reaper told of each session. (A child
    that leaves both its session and its parent escapes it: that takes a cgroup.)"""
    client = Client(one_node.urls, one_node.token)
    m = new_marker()
    mark = f"{m}${{POD_EXECUTION_ID}}"
    body = f"setsid sleep {mark}1 &\nsleep {mark}2 &\nsleep {mark}3\n"
    approved(client, "fallback", scripts.add(f"fallback-{m}.sh", install_script(body)))
    first = client.ok("newExecution", name="fallback")["execution"]["id"]
    second = client.ok("newExecution", name="fallback")["execution"]["id"]
    wait_until(lambda: len(marked(f"{m}{first}")) >= 3 and len(marked(f"{m}{second}")) >= 3,
               what="both executions' sleeps running")
    client.ok("terminateExecution", executionId=first)
    wait_until(lambda: gone(f"{m}{first}"), timeout_s=5, what="the terminated execution's processes gone")
    assert len(marked(f"{m}{second}")) >= 3     # the other execution was not touched
    node = one_node.nodes[0]
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait()
    wait_until(lambda: gone(f"{m}{second}"), timeout_s=3, interval_s=0.05, what="the SIGKILLed node's processes gone")


@ROOT_ONLY
def test_the_sh_and_setpriv_fallback_still_sandboxes(tmp_path, scripts, monkeypatch):
    """Where pod-spawn cannot be built (no C compiler), the wrapper does its work: forced here by the variable."""
    monkeypatch.setenv("POD_SANDBOX_SPAWN", "wrapper")
    cluster = start_cluster(tmp_path, nodes=1, slots=1, extra_args=FAST_RAFT)
    try:
        client = Client(cluster.urls, cluster.token)
        m = new_marker()
        body = f"id -u; (setsid sleep {m} &)\nsleep {m}\n"
        approved(client, "fallback", scripts.add(f"wrapper-{m}.sh", install_script(body)))
        exec_id = client.ok("newExecution", name="fallback")["execution"]["id"]
        wait_until(lambda: len(marked(m)) >= 2, what="both sleeps running")
        assert client.ok("terminateExecution", executionId=exec_id)["execution"]["status"] == "terminated"
        wait_until(lambda: gone(m), timeout_s=5, what="every process of the execution gone")
        rec = client.ok("getExecutionStatus", executionId=exec_id)["execution"]
        assert rec["stdout"].split()[0] not in ("", "0"), rec
        assert any("spawned by sh + setpriv wrapper" in p.read_text(errors="replace")
                   for p in cluster.log_dir.glob("*.log")), "the node's log does not say which spawn it uses"
    finally:
        cluster.stop()
