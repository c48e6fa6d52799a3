"""newExecution&wait=S against real node processes: the answer is the finished execution with its output, handed
over once (a later read is 404); ended too late, it stays for any reader; a client that leaves, a repeated requestId,
a bulk reader and the loss of the collecting node never lose or duplicate a result."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import urllib.parse
import uuid
from typing import Any

import pytest

from podnode.local.cluster import LocalCluster

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

pytestmark = pytest.mark.integration

# A node is lost 1.5 s after the leader last reached it (the last test kills one).
ARGS = [*FAST_RAFT, "--node-lost-after-s", "1.5"]
ECHO = install_script('echo "out $1"; if [ "$1" = fail ]; then exit 3; fi')
SLEEPY = install_script('sleep "${1%%-*}"; echo "slept $1"')   # input "S-tag": sleeps S seconds
TERMINAL = {"finished", "error", "terminated"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> LocalCluster:
    c = start_cluster(tmp_path_factory.mktemp("wait-cluster"), nodes=3, slots=2, extra_args=ARGS)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def client(cluster) -> Client:
    return Client(cluster.urls, cluster.token)


@pytest.fixture(scope="module")
def echo(client, scripts) -> str:
    approved(client, "w-echo", scripts.add("w-echo.sh", ECHO))
    return "w-echo"


@pytest.fixture(scope="module")
def sleepy(client, scripts) -> str:
    approved(client, "w-sleepy", scripts.add("w-sleepy.sh", SLEEPY))
    return "w-sleepy"


def rid() -> str:
    return uuid.uuid4().hex


def status_of(client: Client, node: int, exec_id: int, wait: float = 0) -> tuple[int, dict]:
    return client.call("getExecutionStatus", node, executionId=exec_id, wait=wait)


def gone(client: Client, node: int, exec_id: int) -> None:
    """The execution is deleted (handed over): reads answer 404, never its result again. A read before the
    collector's settle is committed waits for it and then answers 404 too (409 only if it took over 2 s). A node
    that has not applied the end yet answers the execution still running (a read through another node than the
    one that answered may lag behind it), never with its result."""
    def check() -> bool:
        code, body = status_of(client, node, exec_id)
        if code == 200:
            assert body["execution"]["status"] not in TERMINAL, body   # never the result a second time
            return False
        assert code in (404, 409), (code, body)
        return code == 404
    wait_until(check, timeout_s=10, interval_s=0.05, what=f"execution {exec_id} deleted")


def id_of(client: Client, node: int, name: str, input: str, request_id: str) -> int:
    """The id of the execution a (still waiting) request created: the same requestId without wait answers it."""
    body = client.ok("newExecution", node, name=name, input=input, requestId=request_id)
    return body["execution"]["id"]


def read_result(client: Client, node: int, exec_id: int, timeout_s: float = 30) -> dict:
    """Read the ended execution through the node, waiting server-side; while another node still collects it, a
    read may answer 409 (it is being handed over or released): read again."""
    def check() -> dict | None:
        code, body = status_of(client, node, exec_id, wait=10)
        assert code in (200, 409), (code, body)
        return body["execution"] if code == 200 and body["execution"]["status"] in TERMINAL else None
    return wait_until(check, timeout_s=timeout_s, interval_s=0.05, what=f"execution {exec_id}'s result")


class Background:
    """One HTTP call in a thread: its (code, body), or the exception it raised."""

    def __init__(self, fn, *args: Any, **kwargs: Any):
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except Exception as exc:   # e.g. the node it asked was killed
            self.result = exc

    def join(self, timeout_s: float = 30) -> Any:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the call did not return in time"
        return self.result


@pytest.mark.parametrize("node", [0, 1, 2])
def test_wait_answers_the_result_once_through_each_node(client, echo, node):
    for word, status, code in (("hello", "finished", 0), ("fail", "error", 3)):
        body = client.ok("newExecution", node, name=echo, input=word, wait=20)
        ex = body["execution"]
        assert (ex["status"], ex["stdout"], ex["exitCode"]) == (status, f"out {word}\n", code), ex
        assert ex["stdin"] == word and ex["activityName"] == echo and ex["finishTime"]
        gone(client, (node + 1) % 3, ex["id"])
        gone(client, node, ex["id"])


def test_too_short_a_wait_answers_the_running_one_for_any_reader(client, sleepy):
    body = client.ok("newExecution", 0, name=sleepy, input="3-b", wait=0.5)
    ex = body["execution"]
    assert ex["status"] in ("waiting", "in progress"), ex
    assert ex["stdout"] == "" and ex["exitCode"] is None
    result = read_result(client, 1, ex["id"])
    assert (result["status"], result["stdout"]) == ("finished", "slept 3-b\n")
    gone(client, 2, ex["id"])


def test_a_client_that_leaves_mid_wait_loses_nothing(cluster, client, sleepy):
    request_id, word = rid(), "2-c"
    url = urllib.parse.urlsplit(cluster.urls[0])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        query = urllib.parse.urlencode({"action": "newExecution", "name": sleepy, "input": word, "wait": 20,
                                        "requestId": request_id})
        conn.request("GET", f"/POD/?{query}", headers={"Authorization": f"Bearer {cluster.token}"})
        exec_id = wait_until(lambda: id_of(client, 1, sleepy, word, request_id), what="the execution created")
        wait_until(lambda: status_of(client, 1, exec_id)[1]["execution"]["status"] == "in progress",
                   what="it runs")
    finally:
        conn.close()   # before the end: the waiting request's client is gone
    result = read_result(client, 2, exec_id)
    assert (result["id"], result["status"], result["stdout"]) == (exec_id, "finished", "slept 2-c\n")
    gone(client, 1, exec_id)


def test_a_reader_that_leaves_mid_wait_consumes_nothing(cluster, client, sleepy):
    """getExecutionStatus&wait (what `pod run --wait` long-polls with past its first wait) whose client leaves
    before the end: reading would consume a result written to a closed connection. It stays for the next reader."""
    word = "2-r"
    exec_id = client.ok("newExecution", 0, name=sleepy, input=word)["execution"]["id"]
    url = urllib.parse.urlsplit(cluster.urls[1])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        query = urllib.parse.urlencode({"action": "getExecutionStatus", "executionId": exec_id, "wait": 20})
        conn.request("GET", f"/POD/?{query}", headers={"Authorization": f"Bearer {cluster.token}"})
        wait_until(lambda: status_of(client, 2, exec_id)[1]["execution"]["status"] == "in progress",
                   what="it runs")
    finally:
        conn.close()   # before the end: the waiting reader's client is gone
    result = read_result(client, 2, exec_id)
    assert (result["id"], result["status"], result["stdout"]) == (exec_id, "finished", f"slept {word}\n")
    gone(client, 0, exec_id)


@pytest.mark.parametrize("nodes", [(0, 0), (0, 1)], ids=["same-node", "two-nodes"])
def test_a_repeated_request_id_hands_the_output_over_once(client, sleepy, nodes):
    request_id, word = rid(), "1-d"
    calls = [Background(client.call, "newExecution", n, name=sleepy, input=word, wait=20, requestId=request_id)
             for n in nodes]
    answers = [c.join() for c in calls]
    assert all(not isinstance(a, Exception) for a in answers), answers
    with_output = [body for code, body in answers if code == 200 and body["execution"].get("stdout")]
    assert len(with_output) == 1, answers
    assert with_output[0]["execution"]["stdout"] == "slept 1-d\n"
    for code, body in answers:
        if body is not with_output[0]:
            assert code in (200, 404, 409), (code, body)
            if code == 200:
                assert "stdout" not in body["execution"] or body["execution"]["stdout"] == "", body
            else:
                assert body.get("error"), body
    gone(client, 2, with_output[0]["execution"]["id"])


def test_a_bulk_reader_does_not_take_a_collected_result(client, scripts):
    name = "w-bulk"
    approved(client, name, scripts.add(f"{name}.sh", SLEEPY))
    waiting = Background(client.call, "newExecution", 0, name=name, input="1-f", wait=20)
    # Reads the next ended executions of the activity, waiting up to 6 s for one: the collected one ends
    # meanwhile (and is handed to its request), and is not for it: it goes on waiting.
    start = time.monotonic()
    code, bulk = client.call("getExecutionResults", 1, activity=name, wait=6)
    assert code == 200 and bulk["executions"] == [], bulk
    assert time.monotonic() - start > 5.5, "the bulk read saw the collected execution as one for it"
    assert not waiting.thread.is_alive(), "the collected execution ended meanwhile"
    code, body = waiting.join()
    assert code == 200 and body["execution"]["stdout"] == "slept 1-f\n", body
    code, bulk = client.call("getExecutionResults", 2, activity=name)
    assert code == 200 and bulk["executions"] == [], bulk


def test_the_collector_killed_mid_wait_loses_nothing(cluster, client, sleepy):
    """Runs last in this module: it kills n3. Four requests wait through n3 (two slots): at least two of their
    executions run on other nodes; after n3 is lost, every result is read through a surviving node, once."""
    victim = cluster.nodes[2]
    words = [f"6-e{i}" for i in range(4)]
    request_ids = [rid() for _ in words]
    calls = [Background(client.call, "newExecution", 2, name=sleepy, input=w, wait=30, requestId=r)
             for w, r in zip(words, request_ids, strict=True)]
    ids = [wait_until(lambda w=w, r=r: id_of(client, 0, sleepy, w, r), what="created")
           for w, r in zip(words, request_ids, strict=True)]

    def all_running() -> list[dict] | None:
        records = [status_of(client, 0, i)[1]["execution"] for i in ids]
        return records if all(r["status"] == "in progress" for r in records) else None
    running = wait_until(all_running, timeout_s=15, what="all four running")
    assert sum(r["workerId"] != victim.node_id for r in running) >= 2, running
    cluster.stop_node(victim, sig=signal.SIGKILL)
    for call in calls:
        assert isinstance(call.join(), Exception), "their connection to the killed node broke"
    survivors = Client(cluster.urls[:2], cluster.token)
    for exec_id, word in zip(ids, words, strict=True):
        result = read_result(survivors, exec_id % 2, exec_id, timeout_s=30)
        assert (result["status"], result["stdout"]) == ("finished", f"slept {word}\n"), result
        gone(survivors, (exec_id + 1) % 2, exec_id)
