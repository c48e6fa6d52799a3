"""The status page's routes over HTTP against a real 3-node cluster: what is open (the page, its files) and what
needs a token (its data), the live feed's events, a follower's view of the leader's scaling decisions, and the
throughput counted from finished executions."""

from __future__ import annotations

import json
import urllib.request

import pytest

from podnode.local.cluster import get_json

from ..conftest import Client, approved, install_script, wait_until

pytestmark = pytest.mark.integration


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def first_event(url: str, token: str) -> tuple[str, dict]:
    """Open the feed and read its first event: (type, data)."""
    request = urllib.request.Request(url + "/status/feed", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        fields = {}
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if not line:
                break
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields["event"], json.loads(fields["data"])


def test_the_page_is_open_and_its_data_needs_a_token(cluster):
    url = cluster.urls[0]
    code, headers, body = fetch(url + "/")
    assert code == 200 and b'<script type="module" src="/ui/app.js">' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    code, headers, body = fetch(url + "/ui/app.js")
    assert code == 200 and "javascript" in headers["Content-Type"] and b"sessionStorage" in body
    code, _, body = fetch(url + "/ui/missing.js")
    assert code == 404 and "no file" in json.loads(body)["error"]
    for path in ("/status/summary", "/status/feed", "/ui/..%2Fstatus/summary", "/ui/%2e%2e/status"):
        code, headers, body = fetch(url + path)
        assert code in (401, 404), (path, code, body)
        assert b'"node"' not in body and b"leader" not in body, path   # never any of the cluster's data
    code, headers, body = fetch(url + "/status/summary")
    assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer") and "token" in json.loads(body)["error"]
    code, _, _ = fetch(url + "/status/feed", {"Authorization": "Bearer pod_00000000_" + "A" * 43})
    assert code == 401
    code, _, body = fetch(url + "/status/feed", {"Authorization": f"Bearer {cluster.token}",
                                                 "Origin": "http://evil.example"})
    assert code == 403 and "cross-site" in json.loads(body)["error"]
    code, _, body = fetch(url + "/internal/ui-leader")   # a peer route, and a POST one
    assert code == 405
    request = urllib.request.Request(url + "/internal/ui-leader", data=b"", method="POST")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("an unsigned peer request was answered")
    except urllib.error.HTTPError as err:
        assert err.code == 401


def test_a_read_token_sees_the_feed_and_cannot_terminate(cluster):
    admin = Client(cluster.urls, cluster.token)
    reader = admin.ok("newToken", name="viewer", scope="read")["token"]["token"]
    event, data = first_event(cluster.urls[1], reader)
    assert event == "summary"
    assert {n["id"] for n in data["nodes"]} == {n.node_id for n in cluster.nodes}
    assert data["node"] == "n2" and [n["id"] for n in data["nodes"] if n["self"]] == ["n2"]
    assert data["outputHidden"] is True   # output is a result: the submit scope's
    code, full = get_json(cluster.urls[1] + "/status/summary", token=cluster.token)
    assert code == 200 and "outputHidden" not in full
    code, summary = get_json(cluster.urls[1] + "/status/summary", token=reader)
    assert code == 200 and summary["outputHidden"] is True
    assert all("stdoutTail" not in e for e in [*summary["running"]["shown"], *summary["ended"]])
    code, body = get_json(cluster.urls[1] + "/POD/?action=terminateExecution&executionId=1", token=reader)
    assert code == 403 and "submit scope" in body["error"]


def test_every_node_shows_the_leaders_scaling_view(cluster):
    client = Client(cluster.urls, cluster.token)
    for url in cluster.urls:
        code, summary = get_json(url + "/status/summary", token=cluster.token, timeout_s=10)
        assert code == 200, summary
        leader = summary["leader"]
        assert [n["id"] for n in summary["nodes"] if n["role"] == "leader"] == [leader]
        scaling = summary["scaling"]
        assert scaling["from"] == leader, scaling             # a follower asked the leader
        assert "no provider" in scaling["lastDecision"]["reason"]
        assert scaling["policy"] is None and summary["spend"] == {"perHour": 0.0, "soFar": 0.0}
    assert client.ok("getWorkers")["workers"]


def test_throughput_counts_finished_executions(cluster, scripts):
    client = Client(cluster.urls, cluster.token)
    approved(client, "quick", scripts.add("quick.sh", install_script('echo "hi $1"')))
    url = cluster.urls[2]

    def finished_in_window() -> float:
        _, summary = get_json(url + "/status/summary", token=cluster.token, timeout_s=10)
        points = summary["throughput"]
        return sum(b["finishedPerS"] * (b["t"] - a["t"]) / 1000 for a, b in zip(points, points[1:]))
    before = finished_in_window()
    ids = [client.ok("newExecution", name="quick", input=str(i))["execution"]["id"] for i in range(5)]
    results: dict[int, str] = {}

    def all_read() -> bool:   # a read of an ended execution consumes it: each is read until it has ended, once
        for i in ids:
            if i not in results:
                status = client.ok("getExecutionStatus", executionId=i, wait=2)["execution"]["status"]
                if status not in ("waiting", "in progress"):
                    results[i] = status
        return len(results) == len(ids)
    wait_until(all_read, what="5 quick executions ended")
    assert set(results.values()) == {"finished"}, results
    # Read, they are gone from the state, and still counted: within a few samples the window holds all 5.
    wait_until(lambda: round(finished_in_window() - before) >= 5, timeout_s=10, what="5 finished in the window")
    _, summary = get_json(url + "/status/summary", token=cluster.token, timeout_s=10)
    assert summary["queue"]["count"] == 0 and summary["running"]["count"] == 0
    assert all(e["id"] not in ids for e in summary["ended"])   # read results are not held any more
