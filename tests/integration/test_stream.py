"""Live output: GET /POD/executions/ID/stream (Server-Sent Events) on real 3-node clusters, through a node that
is not the worker; resuming with Last-Event-ID; a worker SIGKILLed mid-run; `pod run --follow`, `pod execution
logs [-f]` and the progress bar of `pod run --inputs` through the real CLI."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sseclient import SSEClient

from podnode.local.cluster import LocalCluster, get_json
from podnode.local.procs import stop_popen

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

pytestmark = pytest.mark.integration

# Prints on both streams, waits for the file named by its input, prints more, exits 3.
WAITER = """echo "first line"
echo "err one" >&2
while [ ! -e "$1" ]; do sleep 0.05; done
printf 'second line \\xc3\\xa9t\\xc3\\xa9\\n'
echo "err two" >&2
exit 3"""


class Stream:
    """One SSE connection read in a thread: its events as (name, data, id), in order."""

    def __init__(self, url: str, exec_id: int, token: str, *, last_event_id: str | None = None, query: str = ""):
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(f"{url}/POD/executions/{exec_id}/stream{query}", headers=headers)
        self.resp = urllib.request.urlopen(request, timeout=60)
        self.content_type = self.resp.headers.get("Content-Type", "")
        self.events: list[tuple[str, dict, str | None]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in SSEClient(self.resp).events():
                self.events.append((event.event, json.loads(event.data), event.id))
        except BaseException as exc:  # noqa: BLE001 - reported by the test that reads it
            self.error = exc
        finally:
            self.done.set()

    def wait_end(self, timeout_s: float = 60.0) -> list[tuple[str, dict, str | None]]:
        wait_until(self.done.is_set, timeout_s=timeout_s, what="the stream to end")
        assert self.error is None, self.error
        return self.events

    def close(self) -> None:
        self.resp.close()

    def text(self, stream: str) -> str:
        return output_text(self.events, stream)


def output_text(events, stream: str) -> str:
    return "".join(d["text"] for name, d, _ in events if name == "output" and d["stream"] == stream)


@pytest.fixture(scope="module")
def stream_cluster(tmp_path_factory) -> LocalCluster:
    c = start_cluster(tmp_path_factory.mktemp("stream"), nodes=3, slots=2)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def waiter(stream_cluster, scripts) -> str:
    client = Client(stream_cluster.urls, stream_cluster.token)
    approved(client, "waiter", scripts.add("waiter.sh", install_script(WAITER)))
    return "waiter"


def start_running(client: Client, name: str, input_: str) -> dict:
    """Submit an execution and wait until it runs; its record (read without consuming it: it runs)."""
    exec_id = client.ok("newExecution", name=name, input=input_)["execution"]["id"]

    def running():
        ex = client.ok("getExecutionStatus", executionId=exec_id)["execution"]
        return ex if ex["status"] == "in progress" and ex["workerId"] else None
    return wait_until(running, what=f"execution {exec_id} running")


def other_node(cluster: LocalCluster, worker: str):
    return next(n for n in cluster.nodes if n.node_id != worker)


def test_output_arrives_before_the_end_through_another_node_and_resumes(stream_cluster, waiter, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    flag = shared_dir / "go-1"
    ex = start_running(client, waiter, str(flag))
    relay = other_node(stream_cluster, ex["workerId"])
    worker = next(n for n in stream_cluster.nodes if n.node_id == ex["workerId"])
    stream = Stream(relay.url, ex["id"], stream_cluster.token)
    local = Stream(worker.url, ex["id"], stream_cluster.token)   # and on the worker itself, from its runner
    try:
        assert stream.content_type.startswith("text/event-stream")
        for s in (stream, local):
            wait_until(lambda: s.text("stdout") == "first line\n" and s.text("stderr") == "err one\n",
                       what="the first output, before the execution ends")
            assert [e[0] for e in s.events][0] == "attempt"
            assert s.events[0][1]["workerId"] == ex["workerId"] and s.events[0][1]["attempt"] == 1
            assert "end" not in [e[0] for e in s.events]   # it still waits for the flag
        flag.touch()
        events = stream.wait_end()
        local.wait_end()
    finally:
        stream.close()
        local.close()
    for stream_name in ("stdout", "stderr"):
        assert local.text(stream_name) == stream.text(stream_name)
    assert local.events[-1] == events[-1]
    assert stream.text("stdout") == "first line\nsecond line été\n"
    assert stream.text("stderr") == "err one\nerr two\n"
    name, end, end_id = events[-1]
    assert name == "end" and end["status"] == "error" and end["exitCode"] == 3 and "stdout" not in end
    assert end_id.endswith(":end") and [e[0] for e in events].count("end") == 1
    ids = [e[2] for e in events]
    assert len(set(ids)) == len(ids), ids     # each event moves the position: no id twice

    # The stream consumed nothing: the result is still there, once, for getExecutionStatus.
    # Resuming from any event gives exactly what followed it, from any node.
    for k, (_, _, event_id) in enumerate(events[:-1]):
        node = stream_cluster.nodes[k % 3]
        again = Stream(node.url, ex["id"], stream_cluster.token, last_event_id=event_id)
        try:
            rest = again.wait_end()
        finally:
            again.close()
        for stream_name in ("stdout", "stderr"):
            assert output_text(rest, stream_name) == output_text(events[k + 1:], stream_name), (event_id, rest)
        assert rest[-1][0] == "end" and rest[-1][1] == end and rest[-1][2] == end_id
    after_end = Stream(relay.url, ex["id"], stream_cluster.token, last_event_id=end_id)
    try:
        assert after_end.wait_end() == []   # it had the last event: nothing more, nothing twice
    finally:
        after_end.close()
    final = client.ok("getExecutionStatus", executionId=ex["id"])["execution"]
    assert final["stdout"] == "first line\nsecond line été\n" and final["exitCode"] == 3
    code, body = get_json(f"{relay.url}/POD/executions/{ex['id']}/stream", token=stream_cluster.token)
    assert code == 404 and "error" in body   # read and deleted: a JSON 404 before any stream


def test_snapshot_without_follow_and_bad_requests(stream_cluster, waiter, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    flag = shared_dir / "go-2"
    ex = start_running(client, waiter, str(flag))
    url, token = other_node(stream_cluster, ex["workerId"]).url, stream_cluster.token
    base = f"{url}/POD/executions/{ex['id']}/stream"
    try:
        def snapshot():
            s = Stream(url, ex["id"], token, query="?follow=0")
            try:
                events = s.wait_end(timeout_s=20)
            finally:
                s.close()
            return events if output_text(events, "stdout") == "first line\n" else None
        events = wait_until(snapshot, what="a snapshot with the first line")
        assert events[-1][0] == "snapshot" and events[-1][1]["status"] == "in progress"
        for query, headers, code in [
            ("", {"Last-Event-ID": "nonsense"}, 400),
            ("", {"Last-Event-ID": "9:0:0"}, 400),          # an attempt it has not reached
            ("", {"Last-Event-ID": "1:0:0:end"}, 400),      # an end it has not reached
            ("?follow=maybe", {}, 400),
        ]:
            status, body = get_json(base + query, token=token, headers=headers)
            assert status == code and "error" in body, (query, headers, status, body)
        for path, code in [("/POD/executions/abc/stream", 400), ("/POD/executions/99999999/stream", 404)]:
            status, body = get_json(url + path, token=token)
            assert status == code and "error" in body, (path, status, body)
        status, body = get_json(base)   # no token
        assert status == 401 and "error" in body
        reader = client.ok("newToken", name="stream-reader", scope="read")["token"]["token"]
        status, body = get_json(base, token=reader)   # output is a result: a read token does not see it
        assert status == 403 and "submit scope" in body["error"], (status, body)
        status, body = get_json(f"{url}/internal/executions/{ex['id']}/output-from?attempt=1")  # unsigned
        assert status == 401 and "error" in body
    finally:
        flag.touch()
    assert client.ok("getExecutionStatus", executionId=ex["id"], wait=20)["execution"]["exitCode"] == 3


def test_a_client_that_disconnects_leaves_nothing_behind(stream_cluster, waiter, shared_dir):
    """Streams dropped mid-way by their clients: each relay stops (the node says so in its log, at the next
    keep-alive at the latest), the nodes go on answering, and a new stream works."""
    client = Client(stream_cluster.urls, stream_cluster.token)
    flag = shared_dir / "go-3"
    ex = start_running(client, waiter, str(flag))
    relay = other_node(stream_cluster, ex["workerId"])
    log = stream_cluster.log_dir / f"{relay.node_id}.log"
    stopped = f"stopped following execution {ex['id']}: its client has gone"
    streams = [Stream(relay.url, ex["id"], stream_cluster.token) for _ in range(5)]
    for s in streams:
        wait_until(lambda: s.text("stdout"), what="first output")
        s.close()
    wait_until(lambda: log.read_text(errors="replace").count(stopped) == 5, timeout_s=40,
               what="the node to stop relaying to the 5 clients that left")
    flag.touch()
    s = Stream(relay.url, ex["id"], stream_cluster.token)
    try:
        events = s.wait_end()
    finally:
        s.close()
    assert events[-1][1]["exitCode"] == 3 and s.text("stdout").endswith("second line été\n")
    assert log.read_text(errors="replace").count(stopped) == 5   # the one that read to the end is not "gone"
    client.ok("getExecutionStatus", executionId=ex["id"])


def test_a_terminated_execution_ends_its_stream(stream_cluster, waiter, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    ex = start_running(client, waiter, str(shared_dir / "never"))
    stream = Stream(other_node(stream_cluster, ex["workerId"]).url, ex["id"], stream_cluster.token)
    try:
        wait_until(lambda: stream.text("stdout") == "first line\n", what="the first output")
        client.ok("terminateExecution", executionId=ex["id"])
        events = stream.wait_end(timeout_s=30)
    finally:
        stream.close()
    assert events[-1][0] == "end" and events[-1][1]["status"] == "terminated"
    assert stream.text("stdout") == "first line\n" and stream.text("stderr") == "err one\n"
    client.ok("getExecutionStatus", executionId=ex["id"])


# ---- a worker lost mid-run ----------------------------------------------------------------------------
LOST_AFTER_S = 1.5
CHAOS_ARGS = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", str(LOST_AFTER_S)]


@pytest.fixture
def chaos_cluster(tmp_path):
    cluster = start_cluster(tmp_path, nodes=3, slots=2, extra_args=CHAOS_ARGS)
    yield cluster
    cluster.stop()


def test_the_stream_follows_the_execution_to_its_next_attempt(chaos_cluster, scripts):
    client = Client(chaos_cluster.urls, chaos_cluster.token)
    body = 'echo "start $POD_ATTEMPT"\nif [ "$POD_ATTEMPT" = 1 ]; then sleep 120; fi\necho "end $POD_ATTEMPT"'
    approved(client, "mover", scripts.add("mover.sh", install_script(body)), maxAttempts=2)
    ex = start_running(client, "mover", "x")
    victim = next(n for n in chaos_cluster.nodes if n.node_id == ex["workerId"])
    relay = other_node(chaos_cluster, victim.node_id)
    stream = Stream(relay.url, ex["id"], chaos_cluster.token)
    try:
        wait_until(lambda: stream.text("stdout") == "start 1\n", what="the first attempt's output")
        chaos_cluster.stop_node(victim, sig=signal.SIGKILL)
        events = stream.wait_end(timeout_s=90)
    finally:
        stream.close()
    attempts = [d for name, d, _ in events if name == "attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2], events
    assert attempts[1]["workerId"] != victim.node_id
    assert f"node {victim.node_id} was lost" in attempts[1]["message"], attempts[1]
    assert attempts[1]["message"].startswith(f"attempt 2 on {attempts[1]['workerId']} after "), attempts[1]
    second = events[[e[0] for e in events].index("attempt", 1) + 1:]
    assert output_text(second, "stdout") == "start 2\nend 2\n"
    assert events[-1][0] == "end" and events[-1][1]["status"] == "finished" and events[-1][1]["attempts"] == 2


# ---- the CLI --------------------------------------------------------------------------------------------
def pod_cmd(url: str, *args: str, cacert: str | None = None) -> list[str]:
    return [sys.executable, "-m", "podnode.cli", "--url", url, *(["--cacert", cacert] if cacert else []), *args]


def pod_env(token: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "POD_TOKEN": token}


class Lines:
    """A process's stdout read line by line in a thread (so a test can wait for a line with a deadline)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in iter(pipe.readline, ""):
            self.lines.append(line)


def follow_cli(cmd: list[str], env: dict[str, str], flag, first: list[str]) -> tuple[int, list[str], str]:
    """Run a following `pod` command: its first lines must come while main.sh still waits for `flag`; then the
    flag is made and the command read to its end. Its exit code, stdout lines and stderr."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out = Lines(proc)
        wait_until(lambda: out.lines == first, what=f"the first lines {first}, printed while main.sh still runs")
        assert proc.poll() is None
        flag.touch()
        code = proc.wait(timeout=60)
        out.thread.join(timeout=10)
        return code, out.lines, proc.stderr.read()
    finally:
        stop_popen(proc, 5.0)


def test_pod_run_follow_prints_as_it_comes_and_exits_with_the_code(stream_cluster, scripts, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    body = ('for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; done\n'
            'while [ ! -e "$1" ]; do sleep 0.05; done\necho "out 4"\nexit 3')
    approved(client, "follower", scripts.add("follower.sh", install_script(body)))
    flag = shared_dir / "go-cli"
    code, lines, stderr = follow_cli(pod_cmd(stream_cluster.urls[1], "run", "follower", str(flag), "--follow"),
                                     pod_env(stream_cluster.token), flag, ["out 1\n", "out 2\n", "out 3\n"])
    assert code == 3, stderr
    assert lines == ["out 1\n", "out 2\n", "out 3\n", "out 4\n"]
    assert stderr == "err 1\nerr 2\nerr 3\n"
    # Like pod run --wait, it read the result: the execution is gone.
    listed = client.ok("getAllExecutions", activity="follower")["executions"]
    assert listed == []


def test_pod_run_follow_gives_up_after_timeout_and_leaves_the_execution(stream_cluster, scripts, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    body = 'echo "started"\nwhile [ ! -e "$1" ]; do sleep 0.05; done\necho "late"'
    approved(client, "slowfollow", scripts.add("slowfollow.sh", install_script(body)))
    flag = shared_dir / "go-timeout"
    try:
        done = subprocess.run(pod_cmd(stream_cluster.urls[0], "run", "slowfollow", str(flag), "--follow",
                                      "--timeout", "2"), capture_output=True, text=True,
                              env=pod_env(stream_cluster.token), timeout=60)
        assert done.returncode == 124, done.stderr
        assert done.stdout == "started\n"
        assert "gave up after 2 s" in done.stderr and "goes on" in done.stderr
        # Left, not read: still there, still running.
        listed = client.ok("getAllExecutions", activity="slowfollow")["executions"]
        assert [e["status"] for e in listed] == ["in progress"]
    finally:
        flag.touch()
    final = client.ok("getExecutionStatus", executionId=listed[0]["id"], wait="30")["execution"]
    assert final["stdout"] == "started\nlate\n"


def test_pod_execution_logs(stream_cluster, waiter, shared_dir):
    client = Client(stream_cluster.urls, stream_cluster.token)
    flag = shared_dir / "go-logs"
    ex = start_running(client, waiter, str(flag))
    url, env = stream_cluster.urls[0], pod_env(stream_cluster.token)
    try:
        def logs_now():
            done = subprocess.run(pod_cmd(url, "execution", "logs", str(ex["id"])), capture_output=True, text=True,
                                  env=env, timeout=60)
            return done if done.stdout == "first line\n" else None
        now = wait_until(logs_now, what="pod execution logs with the first line")
        assert now.returncode == 0 and now.stderr == "err one\n"
        code, lines, stderr = follow_cli(pod_cmd(url, "execution", "logs", str(ex["id"]), "-f"), env, flag,
                                         ["first line\n"])
    finally:
        flag.touch()
    assert code == 3 and lines == ["first line\n", "second line été\n"] and stderr == "err one\nerr two\n"
    # logs reads nothing: the result is still there.
    assert client.ok("getExecutionStatus", executionId=ex["id"])["execution"]["exitCode"] == 3


def test_inputs_progress_bar_and_summary(stream_cluster, scripts, tmp_path):
    client = Client(stream_cluster.urls, stream_cluster.token)
    approved(client, "many", scripts.add("many.sh", install_script('sleep 0.2; [ "$1" != bad ] || exit 5; echo "$1"')))
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("".join(f"{i}\n" for i in range(12)) + "bad\n")
    env = pod_env(stream_cluster.token)
    shown = subprocess.run(pod_cmd(stream_cluster.urls[0], "run", "many", "--inputs", str(inputs), "--progress"),
                           capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 5, shown.stderr
    assert sorted(json.loads(line)["index"] for line in shown.stdout.splitlines()) == list(range(13))
    bar = shown.stderr
    assert "13/13" in bar and "exec/s" in bar, bar            # tqdm's count and rate
    assert "done 12, running 0, waiting 0, failed 1" in bar, bar
    assert "running" in bar and "waiting" in bar
    summary = bar.rstrip("\n").splitlines()[-1]
    assert summary.startswith("pod: 13 executions of many: 1 error, 12 finished; "), summary
    quiet = subprocess.run(pod_cmd(stream_cluster.urls[0], "run", "many", "--inputs", str(inputs),
                                   "--no-progress"), capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 5
    assert quiet.stderr.splitlines() == [quiet.stderr.splitlines()[-1]]   # the summary alone
    assert quiet.stderr.startswith("pod: 13 executions of many: 1 error, 12 finished; ")
    # stderr is not a terminal here: without a flag, no bar
    auto = subprocess.run(pod_cmd(stream_cluster.urls[0], "run", "many", "--inputs", str(inputs)),
                          capture_output=True, text=True, env=env, timeout=120)
    assert "exec/s" not in auto.stderr and len(auto.stderr.splitlines()) == 1



def test_pod_run_follow_over_https_with_cacert(tmp_path, scripts):
    """The stream goes over https and the CLI checks it with --cacert, the token from $POD_TOKEN; the relay
    between nodes is https too (peer_context)."""
    cluster = start_cluster(tmp_path, nodes=3, slots=1, tls=True, extra_args=FAST_RAFT + ["--no-announce"])
    try:
        client = Client(cluster.urls, cluster.token, context=cluster.ssl_context)
        approved(client, "tls-follow", scripts.add("tls-follow.sh", install_script('echo "hi $1"; echo e >&2; exit 4')))
        env = {k: v for k, v in pod_env(cluster.token).items() if k not in ("POD_CACERT", "POD_URL")}
        ca = str(cluster.tls_ca)
        for url in cluster.urls:   # through each node: some relay from the worker over https
            done = subprocess.run(pod_cmd(url, "run", "tls-follow", "there", "--follow", cacert=ca),
                                  capture_output=True, text=True, env=env, timeout=60)
            assert (done.returncode, done.stdout, done.stderr) == (4, "hi there\n", "e\n"), done
        refused = subprocess.run(pod_cmd(cluster.urls[0], "execution", "logs", "1"), capture_output=True, text=True,
                                 env=env, timeout=60)
        assert refused.returncode == 3 and "cannot verify the certificate" in refused.stderr, refused.stderr
    finally:
        cluster.stop()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=st.text(max_size=30), last_id=st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"),
                                                     max_size=40),
       follow=st.sampled_from(["0", "false", "no", "x", "", "1\x00"]))
def test_no_request_to_the_stream_gets_a_server_error(stream_cluster, ended_execution, segment, last_id, follow):
    url = urllib.parse.urlsplit(stream_cluster.urls[0])
    headers = {"Authorization": f"Bearer {stream_cluster.token}", "Last-Event-ID": last_id}
    for path in (f"/POD/executions/{urllib.parse.quote(segment, safe='')}/stream",
                 f"/POD/executions/{ended_execution}/stream?follow={urllib.parse.quote(follow)}"):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status in (200, 400, 404), (path, last_id, resp.status, body)
        if resp.status != 200:
            assert "error" in json.loads(body), body
        else:   # an ended execution: its stream ends, with the end event or nothing after an end id
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert body == b"" or b"event: end" in body, body


@pytest.fixture(scope="module")
def ended_execution(stream_cluster, waiter, shared_dir_module) -> int:
    client = Client(stream_cluster.urls, stream_cluster.token)
    flag = shared_dir_module / "go-fuzz"
    flag.touch()
    exec_id = client.ok("newExecution", name=waiter, input=str(flag))["execution"]["id"]
    wait_until(lambda: any(e["id"] == exec_id and e["status"] == "error"
                           for e in client.ok("getAllExecutions", activity=waiter)["executions"]),
               what="the execution ended (not read)")
    return exec_id


@pytest.fixture(scope="module")
def shared_dir_module():
    path = Path(tempfile.mkdtemp(prefix="pod-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
