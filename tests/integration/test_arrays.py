"""Arrays against real node processes: newExecutions (all or none, ids in order, idempotent, quotas, limits),
getExecutionResults (by ids and by activity, each result handed over once), and `pod run --inputs`."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest

from podnode.api.array_actions import MAX_ARRAY, MAX_JSON_BODY_BYTES
from podnode.local.cluster import LocalCluster, get_json

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until
from .test_cli import pod

pytestmark = pytest.mark.integration

ECHO = install_script('echo "out $1"; echo "err $1" >&2')
TERMINAL = {"finished", "error", "terminated"}


def post_json(cluster: LocalCluster, body: dict, node: int = 0, token: str | None = None) -> tuple[int, dict]:
    """POST a JSON body to the action API (the action in the body), with the cluster's token unless given."""
    return get_json(f"{cluster.urls[node]}/POD/", timeout_s=60.0, token=token or cluster.token,
                    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def submit(cluster: LocalCluster, name: str, inputs: list, node: int = 0, **extra) -> tuple[int, dict]:
    return post_json(cluster, {"action": "newExecutions", "name": name, "inputs": inputs, **extra}, node)


def all_ids(client: Client) -> dict[int, str]:
    return {e["id"]: e["status"] for e in client.ok("getAllExecutions")["executions"]}


def read_all(cluster: LocalCluster, ids: list[int], node: int = 1, timeout_s: float = 60.0) -> dict[int, dict]:
    """Read the ids' results in bulk (server-side waits) until every one is handed over; by id."""
    results: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < len(ids):
        assert time.monotonic() < deadline, f"only {len(results)} of {len(ids)} results within {timeout_s} s"
        left = [i for i in ids if i not in results]
        code, body = post_json(cluster, {"action": "getExecutionResults", "executionIds": left, "wait": 5}, node)
        assert code == 200, body
        assert not body["notFound"], body
        for ex in body["executions"]:
            assert ex["id"] not in results, f"handed over twice: {ex}"
            results[ex["id"]] = ex
    return results


@pytest.fixture(scope="module")
def echo(cluster, scripts) -> str:
    approved(Client(cluster.urls, cluster.token), "arr-echo", scripts.add("arr-echo.sh", ECHO))
    return "arr-echo"


def test_an_array_runs_every_input_and_answers_ids_in_input_order(cluster, echo):
    inputs = [f"in-{i}" for i in range(25)] + ["", "with space", "ünïcode"]
    code, body = submit(cluster, echo, inputs, node=2)
    assert code == 200, body
    ids = body["executionIds"]
    assert len(ids) == len(inputs) == body["count"] and ids == sorted(ids)
    results = read_all(cluster, ids)
    for exec_id, given in zip(ids, inputs):
        ex = results[exec_id]
        assert ex["status"] == "finished" and ex["stdin"] == given, ex
        assert ex["stdout"] == f"out {given}\n" and ex["stderr"] == f"err {given}\n"
    # each was handed over once: read again, they are gone
    code, again = post_json(cluster, {"action": "getExecutionResults", "executionIds": ids[:3]})
    assert code == 200 and again["executions"] == [] and again["notFound"] == ids[:3]


def test_the_form_variant_takes_inputs_as_json_text(cluster, echo):
    client = Client(cluster.urls, cluster.token)
    body = client.ok("newExecutions", name=echo, inputs=json.dumps(["f1", "f2"]))
    results = read_all(cluster, body["executionIds"])
    assert sorted(r["stdout"] for r in results.values()) == ["out f1\n", "out f2\n"]
    ids = ",".join(map(str, body["executionIds"]))
    code, gone = client.call("getExecutionResults", executionIds=ids)   # the comma form
    assert code == 200 and gone["notFound"] == body["executionIds"]


def test_the_same_request_id_answers_the_same_ids(cluster, echo):
    client = Client(cluster.urls, cluster.token)
    rid = uuid.uuid4().hex
    code, first = submit(cluster, echo, ["a", "b", "c"], node=0, requestId=rid)
    assert code == 200, first
    before = all_ids(client)
    code, again = submit(cluster, echo, ["a", "b", "c"], node=1, requestId=rid)
    assert code == 200 and again["executionIds"] == first["executionIds"] and again["duplicate"] is True
    assert set(all_ids(client)) <= set(before)   # nothing new (some may have been read meanwhile: none here)
    read_all(cluster, first["executionIds"])


def test_one_bad_input_refuses_the_whole_array_and_changes_nothing(cluster, echo):
    client = Client(cluster.urls, cluster.token)
    before = all_ids(client)
    too_big = "x" * (64 * 1024 + 1)
    for inputs, where in ((["ok", 7, "ok"], "inputs[1]"), (["ok", "ok", too_big], "inputs[2]"),
                          (["ok", "a\x00b"], "inputs[1]")):
        code, body = submit(cluster, echo, inputs)
        assert code == 400 and where in body["error"], body
    code, body = submit(cluster, "no-such-activity", ["a"])
    assert code == 404, body
    code, body = submit(cluster, "bad name!", ["a"])
    assert code == 400, body
    code, body = submit(cluster, echo, [])
    assert code == 400, body
    assert all_ids(client) == before


def test_over_the_per_request_maximum_is_a_413_with_the_limit(cluster, echo):
    code, body = submit(cluster, echo, ["x"] * (MAX_ARRAY + 1))
    assert code == 413 and str(MAX_ARRAY) in body["error"].replace(",", ""), body
    code, body = post_json(cluster, {"action": "getExecutionResults", "executionIds": list(range(1, MAX_ARRAY + 2))})
    assert code == 413, body
    huge = json.dumps({"action": "newExecutions", "name": echo, "inputs": ["x" * 1000] * (MAX_JSON_BODY_BYTES // 1000)})
    code, body = get_json(f"{cluster.urls[0]}/POD/", timeout_s=60.0, token=cluster.token, data=huge.encode(),
                          headers={"Content-Type": "application/json"})
    assert code == 413 and str(MAX_JSON_BODY_BYTES) in body["error"], body


def test_results_by_activity_are_handed_out_once(cluster, scripts):
    client = Client(cluster.urls, cluster.token)
    approved(client, "arr-byact", scripts.add("arr-byact.sh", ECHO))
    code, body = submit(cluster, "arr-byact", [str(i) for i in range(6)])
    ids = body["executionIds"]
    wait_until(lambda: all(all_ids(client).get(i) in TERMINAL for i in ids), what="all ended")
    code, first = post_json(cluster, {"action": "getExecutionResults", "activity": "arr-byact", "limit": 4}, node=1)
    assert code == 200 and len(first["executions"]) == 4 and first["more"] is True, first
    code, second = post_json(cluster, {"action": "getExecutionResults", "activity": "arr-byact", "limit": 4}, node=2)
    assert code == 200 and len(second["executions"]) == 2 and second["more"] is False, second
    got = [e["id"] for e in first["executions"] + second["executions"]]
    assert sorted(got) == ids
    code, third = post_json(cluster, {"action": "getExecutionResults", "activity": "arr-byact", "limit": 4})
    assert code == 200 and third["executions"] == []
    code, body = post_json(cluster, {"action": "getExecutionResults", "executionIds": ids})
    assert code == 200 and body["notFound"] == ids


def test_results_of_an_unknown_activity_are_404_without_waiting(cluster):
    started = time.monotonic()
    code, body = post_json(cluster, {"action": "getExecutionResults", "activity": "arr-nosuch", "wait": "20"})
    assert code == 404 and "arr-nosuch" in body["error"], body
    assert time.monotonic() - started < 10, "it waited for results of an activity that does not exist"


def test_unended_ids_are_reported_and_not_consumed(cluster, scripts):
    client = Client(cluster.urls, cluster.token)
    approved(client, "arr-slow", scripts.add("arr-slow.sh", install_script('[ "$1" = slow ] && sleep 600; echo $1')))
    code, body = submit(cluster, "arr-slow", ["fast", "slow"])
    fast, slow = body["executionIds"]
    try:
        got = read_all(cluster, [fast])
        assert got[fast]["stdout"] == "fast\n"
        code, body = post_json(cluster, {"action": "getExecutionResults", "executionIds": [slow, 10**12]})
        assert code == 200 and body["executions"] == [] and body["notFound"] == [10**12], body
        assert body["pending"] == [{"id": slow, "status": all_ids(client)[slow]}]
        assert slow in all_ids(client)   # not consumed
    finally:
        client.call("terminateExecution", executionId=slow)
    ended = read_all(cluster, [slow])
    assert ended[slow]["status"] == "terminated"


def test_a_bulk_reader_that_leaves_mid_wait_consumes_nothing(cluster, scripts):
    """getExecutionResults by ids with wait whose client leaves before the results end: reading would consume
    results written to a closed connection. They stay for the next reader."""
    client = Client(cluster.urls, cluster.token)
    name = "arr-nap"
    approved(client, name, scripts.add(f"{name}.sh", install_script('sleep 2; echo "napped $1"')))
    ids = submit(cluster, name, ["a", "b"])[1]["executionIds"]
    url = urllib.parse.urlsplit(cluster.urls[1])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        body = json.dumps({"action": "getExecutionResults", "wait": 20, "executionIds": ids})
        conn.request("POST", "/POD/", body=body,
                     headers={"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"})
        wait_until(lambda: set(all_ids(client).get(i) for i in ids) == {"in progress"}, what="both running")
    finally:
        conn.close()   # before the end: the waiting reader's client is gone
    got = read_all(cluster, ids, node=2)
    assert {i: got[i]["stdout"] for i in ids} == {ids[0]: "napped a\n", ids[1]: "napped b\n"}


def test_a_read_token_may_not_submit_or_read_results(cluster, echo):
    client = Client(cluster.urls, cluster.token)
    token = client.ok("newToken", name=f"arr-reader-{uuid.uuid4().hex[:6]}", scope="read")["token"]["token"]
    code, body = post_json(cluster, {"action": "newExecutions", "name": echo, "inputs": ["a"]}, token=token)
    assert code == 403, body
    code, body = post_json(cluster, {"action": "getExecutionResults", "executionIds": [1]}, token=token)
    assert code == 403, body


def test_a_malformed_json_body_is_a_400(cluster):
    code, body = get_json(f"{cluster.urls[0]}/POD/?action=newExecutions", token=cluster.token, data=b"{nope",
                          headers={"Content-Type": "application/json"})
    assert code == 400 and "json" in body["error"], body
    code, body = get_json(f"{cluster.urls[0]}/POD/", token=cluster.token, data=b"[1, 2]",
                          headers={"Content-Type": "application/json"})
    assert code == 400, body


# ---- quotas: a cluster of its own -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quota_cluster(tmp_path_factory) -> LocalCluster:
    cluster = start_cluster(tmp_path_factory.mktemp("arr-quota"), nodes=1, slots=1,
                            extra_args=[*FAST_RAFT, "--max-waiting-executions", "5"])
    yield cluster
    cluster.stop()


def test_the_waiting_quota_refuses_the_whole_array(quota_cluster, scripts):
    client = Client(quota_cluster.urls, quota_cluster.token)
    approved(client, "arr-wait", scripts.add("arr-wait.sh", install_script("exec sleep 600")))
    code, body = submit(quota_cluster, "arr-wait", ["busy"])   # takes the only slot
    assert code == 200, body
    wait_until(lambda: list(all_ids(client).values()) == ["in progress"], what="the slot busy")
    before = all_ids(client)
    code, body = submit(quota_cluster, "arr-wait", [str(i) for i in range(6)])
    assert code == 429 and "nothing was submitted" in body["error"], body
    assert all_ids(client) == before
    code, body = submit(quota_cluster, "arr-wait", [str(i) for i in range(5)])   # exactly the room left
    assert code == 200 and len(body["executionIds"]) == 5, body
    for exec_id in all_ids(client):
        client.call("terminateExecution", executionId=exec_id)


# ---- the CLI ---------------------------------------------------------------------------------------------------
def test_pod_run_inputs_prints_json_lines_and_exits_with_the_worst_code(cluster, scripts, tmp_path):
    client = Client(cluster.urls, cluster.token)
    approved(client, "arr-cli", scripts.add("arr-cli.sh", install_script('echo "got $1"; exit "${1#code}"')))
    lines = ["code0", "code0", "code3", "code0", "code5"]
    source = tmp_path / "inputs.txt"
    source.write_text("\n".join(lines) + "\n")
    res = pod("run", "arr-cli", "--inputs", str(source), "--timeout", "60", url=cluster.urls[0], token=cluster.token)
    assert res.returncode == 5, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["index"] for r in records) == list(range(len(lines)))
    for r in records:
        assert r["stdin"] == lines[r["index"]] and r["stdout"] == f"got {lines[r['index']]}\n"
        assert r["exitCode"] == int(lines[r["index"]][4:])
    assert "5 executions of arr-cli: 2 error, 3 finished" in res.stderr
    # every result was read: nothing of them is left
    assert not {r["id"] for r in records} & set(all_ids(client))


def test_pod_run_inputs_from_stdin_into_a_directory(cluster, scripts, tmp_path):
    client = Client(cluster.urls, cluster.token)
    approved(client, "arr-out", scripts.add("arr-out.sh", ECHO))
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "podnode.cli", "--url", cluster.urls[1], "run", "arr-out", "--inputs", "-",
           "--out", str(out)]
    res = subprocess.run(cmd, input="one\ntwo\r\nthree", capture_output=True, text=True, timeout=120,
                         env={**os.environ, "POD_TOKEN": cluster.token})
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    metas = sorted((json.loads(p.read_text()) for p in out.glob("*.json")), key=lambda m: m["index"])
    assert [m["stdin"] for m in metas] == ["one", "two", "three"]
    for m in metas:
        assert m["status"] == "finished" and "stdout" not in m
        assert (out / f"{m['id']}.stdout").read_text() == f"out {m['stdin']}\n"
        assert (out / f"{m['id']}.stderr").read_text() == f"err {m['stdin']}\n"


def test_pod_execution_list_pages_through_every_execution(cluster, scripts):
    client = Client(cluster.urls, cluster.token)
    approved(client, "arr-list", scripts.add("arr-list.sh", install_script("exec sleep 600")))
    code, body = submit(cluster, "arr-list", [str(i) for i in range(7)])
    assert code == 200, body
    ids = body["executionIds"]
    try:
        res = pod("execution", "list", "--activity", "arr-list", "--limit", "2", "--json", url=cluster.urls[2],
                  token=cluster.token)
        assert res.returncode == 0, res.stderr
        listed = json.loads(res.stdout)
        assert [e["id"] for e in listed["executions"]] == ids
        page = client.ok("getAllExecutions", limit=2, activity="arr-list")
        if "nextCursor" in page:   # a node that pages (the new contract): counts per status come with each page
            assert len(page["executions"]) == 2 and page["nextCursor"]
            assert sum(listed["counts"].values()) == len(ids)
        res = pod("execution", "list", "--activity", "arr-list", "--status", "waiting", "--limit", "2",
                  url=cluster.urls[0], token=cluster.token)
        assert res.returncode == 0, res.stderr
        rows = [line.split() for line in res.stdout.splitlines()[1:-1]]
        assert rows, res.stdout   # 7 sleepers on 6 slots: one waits at least
        assert all(int(r[0]) in ids and r[2] == "waiting" for r in rows), res.stdout
        assert res.stdout.splitlines()[-1].startswith(f"{len(rows)} listed")
    finally:
        for exec_id in ids:
            client.call("terminateExecution", executionId=exec_id)
        read_all(cluster, ids)
