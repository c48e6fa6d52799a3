"""The `pod` command line, run as a real subprocess against real node processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podnode.local.cluster import get_json
from tests.conftest import Client, approved, install_script, wait_until
from tests.procs_helpers import free_base, stop_pod_up

pytestmark = pytest.mark.integration

GREET = install_script('echo "hello $1"\necho "input was ${#1} characters" >&2')
FAIL3 = install_script('echo "partial output"\necho "something broke: $1" >&2\nexit 3')
SLOW = install_script("for i in $(seq 1 120); do echo tick $i; sleep 0.5; done")


def pod(*args: str, url: str | None = None, timeout_s: float = 60.0, token: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m podnode.cli [--url URL] ARGS...` (with POD_TOKEN=token if given) and capture its output."""
    cmd = [sys.executable, "-m", "podnode.cli", *(["--url", url] if url else []), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"POD_TOKEN": token} if token else {})}
    env.pop("POD_URL", None)
    if cwd is not None:   # the checkout's code, from anywhere
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd)


@pytest.fixture(scope="module", autouse=True)
def cli_token(cluster):
    """The pod CLI of these tests finds the cluster's token in $POD_TOKEN (pod() passes os.environ on)."""
    before = os.environ.get("POD_TOKEN")
    os.environ["POD_TOKEN"] = cluster.token
    yield cluster.token
    if before is None:
        os.environ.pop("POD_TOKEN", None)
    else:
        os.environ["POD_TOKEN"] = before


@pytest.fixture(scope="module")
def api(cluster) -> Client:
    return Client(cluster.urls, cluster.token)


@pytest.fixture(scope="module")
def greet(api, scripts) -> str:
    approved(api, "cli-greet", scripts.add("cli-greet.sh", GREET))
    return "cli-greet"


def test_activity_create_wait_is_approved(cluster, scripts):
    url = scripts.add("cli-create.sh", GREET)
    res = pod("activity", "create", "cli-create", "--script", url, "--wait", url=cluster.urls[0])
    assert res.returncode == 0, res.stderr
    assert "approved" in res.stdout
    status = pod("activity", "status", "cli-create", url=cluster.urls[1])
    assert status.returncode == 0 and "cli-create" in status.stdout and "approved" in status.stdout


def test_activity_create_with_its_own_limits(cluster, scripts):
    url = scripts.add("cli-limits.sh", GREET)
    res = pod("activity", "create", "cli-limits", "--script", url, "--timeout-s", "2.5", "--memory-mb", "128",
              "--max-processes", "50", "--wait", url=cluster.urls[0])
    assert res.returncode == 0, res.stderr
    assert "limits    timeoutS 2.5  memoryMB 128  maxProcesses 50" in res.stdout
    bad = pod("activity", "create", "cli-limits-bad", "--script", url, "--memory-mb", "-5", url=cluster.urls[0])
    assert bad.returncode != 0 and "memoryMB" in bad.stderr


def test_activity_create_from_a_local_path(cluster, tmp_path):
    script = tmp_path / "local.sh"
    script.write_text(GREET)
    res = pod("activity", "create", "cli-local", "--script", str(script), "--wait", url=cluster.urls[2])
    assert res.returncode == 0, res.stderr
    assert script.resolve().as_uri() in res.stdout


def test_rejected_activity_exits_1_with_the_reason(cluster, scripts):
    url = scripts.add("cli-broken.sh", "#!/usr/bin/env bash\necho 'no main here'\nexit 7\n")
    res = pod("activity", "create", "cli-broken", "--script", url, "--wait", url=cluster.urls[0])
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "rejected" in res.stderr and res.stderr.startswith("pod: ")


def test_run_wait_prints_output_and_exits_0(cluster, greet):
    res = pod("run", greet, "world wide", "--wait", url=cluster.urls[1])
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello world wide\n"
    assert res.stderr == "input was 10 characters\n"


def test_run_wait_passes_on_the_exit_code_and_stderr(cluster, api, scripts):
    approved(api, "cli-fail3", scripts.add("cli-fail3.sh", FAIL3))
    res = pod("run", "cli-fail3", "x", "--wait", url=cluster.urls[2])
    assert res.returncode == 3
    assert res.stdout == "partial output\n"
    assert res.stderr == "something broke: x\n"


def test_execution_status_of_an_error_exits_with_its_code(cluster, api, scripts):
    approved(api, "cli-fail3s", scripts.add("cli-fail3s.sh", FAIL3))
    exec_id = str(api.ok("newExecution", name="cli-fail3s", input="y")["execution"]["id"])
    res = pod("execution", "status", exec_id, "--wait", "20", url=cluster.urls[1])
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "status error  exit code 3" in res.stdout and "something broke: y" in res.stdout


def test_run_then_execution_status_wait_returns_the_output(cluster, greet):
    res = pod("run", greet, "later", url=cluster.urls[0])
    assert res.returncode == 0, res.stderr
    exec_id = re.search(r"execution (\d+)", res.stdout).group(1)
    status = pod("execution", "status", exec_id, "--wait", "20", url=cluster.urls[1])
    assert status.returncode == 0, status.stderr
    assert "finished" in status.stdout and "hello later" in status.stdout
    gone = pod("execution", "status", exec_id, url=cluster.urls[1])  # reading an ended one deleted it
    assert gone.returncode == 2 and gone.stderr.startswith("pod: ")


def test_execution_list_shows_them_without_reading_them(cluster, api, greet):
    exec_id = api.ok("newExecution", name=greet, input="listed")["execution"]["id"]
    wait_until(lambda: [e["status"] for e in api.ok("getAllExecutions")["executions"] if e["id"] == exec_id]
               == ["finished"], what="finished")
    res = pod("execution", "list", "--activity", greet, url=cluster.urls[1])
    assert res.returncode == 0, res.stderr
    row = next(line.split() for line in res.stdout.splitlines() if line.split()[:1] == [str(exec_id)])
    assert row[1:3] == [greet, "finished"] and row[5:] == ["0", "-", "-"]   # exit code 0, no queue, no reason
    assert "no executions of nothing-here" in pod("execution", "list", "--activity", "nothing-here",
                                                  url=cluster.urls[0]).stdout
    # Listing reads nothing: the result is still there for its reader.
    assert api.ok("getExecutionStatus", executionId=exec_id)["execution"]["stdout"] == "hello listed\n"


def test_execution_terminate_a_long_running_one(cluster, api, scripts):
    approved(api, "cli-slow", scripts.add("cli-slow.sh", SLOW))
    res = pod("--json", "run", "cli-slow", url=cluster.urls[0])
    assert res.returncode == 0, res.stderr
    exec_id = str(json.loads(res.stdout)["execution"]["id"])
    wait_until(lambda: api.ok("getExecutionStatus", executionId=exec_id)["execution"]["status"] == "in progress",
               what="the slow execution to start")
    running = pod("execution", "status", exec_id, url=cluster.urls[2])  # still running: not a failure
    assert running.returncode == 0 and "status in progress" in running.stdout, (running.stdout, running.stderr)
    term = pod("execution", "terminate", exec_id, url=cluster.urls[1])
    assert term.returncode == 0, term.stderr
    assert "terminated" in term.stdout
    final = pod("run", "cli-slow", "--wait", "--timeout", "1", url=cluster.urls[0])  # another one: times out
    assert final.returncode == 124 and "execution" in final.stderr
    status = pod("execution", "status", exec_id, "--wait", "20", url=cluster.urls[2])
    assert status.returncode == 143 and "status terminated" in status.stdout and "tick 1" in status.stdout
    other = re.search(r"execution (\d+)", final.stderr).group(1)
    assert pod("execution", "terminate", other, url=cluster.urls[0]).returncode == 0


def test_unknown_activity_is_exit_2_with_a_message(cluster):
    res = pod("run", "no-such-activity", "--wait", url=cluster.urls[0])
    assert res.returncode == 2
    assert res.stderr.startswith("pod: ") and "no-such-activity" in res.stderr
    assert res.stdout == ""


def test_unreachable_url_is_exit_3():
    res = pod("status", url=f"http://127.0.0.1:{_closed_port()}")
    assert res.returncode == 3
    assert res.stderr.startswith("pod: cannot reach http://127.0.0.1:")
    for hint in ("./dev.sh up", "pod up", "--url", "$POD_URL"):  # how to start a cluster, or name another node
        assert hint in res.stderr, res.stderr


def test_status_shows_the_node_and_its_role(cluster):
    leader = cluster.leader()
    res = pod("status", url=leader.url)
    assert res.returncode == 0, res.stderr
    assert leader.node_id in res.stdout and "leader" in res.stdout
    for node in cluster.nodes:
        assert node.url in res.stdout  # the workers table


def test_policy_commands_round_trip(cluster):
    url = cluster.urls[0]
    try:
        res = pod("policy", "create", "cli-grow", "minWorkers=1,maxWorkers=4", url=url)
        assert res.returncode == 0, res.stderr
        assert "minWorkers=1,maxWorkers=4" in res.stdout and "pod policy apply cli-grow" in res.stdout
        bad = pod("policy", "create", "cli-bad", "minWorkers=lots", url=url)
        assert bad.returncode == 2 and bad.stderr.startswith("pod: ") and "minWorkers" in bad.stderr
        assert pod("policy", "apply", "cli-grow", url=cluster.urls[1]).returncode == 0
        listed = pod("policy", "list", url=cluster.urls[2])
        assert listed.returncode == 0
        assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [["cli-grow", "yes"]]
        active = pod("policy", "active", "--json", url=url)
        assert json.loads(active.stdout)["policy"]["name"] == "cli-grow"
        refused = pod("policy", "delete", "cli-grow", url=url)
        assert refused.returncode == 2 and "active" in refused.stderr
    finally:
        reset = pod("policy", "reset", url=url)
    assert reset.returncode == 0 and "removed 1 policy (cli-grow)" in reset.stdout
    assert "no policy is active" in pod("policy", "active", url=cluster.urls[1]).stdout


def test_worker_list_and_a_drain_of_an_unknown_worker(cluster):
    res = pod("worker", "list", url=cluster.urls[1])
    assert res.returncode == 0, res.stderr
    for node in cluster.nodes:
        assert node.node_id in res.stdout and node.url in res.stdout
    assert "spend" in res.stdout
    bad = pod("worker", "drain", "no-such-node", url=cluster.urls[0])
    assert bad.returncode == 2 and "no-such-node" in bad.stderr and bad.stdout == ""


def test_help_lists_the_exit_codes():
    res = pod("--help")
    assert res.returncode == 0
    codes = res.stdout[res.stdout.index("exit codes:"):]
    assert re.findall(r"^  (\d+|N)  ", codes, re.M) == ["0", "1", "2", "3", "124", "130", "N"], codes
    assert "143 if it was terminated" in codes and "pod execution status" in codes


# ---- pod worker list: nodes that left, and who is connected ---------------------------------------------
def _workers_body() -> dict:
    now_ms = int(time.time() * 1000)
    node = {"slots": 2, "busy": 0, "provider": "static", "hourlyPrice": 0.0}
    return {"workers": [
        {**node, "id": "n1", "status": "up", "httpUrl": "http://h:1", "connected": True},
        {**node, "id": "n2", "status": "lost", "httpUrl": "http://h:2", "connected": False},
        {**node, "id": "w1", "status": "left", "httpUrl": "http://h:3", "connected": False,
         "leftTime": now_ms - 7200_000, "provider": "local"},
        {**node, "id": "n3", "status": "left", "httpUrl": "http://h:4", "connected": False,
         "leftTime": now_ms - 90_000},
    ], "launching": [], "launchFailures": {}, "spendPerHour": 0, "spentSoFar": 0}


def test_worker_list_counts_the_nodes_that_left_and_all_lists_them(capsys):
    from podnode.cli.cluster import show_workers

    show_workers(_workers_body())
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["n1", "n2"]
    assert not re.search(r"^(n3|w1)\s", out, re.M), out
    assert re.search(r"^left\s+2 nodes \(the last: n3, 2 min ago\); see them with: pod worker list --all$", out, re.M)
    show_workers(_workers_body(), show_left=True)
    out = capsys.readouterr().out
    left = out[out.index("left the cluster (2):"):]
    assert [line.split()[:2] for line in left.splitlines()[2:4]] == [["w1", "2"], ["n3", "2"]], out


def test_a_node_that_is_not_up_is_never_connected():
    """workers_view: a node that left or was lost is not connected even when its Raft address answers (a node
    started later may have the same address); up and draining ones are when reachable, and this node always."""
    from podnode.api import views

    nodes = [{"id": f"n{i}", "httpUrl": f"http://h:{i}", "raftAddr": f"h:{9000 + i}", "slots": 2, "status": status,
              "leftAt": 100.0, "lostAt": 200.0} for i, status in enumerate(["up", "draining", "left", "lost", "up"], 1)]
    reachable = {"h:9001", "h:9002", "h:9003", "h:9004"}            # n5 is up but cannot be reached
    view = views.workers(nodes, busy={}, launches={}, launch_failures={}, spend_per_hour=0.0, spent_so_far=0.0,
                         this_node="n1", peer_connected=lambda addr: addr in reachable)
    workers = {w["id"]: w for w in view["workers"]}
    assert {n: w["connected"] for n, w in workers.items()} == {
        "n1": True, "n2": True, "n3": False, "n4": False, "n5": False}
    assert workers["n3"]["leftTime"] == 100_000 and "leftTime" not in workers["n4"]
    assert workers["n4"]["lostTime"] == 200_000 and "lostTime" not in workers["n3"]


# ---- pod up -------------------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_leader(url: str, token: str) -> bool:
    try:
        code, body = get_json(url + "/status", timeout_s=1.0, token=token)
    except OSError:
        return False
    return code == 200 and bool(body.get("leader"))


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_pod_up_runs_a_cluster_until_ctrl_c(tmp_path: Path):
    base = free_base(3)
    out = tmp_path / "up.out"
    cmd = [sys.executable, "-m", "podnode.cli", "up", "--nodes", "3", "--port", str(base),
           "--data-dir", str(tmp_path / "data"), "--slots", "1"]
    with open(out, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: "POD is up" in out.read_text(), timeout_s=60, what=f"pod up; output {out}")
        urls = re.findall(r"^n\d+\s+(http://\S+)", out.read_text(), re.M)
        assert urls == [f"http://127.0.0.1:{base + i}" for i in range(3)], out.read_text()
        assert "(leader)" in out.read_text()
        token = (tmp_path / "data" / "token").read_text().strip()
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "data").iterdir() if p.is_file()}
        assert modes == {"n1.log": 0o600, "n2.log": 0o600, "n3.log": 0o600, "pod-up.lock": 0o600,
                         "secret": 0o600, "token": 0o600, "urls": 0o600}, modes
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o711     # others pass through, never list
        assert "token in" in out.read_text() and token not in out.read_text()   # its path is shown, never itself
        wait_until(lambda: all(_has_leader(u, token) for u in urls), timeout_s=30, what="every node to know a leader")
        clash = pod("up", "--nodes", "1", "--port", str(base), "--data-dir", str(tmp_path / "clash"))
        assert clash.returncode == 2 and str(base) in clash.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, out.read_text()
        ports = [base + i for i in range(3)] + [base + 1000 + i for i in range(3)]
        wait_until(lambda: all(_port_closed(p) for p in ports), timeout_s=10, what="the node ports to close")
    finally:
        stop_pod_up(proc, tmp_path / "data", ask=signal.SIGTERM)   # after a failure: it and its nodes are gone


# ---- retries ------------------------------------------------------------------------------------------
def test_run_retries_503_with_the_same_request_id():
    """A stub node answers 503 twice, then accepts: the CLI retries with one requestId, so one execution."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    seen: list[dict] = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self):
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"]))
                                                  .decode()).items()}
            seen.append(form)
            busy = len(seen) <= 2
            body = json.dumps({"error": "no leader yet"} if busy else {"execution": {
                "id": 7, "stdin": form.get("input", ""), "status": "waiting", "activityId": 1,
                "activityName": form["name"]}}).encode()
            self.send_response(503 if busy else 200)
            if busy:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = pod("run", "greet", "in put", url=f"http://127.0.0.1:{server.server_address[1]}", timeout_s=30)
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 0, res.stderr
    assert "execution 7" in res.stdout
    assert len(seen) == 3 and len({s["requestId"] for s in seen}) == 1
    assert all(s["input"] == "in put" and s["action"] == "newExecution" for s in seen)
