"""pod-spawn (exec/spawn.c) and the sh + setpriv wrapper it replaces, with real processes: each joins the cell's
cgroups, sets the rlimits, drops to the run-as user and execs the command, or fails saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from podnode.exec import sandbox
from podnode.exec.reaper import cleanup
from podnode.exec.sandbox import (
    SANE_PATH,
    SPAWN_ENV,
    SPAWN_SOURCE,
    WRAPPER_FAILED,
    Limits,
    RunAs,
    Sandbox,
    cgroup_name,
    detect_cgroups,
    helper_argv,
    resolve_run_as,
    spawn_helper,
)

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroups and the run-as user")
ENV = {"PATH": SANE_PATH, "LANG": "C.UTF-8"}


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=cwd, stdin=subprocess.DEVNULL,
                          timeout=30)


def test_helper_argv_passes_paths_and_input_as_arguments():
    argv = helper_argv(["./main.sh", "$(touch x)"], helper="/h/pod-spawn", procs_files=[Path("/cg/a b/cgroup.procs")],
                       rlimits=None, run_as=RunAs("pod", 999, 995), as_root=True)
    assert argv == ["/h/pod-spawn", "-c", "/cg/a b/cgroup.procs", "-u", "999", "-g", "995", "--",
                    "./main.sh", "$(touch x)"]
    assert helper_argv(["./main.sh"], helper="/h/pod-spawn", procs_files=[], rlimits=Limits(timeout_s=3),
                       run_as=None, as_root=False) == ["./main.sh"]
    # root without a run-as user: RLIMIT_NPROC would not bind root, so it is not set (as the wrapper did)
    assert helper_argv(["x"], helper="h", procs_files=[], rlimits=Limits(memory_mb=2, max_processes=5), run_as=None,
                       as_root=True) == ["h", "-v", "2048", "--", "x"]


def test_pod_spawn_sets_rlimits_without_a_cgroup(helper):
    argv = helper_argv(["sh", "-c", "ulimit -v; ulimit -p"], helper=helper, procs_files=[],
                       rlimits=Limits(memory_mb=100, max_processes=50), run_as=None, as_root=False)
    out = run(argv)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(100 * 1024), "50"]


def test_pod_spawn_fails_saying_why(helper, tmp_path):
    missing = tmp_path / "no-cgroup" / "cgroup.procs"
    out = run([helper, "-c", str(missing), "--", "true"])
    assert out.returncode == WRAPPER_FAILED and str(missing) in out.stderr
    for bad in (["-u", "0", "-g", "0"], ["-u", "999"], ["-v", "12x"], ["-x", "1"], ["-v"]):
        out = run([helper, *bad, "--", "true"])
        assert out.returncode == WRAPPER_FAILED and out.stderr.startswith("pod-spawn: "), (bad, out)
    assert run([helper, "--"]).returncode == WRAPPER_FAILED
    assert run([helper, "--", str(tmp_path / "nothing")]).returncode == 127
    plain_file = tmp_path / "not-executable"
    plain_file.write_text("echo hi\n")
    assert run([helper, "--", str(plain_file)]).returncode == 126
    assert run([helper, "--", "sh", "-c", "exit 3"]).returncode == 3


@ROOT_ONLY
@pytest.mark.parametrize("spawn", ["helper", "wrapper"])
def test_a_cell_joins_its_cgroups_and_drops_to_the_run_as_user(spawn, tmp_path, monkeypatch):
    if spawn == "wrapper":
        monkeypatch.setenv(SPAWN_ENV, "wrapper")
    elif spawn_helper()[0] is None:
        pytest.skip(f"no pod-spawn here: {spawn_helper()[1]}")
    # Built by hand rather than with Sandbox.create, which sweeps every `pod-*-PID` cgroup whose PID is no node:
    # those of other test runs on this machine too.
    backend, _ = detect_cgroups("auto", cgroup_name(f"spawn{uuid.uuid4().hex[:8]}", os.getpid()))
    helper, spawn_how = spawn_helper()
    sandbox = Sandbox(run_as=resolve_run_as("pod"), cgroups=backend, helper=helper, spawn=spawn_how,
                      setpriv=shutil.which("setpriv", path=SANE_PATH))
    try:
        assert (sandbox.helper is not None) == (spawn == "helper"), sandbox.spawn
        assert sandbox.spawn.startswith("pod-spawn" if spawn == "helper" else "sh + setpriv"), sandbox.spawn
        cell = sandbox.cell("t", Limits(max_processes=20))
        tmp_path.chmod(0o755)
        script = "id -u; id -G; grep NoNewPrivs /proc/self/status; cat /proc/self/cgroup"
        out = run(cell.argv(["sh", "-c", script]), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        uid, groups, nnp, *cgroup_lines = out.stdout.splitlines()
        assert uid == str(sandbox.run_as.uid) and groups == str(sandbox.run_as.gid), out.stdout
        assert nnp.split() == ["NoNewPrivs:", "1"]
        if sandbox.cgroups is not None:
            for d in cell.dirs:   # the process's cgroup in each hierarchy ends with the cell's path
                rel = "/" + d.parent.name + "/" + d.name
                assert any(line.endswith(rel) for line in cgroup_lines), (rel, cgroup_lines)
        assert cell.close()
    finally:
        if sandbox.cgroups is not None:
            cleanup(sandbox.cgroups.node_dirs, set())


def test_without_a_c_compiler_the_wrapper_is_used_and_says_why(tmp_path, monkeypatch):
    source = tmp_path / "spawn.c"   # a version not built anywhere yet: it would have to be compiled
    source.write_text(SPAWN_SOURCE.read_text() + "\n/* unbuilt */\n")
    monkeypatch.setattr(sandbox, "SPAWN_SOURCE", source)
    monkeypatch.setattr(sandbox, "_helper_cache", {})
    monkeypatch.setenv("PATH", str(tmp_path))            # no cc, gcc or clang on it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert spawn_helper() == (None, "sh + setpriv wrapper (no C compiler to build pod-spawn: install cc or gcc)")
    sb = Sandbox(helper=None, spawn=spawn_helper()[1])
    assert sb.description.endswith("spawned by sh + setpriv wrapper (no C compiler to build pod-spawn: install cc "
                                   "or gcc)")
