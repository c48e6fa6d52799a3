"""The sandbox's pure parts: limits, the environment, cgroup paths and detection, the wrapper's argv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from podnode.config import NodeConfig
from podnode.exec.sandbox import (
    SANE_PATH,
    CgroupV1,
    CgroupV2,
    Limits,
    RunAs,
    build_env,
    cgroup_name,
    detect_cgroups,
    mounts,
    node_limits,
    own_cgroup,
    sweep_stale,
    wrapper_argv,
)

MOUNTS = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
proc /proc proc rw 0 0
"""
SELF_CGROUP = "8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n"


def test_limits_parse_zero_is_none_and_negative_is_refused():
    assert Limits.parse(timeout_s=0, memory_mb=0, max_processes=0) == Limits()
    assert Limits.parse(timeout_s=2, memory_mb=64, max_processes=10) == Limits(2.0, 64, 10)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits.parse(memory_mb=-1)


def test_an_activity_value_overrides_the_default_and_only_that():
    defaults = Limits(timeout_s=60.0, memory_mb=512, max_processes=100)
    assert Limits(memory_mb=64).over(defaults) == Limits(timeout_s=60.0, memory_mb=64, max_processes=100)
    assert Limits().over(defaults) == defaults


def test_node_limits_come_from_the_config_and_bad_ones_are_refused():
    cfg = NodeConfig(node_id="n1", exec_timeout_s=5, exec_memory_mb=0, exec_max_processes=7)
    assert node_limits(cfg) == Limits(timeout_s=5.0, memory_mb=None, max_processes=7)
    with pytest.raises(ValueError, match="exec_memory_mb"):
        NodeConfig(node_id="n1", exec_memory_mb=-5)
    with pytest.raises(ValueError, match="cgroups"):
        NodeConfig(node_id="n1", cgroups="v3")


def test_the_environment_is_built_from_nothing_of_the_node(monkeypatch):
    monkeypatch.setenv("POD_SECRET", "s")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    env = build_env(Path("/data/activities/a"), {"POD_ACTIVITY": "a", "POD_ATTEMPT": 2})
    assert env == {"PATH": SANE_PATH, "HOME": "/data/activities/a", "LANG": "de_DE.UTF-8",
                   "POD_ACTIVITY": "a", "POD_ATTEMPT": "2"}
    monkeypatch.delenv("LANG")
    assert build_env(Path("/x"), {})["LANG"] == "C.UTF-8"


def test_cgroup_paths():
    assert cgroup_name("n1", 42) == "pod-n1-42"
    assert cgroup_name("a/../b c", 1) == "pod-a_.._b_c-1"
    assert own_cgroup(SELF_CGROUP, v2=False, controller="memory") == "/process_api/abc"
    assert own_cgroup(SELF_CGROUP, v2=False, controller="cpuacct") == "/x"
    assert own_cgroup(SELF_CGROUP, v2=True) == "/"
    assert own_cgroup("", v2=False, controller="pids") == "/"
    assert [(m, t) for m, t, _ in mounts(MOUNTS)] == [("/sys/fs/cgroup/memory", "cgroup"),
                                                      ("/sys/fs/cgroup/pids", "cgroup"),
                                                      ("/sys/fs/cgroup/unified", "cgroup2")]


def test_detection_says_why_when_nothing_fits():
    assert detect_cgroups("none", "pod-n1-1") == (None, "cgroups off (--cgroups none)")
    backend, why = detect_cgroups("auto", "pod-n1-1", mounts_text="proc /proc proc rw 0 0\n", self_cgroup="")
    assert backend is None and "no cgroup2 mount" in why and "no cgroup v1 pids hierarchy" in why
    with pytest.raises(ValueError):
        detect_cgroups("v9", "pod-n1-1", mounts_text="", self_cgroup="")


def test_v2_cells_get_memory_max_and_pids_max(tmp_path):
    node = tmp_path / "pod" / "pod-n1-1"
    node.mkdir(parents=True)
    cell = CgroupV2([node]).create("exec-3-1", Limits(memory_mb=64, max_processes=10))
    assert cell == [node / "exec-3-1"]
    assert (cell[0] / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (cell[0] / "pids.max").read_text() == "10"
    assert CgroupV2([node]).procs_files(cell) == [node / "exec-3-1" / "cgroup.procs"]


def test_v1_cells_get_a_pids_and_a_memory_directory(tmp_path):
    dirs = [tmp_path / "pids" / "pod-n1-1", tmp_path / "memory" / "x" / "pod-n1-1"]
    for d in dirs:
        d.mkdir(parents=True)
    cell = CgroupV1(dirs).create("install-a", Limits(memory_mb=1, max_processes=5))
    assert cell == [d / "install-a" for d in dirs]
    assert (cell[0] / "pids.max").read_text() == "5"
    assert (cell[1] / "memory.limit_in_bytes").read_text() == str(1024 * 1024)
    assert CgroupV1(dirs).remove(cell) is False   # regular files in them: not removable, and says so


def test_the_wrapper_passes_paths_and_input_as_arguments_never_as_script():
    run_as = RunAs("pod", 999, 995)
    argv = wrapper_argv(["./main.sh", "$(touch x)"], procs_files=[Path("/cg/a b/cgroup.procs")], rlimits=None,
                        run_as=run_as, setpriv="/usr/bin/setpriv", as_root=True)
    assert argv[:2] == ["/bin/sh", "-c"] and "main.sh" not in argv[2] and "/cg/" not in argv[2]
    assert argv[3:] == ["pod-sandbox", "/cg/a b/cgroup.procs", "/usr/bin/setpriv", "--reuid=999", "--regid=995",
                        "--clear-groups", "--no-new-privs", "--", "./main.sh", "$(touch x)"]
    assert wrapper_argv(["./main.sh"], procs_files=[], rlimits=None, run_as=None, setpriv=None,
                        as_root=False) == ["./main.sh"]


def test_the_wrapper_sets_rlimits_without_a_cgroup():
    argv = wrapper_argv(["sh", "-c", "ulimit -v; ulimit -p"], procs_files=[], rlimits=Limits(memory_mb=100,
                        max_processes=50), run_as=None, setpriv=None, as_root=False)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(100 * 1024), "50"]


def test_a_dead_nodes_cgroup_directories_are_swept(tmp_path):
    mine = tmp_path / "pids" / "pod-n1-1"
    dead = tmp_path / "pids" / "pod-n2-999999999"            # no such process
    alive_other = tmp_path / "pids" / "other"
    for d in (mine, dead / "exec-1-1", alive_other):
        d.mkdir(parents=True)
    assert sweep_stale([mine]) == [dead]
    assert not dead.exists() and mine.exists() and alive_other.exists()


def test_cells_are_reused_and_limits_rewritten_only_when_they_change(tmp_path):
    node = tmp_path / "pod-n1-1"
    node.mkdir()
    cg = CgroupV2([node])
    name, dirs = cg.acquire(Limits(memory_mb=64, max_processes=10))
    (dirs[0] / "cgroup.procs").write_text("")
    assert cg.release(name, dirs)                      # empty: kept
    (dirs[0] / "pids.max").write_text("sentinel")
    again, dirs2 = cg.acquire(Limits(memory_mb=32, max_processes=10))
    assert again == name and dirs2 == dirs
    assert (dirs[0] / "memory.max").read_text() == str(32 * 1024 * 1024)
    assert (dirs[0] / "pids.max").read_text() == "sentinel"   # unchanged limit: not written again
    (dirs[0] / "cgroup.procs").write_text("999999999\n")      # a process still in it
    assert not cg.release(name, dirs)
    other, _ = cg.acquire(Limits())
    assert other != name


def test_an_empty_v2_cell_is_not_killed_and_one_seen_empty_is_kept_without_reading_again(tmp_path):
    node = tmp_path / "pod-n1-1"
    node.mkdir()
    cg = CgroupV2([node])
    name, dirs = cg.acquire(Limits())
    assert cg.cell_procs(name) == [str(dirs[0] / "cgroup.procs")]
    (dirs[0] / "cgroup.procs").write_text("")
    assert cg.kill(dirs) == 0 and not (dirs[0] / "cgroup.kill").exists()   # nothing in it: nothing written
    (dirs[0] / "cgroup.procs").write_text("999999999\n")
    assert not cg.release(name, dirs)                  # looked, and a process is still there
    assert cg.release(name, dirs, empty=True)          # the caller saw it empty after main's exit: kept as is
    assert cg.acquire(Limits()) == (name, dirs)        # same limits: reused without writing or joining paths
