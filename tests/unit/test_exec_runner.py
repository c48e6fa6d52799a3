"""Tests for podnode.exec.runner with real subprocesses."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from podnode.exec.reaper import cleanup
from podnode.exec.runner import ExecutionResult, ExecutionRun
from podnode.exec.sandbox import Limits, Sandbox, read_pids

from ..conftest import pid_alive

DEADLINE_S = 10.0


def make_activity(tmp_path: Path, body: str, *, shebang: bool = True) -> Path:
    """Create an activity dir whose main.sh runs ``body``."""
    adir = tmp_path / "act"
    adir.mkdir()
    main = adir / "main.sh"
    main.write_text(("#!/bin/bash\n" if shebang else "") + body)
    main.chmod(0o755)
    return adir


def make_run(tmp_path: Path, adir: Path, input: str = "", **kw) -> ExecutionRun:
    params = dict(
        execution_id=7, attempt=2, activity="demo", activity_dir=adir,
        input=input, output_cap_bytes=1000,
        kill_grace_s=0.5,
    )
    params.update(kw)
    return ExecutionRun(**params)


async def run_to_end(run: ExecutionRun) -> ExecutionResult:
    await run.start()
    return await asyncio.wait_for(run.wait(), DEADLINE_S)


async def wait_until(pred, timeout: float = DEADLINE_S) -> None:
    """Poll ``pred`` until true or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_echo_input_exit_zero(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, 'echo "got:$1"\n')
    res = await run_to_end(make_run(tmp_path, adir, "hello"))
    assert res.exit_code == 0
    assert res.stdout == "got:hello\n"
    assert res.stderr == ""
    assert res.error is None and not res.terminated
    assert not res.stdout_truncated and not res.stderr_truncated


async def test_nonzero_exit(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "echo oops >&2\nexit 3\n")
    run = make_run(tmp_path, adir)
    res = await run_to_end(run)
    assert res.exit_code == 3
    assert res.stderr == "oops\n"
    assert not run.running
    # wait() is idempotent
    assert await asyncio.wait_for(run.wait(), DEADLINE_S) == res


async def test_input_passed_literally(tmp_path: Path) -> None:
    tricky = """a b  "c" 'd' $(touch pwned) `touch pwned2` $HOME ; | &"""
    adir = make_activity(tmp_path, 'printf "%s" "$1"\n')
    res = await run_to_end(make_run(tmp_path, adir, tricky))
    assert res.stdout == tricky
    assert not (adir / "pwned").exists() and not (adir / "pwned2").exists()


async def test_env_vars(tmp_path: Path) -> None:
    adir = make_activity(
        tmp_path,
        'echo "$POD_EXECUTION_ID $POD_ACTIVITY $POD_ATTEMPT $EXTRA $PATH_SET"\n'
        'pwd\n',
    )
    run = make_run(tmp_path, adir, extra_env={"EXTRA": "x1", "PATH_SET": "${PATH:+y}"})
    res = await run_to_end(run)
    line1, line2 = res.stdout.splitlines()
    assert line1 == "7 demo 2 x1 ${PATH:+y}"
    assert Path(line2).resolve() == adir.resolve()


async def test_stderr_flood_is_drained_and_truncated(tmp_path: Path) -> None:
    adir = make_activity(
        tmp_path, "head -c 20000000 /dev/zero | tr '\\0' x >&2\necho done\n"
    )
    res = await run_to_end(make_run(tmp_path, adir, output_cap_bytes=5000))
    assert res.exit_code == 0
    assert res.stdout == "done\n" and not res.stdout_truncated
    assert res.stderr == "x" * 5000 and res.stderr_truncated


async def test_read_output_while_running_then_terminate(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "echo first\necho err1 >&2\nsleep 100\n")
    run = make_run(tmp_path, adir)
    assert run.read_output() == ("", "")
    await run.start()
    assert run.running and run.pid is not None
    await wait_until(lambda: run.read_output() == ("first\n", "err1\n"))
    await asyncio.wait_for(run.terminate(), DEADLINE_S)
    res = await asyncio.wait_for(run.wait(), DEADLINE_S)
    assert res.terminated and res.exit_code is not None and res.exit_code < 0
    assert res.stdout == "first\n"
    assert run.read_output() == ("first\n", "err1\n")
    assert not run.running


async def test_terminate_kills_children(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "sleep 100 &\necho $! > child.pid\nsleep 100\n")
    run = make_run(tmp_path, adir)
    await run.start()
    pid_file = adir / "child.pid"
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    child = int(pid_file.read_text())
    assert pid_alive(child)
    await asyncio.wait_for(run.terminate(), DEADLINE_S)
    await wait_until(lambda: not pid_alive(child), timeout=5)


async def test_sigterm_ignored_gets_sigkill(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "trap '' TERM\necho ready\nwhile true; do sleep 0.05; done\n")
    run = make_run(tmp_path, adir, kill_grace_s=0.3)
    await run.start()
    await wait_until(lambda: run.read_output()[0] == "ready\n")
    t0 = time.monotonic()
    await asyncio.wait_for(run.terminate(), DEADLINE_S)
    res = await asyncio.wait_for(run.wait(), DEADLINE_S)
    assert res.exit_code == -9
    assert res.terminated
    assert time.monotonic() - t0 >= 0.25


async def test_lingering_child_does_not_hang_wait(tmp_path: Path) -> None:
    # The child keeps stdout open after main.sh exits.
    adir = make_activity(tmp_path, "sleep 100 &\necho $! > child.pid\necho bye\n")
    run = make_run(tmp_path, adir, kill_grace_s=0.3)
    res = await run_to_end(run)
    assert res.exit_code == 0 and res.stdout == "bye\n"
    child = int((adir / "child.pid").read_text())
    await wait_until(lambda: not pid_alive(child), timeout=5)


async def test_missing_main_sh(tmp_path: Path) -> None:
    adir = tmp_path / "act"
    adir.mkdir()
    run = make_run(tmp_path, adir)
    res = await run_to_end(run)
    assert res.exit_code is None
    assert res.error is not None and res.error.startswith("could not start main.sh:")
    assert res.stdout == "" and res.stderr == ""
    assert run.pid is None and not run.running
    await asyncio.wait_for(run.terminate(), DEADLINE_S)  # no error


async def test_main_sh_without_shebang_runs_under_bash(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, 'arr=(a b c)\necho "${#arr[@]} $1"\n', shebang=False)
    (adir / "main.sh").chmod(0o644)  # not even executable
    res = await run_to_end(make_run(tmp_path, adir, "in"))
    assert res.exit_code == 0
    assert res.stdout == "3 in\n"


async def test_terminate_after_exit_is_harmless(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "echo hi\n")
    run = make_run(tmp_path, adir)
    res = await run_to_end(run)
    await asyncio.wait_for(run.terminate(), DEADLINE_S)
    assert res.exit_code == 0


async def test_the_process_is_reaped_and_no_fd_is_left_open(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "echo hi\n")
    fds_before = len(os.listdir("/proc/self/fd"))
    run = make_run(tmp_path, adir)
    res = await run_to_end(run)
    assert res.exit_code == 0 and res.stdout == "hi\n"
    with pytest.raises(ChildProcessError):  # already reaped: no zombie left behind
        os.waitpid(run.pid, os.WNOHANG)
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_exit_is_noticed_without_pidfd(tmp_path: Path, monkeypatch) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError("pidfd_open is not available here")
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    adir = make_activity(tmp_path, 'echo "$1"\nexit 4\n')
    res = await run_to_end(make_run(tmp_path, adir, "polled"))
    assert res.exit_code == 4 and res.stdout == "polled\n"


async def test_a_timeout_kills_it_and_says_so(tmp_path: Path) -> None:
    adir = make_activity(tmp_path, "sleep 100 &\necho $! > child.pid\nsleep 100\n")
    run = make_run(tmp_path, adir, limits=Limits(timeout_s=0.5))
    t0 = time.monotonic()
    res = await run_to_end(run)
    assert res.error == "timed out after 0.5 s" and res.exit_code == -9
    assert time.monotonic() - t0 < 5
    await wait_until(lambda: not pid_alive(int((adir / "child.pid").read_text())), timeout=5)


async def test_the_environment_is_clean(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("POD_SECRET", "do-not-leak")
    adir = make_activity(tmp_path, "env\n")
    res = await run_to_end(make_run(tmp_path, adir))
    assert "do-not-leak" not in res.stdout and f"HOME={adir.absolute()}" in res.stdout


async def test_a_symlinked_main_sh_is_refused(tmp_path: Path) -> None:
    adir = tmp_path / "act"
    adir.mkdir()
    (tmp_path / "elsewhere.sh").write_text("#!/bin/bash\necho no\n")
    (adir / "main.sh").symlink_to(tmp_path / "elsewhere.sh")
    res = await run_to_end(make_run(tmp_path, adir))
    assert res.exit_code is None and res.error.startswith("could not start main.sh")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroups and the run-as user")
async def test_in_a_cgroup_a_setsid_grandchild_dies_with_terminate(tmp_path: Path) -> None:
    sandbox = Sandbox.create(node_id="unit", run_as=None, cgroups="auto", defaults=Limits(), reaper=False)
    try:
        if sandbox.cgroups is None:
            pytest.skip("no usable cgroup here")
        adir = make_activity(tmp_path, "(setsid sleep 100 & echo $! > child.pid)\nsleep 100\n")
        sandbox.own(adir)
        tmp_path.chmod(0o755)
        run = make_run(tmp_path, adir, sandbox=sandbox)
        await run.start()
        await wait_until(lambda: (adir / "child.pid").exists() and (adir / "child.pid").read_text().strip() != "")
        child = int((adir / "child.pid").read_text())
        cell = run._cell.dirs[0]
        assert pid_alive(child) and child in read_pids(cell)
        await asyncio.wait_for(run.terminate(), DEADLINE_S)
        await wait_until(lambda: not pid_alive(child), timeout=5)
        assert read_pids(cell) == []
    finally:
        sandbox.close()
        if sandbox.cgroups is not None:
            cleanup(sandbox.cgroups.node_dirs, set())
