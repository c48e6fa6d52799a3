"""Spawns armed ahead of executions (exec/armed.py, `pod-spawn -a`), with real processes: the execution they run is
the one a fresh spawn makes (its cell, the run-as user, no_new_privs, a clean environment, only stdin, stdout and
stderr open, the activity's limits), a dead or failed one is never used, and none outlives the sandbox or the
node."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from podnode.exec.armed import ArmedPool, job_bytes
from podnode.exec.reaper import cleanup
from podnode.exec.runner import ExecutionResult, ExecutionRun
from podnode.exec.sandbox import (
    SANE_PATH,
    WRAPPER_FAILED,
    Limits,
    Sandbox,
    detect_cgroups,
    resolve_run_as,
)

from ..conftest import pid_alive

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroups and the run-as user")
DEADLINE_S = 10.0


async def wait_until(pred, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def make_activity(tmp_path: Path, body: str) -> Path:
    adir = tmp_path / "act"
    adir.mkdir()
    (adir / "main.sh").write_text("#!/bin/bash\n" + body)
    (adir / "main.sh").chmod(0o755)
    tmp_path.chmod(0o755)
    return adir


def cgroup_sandbox(helper: str) -> Sandbox:
    """A sandbox as a root node has one, built by hand: Sandbox.create sweeps the cgroups of other test runs. Its
    cgroups are not named pod-*-PID either: a node starting meanwhile would sweep them as a dead node's."""
    backend, why = detect_cgroups("auto", f"podtest-armed-{uuid.uuid4().hex[:8]}-{os.getpid()}")
    if backend is None:
        pytest.skip(f"no usable cgroup here: {why}")
    return Sandbox(run_as=resolve_run_as("pod"), cgroups=backend, helper=helper, spawn="pod-spawn")


async def armed_pool(sb: Sandbox, count: int = 2) -> ArmedPool:
    pool = ArmedPool.start(sb, count)
    assert pool is not None and sb.armed is pool
    await wait_until(lambda: pool.poll() == count)
    return pool


async def run(sb: Sandbox, adir: Path, input: str = "", **kw) -> tuple[ExecutionRun, ExecutionResult]:
    r = ExecutionRun(execution_id=1, attempt=1, activity="demo", activity_dir=adir, input=input,
                     output_cap_bytes=100_000, kill_grace_s=0.5, sandbox=sb, **kw)
    await r.start()
    return r, await asyncio.wait_for(r.wait(), DEADLINE_S)


def close(sb: Sandbox) -> None:
    sb.close()
    if sb.cgroups is not None:
        cleanup(sb.cgroups.node_dirs, set())


def test_the_job_is_nul_separated_and_refuses_a_nul_inside():
    job = job_bytes(Path("/a d"), {"PATH": "/bin", "X": ""}, ["-u", "9", "-g", "9"], ["./main.sh", ""])
    assert job == b"/a d\0PATH=/bin\0X=\0\0-u\0009\0-g\0009\0--\0./main.sh\0\0"
    assert job_bytes(Path("/a"), {}, [], ["./main.sh", "a\0b"]) is None
    assert job_bytes(Path("/a"), {"A=B": "c"}, [], ["x"]) is None


def test_pod_spawn_armed_checks_its_arguments_and_exits_quietly_when_disarmed(helper):
    out = subprocess.run([helper, "-a", "3", "-P", "1", "--", "true"], capture_output=True, text=True, timeout=30)
    assert out.returncode == WRAPPER_FAILED and "-a takes" in out.stderr
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.Popen([helper, "-a", str(theirs.fileno()), "-P", str(os.getpid())],
                                pass_fds=(theirs.fileno(),), env={}, stdin=subprocess.DEVNULL)
        theirs.close()
        assert ours.recv(16) == b"R"
        ours.sendall(b"no descriptors\0")   # a job without its stdout and stderr is refused
        ours.shutdown(socket.SHUT_WR)
        assert proc.wait(timeout=30) == WRAPPER_FAILED
        assert b"without its stdout and stderr" in ours.recv(4096)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.Popen([helper, "-a", str(theirs.fileno()), "-P", str(os.getpid())],
                                pass_fds=(theirs.fileno(),), env={}, stdin=subprocess.DEVNULL)
        theirs.close()
        assert ours.recv(16) == b"R"
        ours.close()   # disarmed
        assert proc.wait(timeout=30) == 0


@ROOT_ONLY
async def test_an_armed_spawn_runs_the_execution_as_a_fresh_one_would(helper, tmp_path, monkeypatch):
    monkeypatch.setenv("POD_SECRET", "do-not-leak")
    sb = cgroup_sandbox(helper)
    try:
        pool = await armed_pool(sb)
        armed_pids = {a.proc.pid for a in pool.armed}
        for pid in armed_pids:   # root until its job: out of the run-as user's reach
            uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("Uid:"))
            assert uids.split()[1:] == ["0"] * 4
        adir = make_activity(tmp_path, 'id -u; id -G; grep NoNewPrivs /proc/self/status; ls /proc/$$/fd > fds\n'
                                       'echo fds $(cat fds)\n'
                                       'env; echo "in=$1"; echo err >&2; cat /proc/$$/cgroup\n')
        sb.own(adir)
        r, res = await run(sb, adir, "a b")
        assert r.pid in armed_pids and pool.used == 1
        assert res.exit_code == 0 and res.error is None and res.stderr == "err\n", res
        uid, groups, nnp, fds, *rest = res.stdout.splitlines()
        assert uid == str(sb.run_as.uid) and groups == str(sb.run_as.gid)
        assert nnp.split() == ["NoNewPrivs:", "1"]
        assert fds.split() == ["fds", "0", "1", "2", "255"]   # 255: bash's own, on main.sh; no control socket
        assert "do-not-leak" not in res.stdout and f"HOME={adir}" in rest and "in=a b" in rest
        assert f"PATH={SANE_PATH}" in rest
        cell = r._cell
        assert not cell.dirs   # released
        cgroup_lines = [line for line in rest if line.count(":") >= 2 and "/podtest-armed-" in line]
        assert len(cgroup_lines) == 2 and all(line.endswith("/" + cell.cgroup) for line in cgroup_lines)
        await wait_until(lambda: pool.poll() == 2)  # refilled
    finally:
        close(sb)


@ROOT_ONLY
async def test_the_activity_limits_hold_on_an_armed_cell(helper, tmp_path):
    sb = cgroup_sandbox(helper)
    try:
        await armed_pool(sb, 1)
        adir = make_activity(tmp_path, "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done\nsleep 5\n")
        sb.own(adir)
        r = ExecutionRun(execution_id=2, attempt=1, activity="demo", activity_dir=adir, input="",
                         output_cap_bytes=10_000, kill_grace_s=0.5, sandbox=sb,
                         limits=Limits(max_processes=4, memory_mb=64, timeout_s=3))
        await r.start()
        assert sb.armed.used == 1
        pids_dir, mem_dir = r._cell.dirs
        assert (pids_dir / "pids.max").read_text().strip() == "4"
        assert int((mem_dir / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
        res = await asyncio.wait_for(r.wait(), DEADLINE_S)
        assert "fork" in res.stderr or "Resource temporarily unavailable" in res.stderr, res
        assert res.error == "timed out after 3 s"
    finally:
        close(sb)


@ROOT_ONLY
async def test_a_dead_armed_spawn_is_never_used(helper, tmp_path):
    sb = cgroup_sandbox(helper)
    try:
        pool = await armed_pool(sb, 1)
        victim = pool.armed[0].proc
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        adir = make_activity(tmp_path, 'echo "ok $1"\n')
        sb.own(adir)
        r, res = await run(sb, adir, "x")
        assert res.exit_code == 0 and res.stdout == "ok x\n" and r.pid != victim.pid
        assert pool.used == 0   # spawned fresh
    finally:
        close(sb)


async def test_without_cgroups_an_armed_spawn_sets_the_rlimits(helper, tmp_path):
    sb = Sandbox(helper=helper, spawn="pod-spawn")
    try:
        pool = await armed_pool(sb, 1)
        adir = make_activity(tmp_path, "ulimit -v\n")
        r, res = await run(sb, adir, limits=Limits(memory_mb=300))
        assert pool.used == 1 and res.exit_code == 0 and res.stdout == f"{300 * 1024}\n", res
    finally:
        close(sb)


@ROOT_ONLY
async def test_closing_the_sandbox_disarms_and_releases_the_cells(helper):
    sb = cgroup_sandbox(helper)
    try:
        pool = await armed_pool(sb, 2)
        pids = [a.proc.pid for a in pool.armed]
        cells = [d / a.cgroup for a in pool.armed for d in sb.cgroups.node_dirs]
        assert all((c / "cgroup.procs").read_text().split() for c in cells)
        sb.close()
        assert sb.armed is None and not any(pid_alive(p) for p in pids)
        assert all(not c.exists() or not (c / "cgroup.procs").read_text().split() for c in cells)
    finally:
        close(sb)


DIES_WITH_NODE = """
import asyncio, sys
from podnode.exec.armed import ArmedPool
from podnode.exec.sandbox import Sandbox
async def main():
    sb = Sandbox(helper=sys.argv[1], spawn="pod-spawn")
    pool = ArmedPool.start(sb, 2)
    while pool.poll() < 2:
        await asyncio.sleep(0.01)
    print(" ".join(str(a.proc.pid) for a in pool.armed), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def test_armed_spawns_die_with_a_sigkilled_node(helper):
    node = subprocess.Popen([sys.executable, "-c", DIES_WITH_NODE, helper], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pids = [int(p) for p in node.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    finally:
        node.kill()
        node.wait()
    end = time.monotonic() + DEADLINE_S
    while any(pid_alive(p) for p in pids):   # PR_SET_PDEATHSIG: the kernel kills them; init reaps them
        assert time.monotonic() < end, "armed spawns outlived their node"
        time.sleep(0.02)


async def test_a_forked_copy_of_the_control_socket_does_not_hold_the_job_back(helper, tmp_path):
    """The node forks (pysyncobj's snapshot writer): the child's copy of an armed spawn's socket must not delay
    the end of its job."""
    sb = Sandbox(helper=helper, spawn="pod-spawn")
    try:
        pool = await armed_pool(sb, 1)
        adir = make_activity(tmp_path, 'echo "ok $1"\n')
        child = os.fork()
        if child == 0:   # holds every descriptor of the node for a while, as a snapshot writer does
            time.sleep(DEADLINE_S)
            os._exit(0)
        try:
            started = time.monotonic()
            _, res = await run(sb, adir, "x")
            assert pool.used == 1 and res.stdout == "ok x\n", res
            assert time.monotonic() - started < DEADLINE_S / 2
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    finally:
        close(sb)
