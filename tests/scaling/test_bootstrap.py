"""pod-bootstrap: a local cluster of detached processes, a cloud cluster through the podtest driver (seed + joins),
and the ssh plan (dry run only: nothing connects anywhere)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from podnode import bootstrap
from podnode.scaling import userdata
from podnode.tokens import admin_token

from ..conftest import Client, install_script, wait_until
from ..procs_helpers import free_base
from . import podtest_driver

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "bootstrap" / "pod-bootstrap"
FAST = ["--node-arg=--election-timeout-s=0.3", "--node-arg=--kill-grace-s=1"]


def run_tool(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run the wrapper script as a user would, with this venv's python."""
    env = {**os.environ, "POD_PYTHON": sys.executable}
    return subprocess.run([str(WRAPPER), *args], capture_output=True, text=True, timeout=timeout_s, env=env)


def printed_url(stdout: str) -> str:
    match = re.search(r"POD_URL=(\S+)", stdout)
    assert match, stdout
    return match.group(1)


def pids_of(state_dir: Path) -> dict[str, int]:
    return {m["id"]: m["pid"] for m in json.loads((state_dir / "cluster.json").read_text())["members"]}


def running(pid: int, node_id: str) -> bool:
    return bootstrap.is_node_process(pid, node_id)


def kill_leftovers(state_dir: Path) -> None:
    """Test cleanup: whatever the tool recorded, stop it (no-op when already stopped)."""
    state = bootstrap.load_state(state_dir)
    if state is not None and state["mode"] == "local":
        bootstrap.stop_pids(state["members"], grace_s=5)


# ---------------------------------------------------------------------------------------------------- local


def test_local_bootstrap_is_idempotent_and_stops(tmp_path, scripts):
    state_dir = tmp_path / "state"
    port = free_base(3)
    try:
        first = run_tool("local", "--nodes", "3", "--port", str(port), "--state-dir", str(state_dir),
                         "--slots", "1", "--timeout", "60", *FAST)
        assert first.returncode == 0, first.stdout + first.stderr
        url = printed_url(first.stdout)
        assert url in {f"http://127.0.0.1:{port + i}" for i in range(3)}
        state_file = state_dir / "cluster.json"
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        state = json.loads(state_file.read_text())
        assert state["mode"] == "local" and state["status"] == "running" and len(state["secret"]) >= 40
        assert [m["url"] for m in state["members"]] == [f"http://127.0.0.1:{port + i}" for i in range(3)]
        pids = pids_of(state_dir)
        assert all(running(pid, n) for n, pid in pids.items())
        # The secret travels in the environment, never on a command line.
        for pid in pids.values():
            assert state["secret"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert (state_dir / "n1.log").exists() and (state_dir / "n1").is_dir()

        client = Client([url], admin_token(state["secret"]))
        client.ok("newActivity", name="hello",
                  installationScriptLocation=scripts.add("boot-hello.sh", install_script('echo "hi $1"')))
        wait_until(lambda: (a := client.ok("getActivityStatus", name="hello")["activity"])["status"] == "approved"
                   and sum(i["status"] == "installed" for i in a.get("installations", [])) == 3,
                   timeout_s=30, what="hello installed on all 3 nodes")
        assert {w["id"] for w in client.ok("getWorkers")["workers"]} == {"n1", "n2", "n3"}

        again = run_tool("local", "--nodes", "3", "--port", str(port), "--state-dir", str(state_dir))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout and "starting nothing" in again.stdout
        assert pids_of(state_dir) == pids and json.loads(state_file.read_text())["secret"] == state["secret"]

        stopped = run_tool("stop", "--state-dir", str(state_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_until(lambda: not any(running(pid, n) for n, pid in pids.items()), timeout_s=15, what="pids gone")
        assert json.loads(state_file.read_text())["status"] == "stopped"
    finally:
        kill_leftovers(state_dir)


def test_local_restart_keeps_the_secret(tmp_path):
    state_dir = tmp_path / "state"
    port = free_base(1)
    try:
        assert run_tool("local", "--nodes", "1", "--port", str(port), "--state-dir", str(state_dir), *FAST
                        ).returncode == 0
        before = json.loads((state_dir / "cluster.json").read_text())
        assert run_tool("stop", "--state-dir", str(state_dir)).returncode == 0
        again = run_tool("local", "--nodes", "1", "--port", str(port), "--state-dir", str(state_dir))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "no member answers" in again.stdout and "same secret" in again.stdout
        after = json.loads((state_dir / "cluster.json").read_text())
        assert after["secret"] == before["secret"] and after["status"] == "running"
        assert after["members"][0]["pid"] != before["members"][0]["pid"]
        assert bootstrap.answering(after)["leader"] == "n1"
    finally:
        kill_leftovers(state_dir)


def test_local_busy_port_is_refused(tmp_path):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = run_tool("local", "--nodes", "1", "--port", str(port), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1 and f"port {port} (n1 HTTP) is busy" in done.stderr
    assert not (tmp_path / "s" / "cluster.json").exists()


# ---------------------------------------------------------------------------------------------------- cloud


def test_cloud_bootstrap_seeds_then_joins_through_the_podtest_driver(tmp_path, capsys):
    podtest_driver.register()
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"driver": "podtest", "key": "k", "image": "pod-image", "size": "small",
                                  "driver_kwargs": {"data_dir": str(tmp_path / "cloud")}, "slots": 1,
                                  "register": "tests.scaling.podtest_driver:register"}))
    state_dir = tmp_path / "state"
    provider = None
    try:
        provider, state = bootstrap.cloud_bootstrap(bootstrap.load_provider_options(config), nodes=3,
                                                    state_dir=state_dir, timeout_s=60, config_path=str(config))
        out = capsys.readouterr().out
        url = printed_url(out)
        seed = provider.driver.created[0]
        assert url == seed.extra["http_url"] and seed.name == "pod-n1"
        seed_cmd = Path(f"/proc/{seed.extra['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"--join" not in seed_cmd and b"--peers" not in seed_cmd      # a seed: a one-node cluster
        joiner_cmd = Path(f"/proc/{provider.driver.created[1].extra['pid']}/cmdline").read_bytes().split(b"\0")
        assert joiner_cmd[joiner_cmd.index(b"--join") + 1] == url.encode()
        client = Client([url], admin_token(state["secret"]))
        workers = {w["id"]: w["status"] for w in client.ok("getWorkers")["workers"]}
        assert workers == {"n1": "up", "n2": "up", "n3": "up"}
        assert [m["server"] for m in state["members"]] == ["pod-n1", "pod-n2", "pod-n3"]
        assert all(m["url"] for m in state["members"])
        assert stat.S_IMODE((state_dir / "cluster.json").stat().st_mode) == 0o600
        for server in provider.driver.created:      # the secret is in the environment, not argv
            assert state["secret"].encode() not in Path(f"/proc/{server.extra['pid']}/cmdline").read_bytes()

        again, same = bootstrap.cloud_bootstrap(bootstrap.load_provider_options(config), nodes=3,
                                                state_dir=state_dir, timeout_s=60)
        assert again is None and same["secret"] == state["secret"]
        assert "already running" in capsys.readouterr().out
        assert len(provider.driver.created) == 3

        pids = [s.extra["pid"] for s in provider.driver.created]
        bootstrap.destroy_cloud(provider, state_dir)
        wait_until(lambda: not any(running(p, n) for p, n in zip(pids, ["n1", "n2", "n3"])), timeout_s=20,
                   what="cloud servers gone")
        assert json.loads((state_dir / "cluster.json").read_text())["status"] == "stopped"
    finally:
        if provider is not None:
            provider.driver.destroy_all()


def test_cloud_refuses_a_silent_recorded_cluster_without_force(tmp_path):
    state = bootstrap.new_state("pod", "cloud", "s3cret")
    state["members"] = [{"id": "n1", "server": "pod-n1", "url": "http://127.0.0.1:9"}]
    bootstrap.save_state(tmp_path, state)
    with pytest.raises(bootstrap.BootstrapError, match="no member answers.*--force"):
        bootstrap.cloud_bootstrap({}, nodes=3, state_dir=tmp_path)
    with pytest.raises(bootstrap.BootstrapError, match="records a cloud cluster"):
        bootstrap.existing_cluster(state, "local", False, tmp_path)
    assert bootstrap.main(["local", "--state-dir", str(tmp_path)]) == 1   # refuses: a different mode


def test_userdata_seed_has_no_join():
    script = userdata.render(node_id="n1", join_url=None, cluster_secret="s", slots=1, pod_version="0.1.0")
    assert userdata.parse(script)["POD_JOIN"] == ""
    assert 'if [ -n "$POD_JOIN" ]; then\n    args+=(--join "$POD_JOIN")' in script


def test_server_url_prefers_the_drivers_url_then_the_public_ip():
    class FakeNode:
        def __init__(self, extra, public_ips):
            self.extra, self.public_ips = extra, public_ips
    assert bootstrap.server_url(FakeNode({"http_url": "http://127.0.0.1:5"}, ["1.2.3.4"])) == "http://127.0.0.1:5"
    assert bootstrap.server_url(FakeNode({}, ["1.2.3.4"])) == "http://1.2.3.4:8080"
    assert bootstrap.server_url(FakeNode({}, ["2001:db8::1"])) == "http://[2001:db8::1]:8080"
    assert bootstrap.server_url(FakeNode({}, [])) is None
    assert bootstrap.server_url(None) is None


# ---------------------------------------------------------------------------------------------------- ssh


HOSTS = ["10.0.0.1", "10.0.0.2", "node-c.example"]
SECRET = "Zx9-secret_value_for_tests_0123456789abcdefg"


def test_ssh_plan_targets_each_host_and_keeps_the_secret_off_argv():
    plan = bootstrap.ssh_plan(HOSTS, secret=SECRET, user="admin", ssh_port=2222)
    assert len(plan) == 3
    for argv, host in zip(plan, HOSTS):
        assert argv[:3] == ["ssh", "-p", "2222"] and f"admin@{host}" in argv
        assert argv[-1] == "sudo bash -s"
        assert SECRET not in " ".join(argv)
    root = bootstrap.ssh_plan(HOSTS[:1], secret=SECRET)
    assert root[0][:3] == ["ssh", "-p", "22"] and "root@10.0.0.1" in root[0] and root[0][-1] == "bash -s"


def test_ssh_scripts_carry_host_specific_flags_env_and_unit():
    steps = bootstrap.ssh_steps(HOSTS, secret=SECRET, python="python3.11", pip_spec="podnode==9.9", slots=4)
    for i, (step, host) in enumerate(zip(steps, HOSTS)):
        script, node_id = step.stdin, f"n{i + 1}"
        others = ",".join(f"{h}:9080" for h in HOSTS if h != host)
        unit = bootstrap.unit_file(host, node_id, HOSTS, 4)
        assert f"cat > /etc/systemd/system/podnode.service <<'POD_UNIT_EOF'\n{unit}POD_UNIT_EOF" in script
        assert (f"ExecStart=/opt/pod/bin/python -m podnode --id {node_id} --http 0.0.0.0:8080 --raft {host}:9080 "
                f"--advertise-host {host} --peers {others} --data-dir /var/lib/pod --slots 4\n") in unit
        assert "EnvironmentFile=/etc/pod/env\n" in unit and SECRET not in unit and "--secret" not in unit
        assert f"POD_SECRET={SECRET}\nPOD_NODE_ID={node_id}\n" in script
        assert "umask 077\ncat > /etc/pod/env" in script and "chmod 600 /etc/pod/env" in script
        assert "python3.11 -m venv /opt/pod" in script and "/opt/pod/bin/pip install --quiet podnode==9.9" in script
        assert "systemctl enable --now podnode.service" in script
    subprocess.run(["bash", "-n"], input=steps[0].stdin, text=True, check=True)


def test_ssh_dry_run_prints_commands_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    code = bootstrap.main(["ssh", "--hosts", ",".join(HOSTS), "--user", "admin", "--ssh-port", "2200",
                           "--dry-run", "--state-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0
    for host in HOSTS:
        assert f"$ ssh -p 2200 -o BatchMode=yes -o StrictHostKeyChecking=accept-new admin@{host} 'sudo bash -s'" in out
    assert "POD_SECRET=<secret>" in out and "dry run" in out
    assert not (tmp_path / "s").exists()


def test_ssh_rejects_hosts_that_are_not_plain_names():
    with pytest.raises(bootstrap.BootstrapError, match="bad host"):
        bootstrap.ssh_plan(["10.0.0.1", "h; rm -rf /"], secret=SECRET)
    with pytest.raises(bootstrap.BootstrapError, match="twice"):
        bootstrap.ssh_plan(["a", "a"], secret=SECRET)


def test_ssh_refuses_a_silent_recorded_cluster_without_force(tmp_path, capsys):
    state = bootstrap.new_state("pod", "ssh", SECRET)
    state["members"] = [{"id": "n1", "host": "127.0.0.1", "url": "http://127.0.0.1:9"}]
    state["ssh"] = {"user": "root", "ssh_port": 22}
    bootstrap.save_state(tmp_path, state)
    assert bootstrap.main(["ssh", "--hosts", "127.0.0.1", "--state-dir", str(tmp_path)]) == 1
    assert "no member answers" in capsys.readouterr().err
