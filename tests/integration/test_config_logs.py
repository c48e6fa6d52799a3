"""A real podnode configured by a TOML file, the environment and flags (each over the one before), seen through
/status; and nodes logging JSON through a whole workflow: every line an object with its fields, the ids at the
important sites, and neither the cluster secret nor a token anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnode.cluster_secret import new_secret
from podnode.local.cluster import get_json, open_private_log
from podnode.local.procs import free_ports, stop_popen
from podnode.tokens import admin_token

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until
from ..procs_helpers import stop_pod_up
from .test_pod_up import PodUp, create_activity, read_when_ended
from .test_workflow import run_to_end

pytestmark = pytest.mark.integration
FIELDS = ("time", "level", "node", "event", "logger")


def json_lines(path: Path) -> list[dict]:
    """Every line of a node's log, each of which must be a JSON object with the fields."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path}:{number} is not JSON: {line[:300]!r}") from None
        assert isinstance(entry, dict) and all(entry.get(f) for f in FIELDS if f != "node"), (path, number, entry)
        assert "node" in entry, (path, number, entry)
        entries.append(entry)
    return entries


def workflow(client: Client, scripts, name: str) -> dict:
    url = scripts.add(f"{name}.sh", install_script('echo "out $1"; echo "err" >&2'))
    approved(client, name, url)
    started = client.ok("newExecution", name=name, input="x y")["execution"]
    done = run_to_end(client, started["id"])
    assert done["status"] == "finished" and done["stdout"] == "out x y\n", done
    return started


@pytest.fixture
def configured_node(tmp_path):
    """One podnode: most settings and the secret in pod.toml (600), POD_SLOTS and POD_CLUSTER_NAME over it, --id
    over the file's id. Yields (node URL, secret, log path); always stopped."""
    http, raft = free_ports(2)
    secret = new_secret()
    conf = tmp_path / "pod.toml"
    conf.write_text(f'id = "from-file"\nhttp = "127.0.0.1:{http}"\nraft = "127.0.0.1:{raft}"\nslots = 2\n'
                    f'secret = "{secret}"\ndata_dir = "{tmp_path / "data"}"\nlog_format = "json"\nannounce = false\n'
                    'election_timeout_s = 0.3\nkill_grace_s = 1\ncluster_name = "from-file"\n')
    conf.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POD_")}
    env.update(POD_SLOTS="3", POD_CLUSTER_NAME="from-env")
    log_path = tmp_path / "node.log"
    with open_private_log(log_path) as out:
        proc = subprocess.Popen([sys.executable, "-m", "podnode", "--config", str(conf), "--id", "n1"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    try:
        yield f"http://127.0.0.1:{http}", secret, log_path, proc
    finally:
        stop_popen(proc, 15.0)


def test_a_node_runs_with_the_file_the_environment_and_the_flags(configured_node, scripts):
    url, secret, log_path, proc = configured_node
    token = admin_token(secret)

    def leading():
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            code, body = get_json(url + "/status", token=token)
        except OSError:
            return None
        return body if code == 200 and body.get("role") == "leader" else None
    status = wait_until(leading, timeout_s=30, what="the configured node leads")
    assert status["node"] == "n1"                       # the flag over the file's id
    assert status["slots"]["total"] == 3                 # POD_SLOTS over the file's 2
    assert status["httpUrl"] == url                      # the file's http
    assert get_json(url + "/status")[0] == 401           # the file's secret made the token: none is refused

    workflow(Client([url], token), scripts, "cfgjson")
    stop_popen(proc, 15.0)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    entries = json_lines(log_path)
    assert {e["node"] for e in entries} == {"n1"}
    text = log_path.read_text()
    assert secret not in text and token not in text
    assert any(e["event"] == "this node leads the cluster now" and e.get("leader") == "n1" for e in entries)


def test_json_logs_of_a_cluster_through_a_workflow_hold_the_ids_and_no_secret(tmp_path, scripts):
    cluster = start_cluster(tmp_path, nodes=3, slots=2, extra_args=[*FAST_RAFT, "--log-format", "json"])
    try:
        client = Client(cluster.urls, cluster.token)
        started = workflow(client, scripts, "clusterjson")
        created = client.ok("newToken", name="ops", scope="read")
        other_token = created["token"]["token"]
        for url in cluster.urls:   # the new token used on every node (once it has applied it)
            wait_until(lambda: get_json(url + "/status", token=other_token)[0] == 200, what=f"{url} takes it")
        for node in cluster.nodes:   # each node's manager notes the leader on its own loop: a loaded one may be late
            log = cluster.log_dir / f"{node.node_id}.log"
            wait_until(lambda: '"the leader is ' in log.read_text(), what=f"{node.node_id} logging its leader")
    finally:
        cluster.stop()
    entries, texts = [], []
    for node in cluster.nodes:
        path = cluster.log_dir / f"{node.node_id}.log"
        texts.append(path.read_text())
        node_entries = json_lines(path)
        assert {e["node"] for e in node_entries} == {node.node_id}
        entries += node_entries
    for text in texts:
        assert cluster.secret not in text and cluster.token not in text and other_token not in text
    ran = [e for e in entries if e.get("execution") == started["id"]]
    assert {e["event"].split(" ", 2)[2].split(":")[0].split(" (")[0] for e in ran} >= {"started", "ended"}, ran
    assert all(e["activity"] == "clusterjson" and e["attempt"] == 1 for e in ran)
    installs = [e for e in entries if e.get("activity") == "clusterjson" and e["event"].startswith("install of")]
    assert len(installs) == 3 and all(e["ok"] is True for e in installs)
    assert sum(e["event"] == "this node leads the cluster now" for e in entries) >= 1
    saw_leader = {e["node"] for e in entries if e.get("leader") and e["event"] == f"the leader is {e['leader']}"}
    assert saw_leader == {"n1", "n2", "n3"}


class JsonPodUp(PodUp):
    """`pod up --log-format json`."""

    def start(self) -> JsonPodUp:
        self.runs += 1
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podnode.cli", "up", "--port", str(self.base), "--data-dir",
                 str(self.data_dir), "--nodes", str(self.nodes), "--slots", str(self.slots), "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self


def test_pod_up_log_format_json_reaches_its_nodes(tmp_path):
    up = JsonPodUp(tmp_path / "pod-data", nodes=1, slots=1)
    try:
        up.start().wait_up()
        create_activity(up, tmp_path, "upjson", 'echo "hi $1"')
        exec_id = up.ok("newExecution", name="upjson", input="there")["execution"]["id"]
        assert read_when_ended(up, exec_id)["stdout"] == "hi there\n"
        up.stop()
    finally:
        stop_pod_up(up.proc, up.data_dir)
    entries = json_lines(up.data_dir / "n1.log")
    assert {e["node"] for e in entries} == {"n1"}
    assert [e["execution"] for e in entries if e.get("execution") == exec_id and "started" in e["event"]] == [exec_id]
    secret = (up.data_dir / "secret").read_text().strip()
    assert secret not in (up.data_dir / "n1.log").read_text() and up.token not in (up.data_dir / "n1.log").read_text()
