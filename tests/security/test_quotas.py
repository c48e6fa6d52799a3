"""Cluster-wide quotas against real node processes: a full quota answers 429 with Retry-After and a message that
names the limit, and the refused request changes nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from podnode.local.cluster import LocalCluster

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

MAX_WAITING = 3
MAX_ACTIVITIES = 2
MAX_UNREAD = 64


@pytest.fixture(scope="module")
def quota_cluster(tmp_path_factory) -> LocalCluster:
    """Two nodes of one slot each, with small quotas."""
    cluster = start_cluster(tmp_path_factory.mktemp("quotas"), nodes=2, slots=1, extra_args=[
        *FAST_RAFT, "--max-waiting-executions", str(MAX_WAITING), "--max-activities", str(MAX_ACTIVITIES),
        "--max-unread-result-bytes", str(MAX_UNREAD)])
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def activities(quota_cluster, scripts) -> Client:
    """The quota's two activities: `sleeper` (runs until terminated) and `echo` (prints its input)."""
    client = Client(quota_cluster.urls, quota_cluster.token)
    approved(client, "sleeper", scripts.add("q-sleeper.sh", install_script("exec sleep 600")))
    approved(client, "echo", scripts.add("q-echo.sh", install_script('printf "%s" "$1"')))
    return client


def raw_call(cluster: LocalCluster, action: str, node: int = 0, **params: str) -> tuple[int, dict, dict]:
    """(status, headers, body) of an action, with the cluster's token."""
    query = urllib.parse.urlencode({"action": action, **params})
    request = urllib.request.Request(f"{cluster.urls[node]}/POD/?{query}",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def all_executions(client: Client) -> dict[int, str]:
    return {e["id"]: e["status"] for e in client.ok("getAllExecutions")["executions"]}


def statuses(client: Client) -> list[str]:
    return sorted(all_executions(client).values())


def clean_up(client: Client) -> None:
    """Terminate what runs or waits and read every result, so the next test starts from nothing unread. A
    terminated execution's output may still be on its way (a loaded machine): read again until all are gone."""
    def drained() -> bool:
        for exec_id, status in all_executions(client).items():
            if status in ("waiting", "in progress"):
                client.call("terminateExecution", executionId=exec_id)
            else:
                client.call("getExecutionStatus", executionId=exec_id, wait=2)
        return not all_executions(client)
    wait_until(drained, timeout_s=60, interval_s=0.5, what="no execution left")


def test_waiting_executions_quota(quota_cluster, activities):
    client = activities
    try:
        for _ in range(2):    # one per slot
            client.ok("newExecution", name="sleeper")
        wait_until(lambda: statuses(client) == ["in progress"] * 2, what="both slots busy")
        for _ in range(MAX_WAITING):
            assert client.ok("newExecution", name="sleeper")["execution"]["status"] == "waiting"
        before = all_executions(client)
        for node in (0, 1):   # through either node: the quota is the cluster's
            code, headers, body = raw_call(quota_cluster, "newExecution", node, name="sleeper", requestId="over")
            assert code == 429, body
            assert headers["Retry-After"] == "5"
            assert body["error"] == (f"quota: {MAX_WAITING} executions are waiting cluster-wide "
                                     "(--max-waiting-executions); try again when some have started")
        assert all_executions(client) == before                       # nothing changed
        code, _, _ = raw_call(quota_cluster, "getExecutionStatus", executionId=str(max(before) + 1))
        assert code == 404                                             # the refused one does not exist
        # A slot frees up, a waiting one starts: the same request now gets in.
        running = min(i for i, s in before.items() if s == "in progress")
        client.ok("terminateExecution", executionId=running)
        wait_until(lambda: list(all_executions(client).values()).count("waiting") < MAX_WAITING,
                   what="a waiting execution started")
        assert client.ok("newExecution", name="sleeper", requestId="over")["execution"]["status"] == "waiting"
    finally:
        clean_up(client)


def test_unread_result_bytes_quota(quota_cluster, activities):
    client = activities
    text = "x" * 40
    try:
        first = client.ok("newExecution", name="echo", input=text)["execution"]["id"]
        second = client.ok("newExecution", name="echo", input=text)["execution"]["id"]   # 40 unread < 64 at most
        wait_until(lambda: statuses(client) == ["finished"] * 2, what="both finished, unread")
        before = all_executions(client)
        code, headers, body = raw_call(quota_cluster, "newExecution", name="echo", input="more")
        assert code == 429, body
        assert headers["Retry-After"] == "10"
        assert body["error"].startswith("quota: 80 bytes of ended executions' output are unread cluster-wide, "
                                        f"the limit is {MAX_UNREAD} (--max-unread-result-bytes)")
        assert all_executions(client) == before
        rec = client.ok("getExecutionStatus", executionId=first)["execution"]   # reading frees its bytes
        assert rec["stdout"] == text
        client.ok("newExecution", name="echo", input="more")
        assert client.ok("getExecutionStatus", executionId=second)["execution"]["stdout"] == text
    finally:
        clean_up(client)


def test_activities_quota(quota_cluster, activities, scripts):
    client = activities
    name = f"third-{uuid.uuid4().hex[:6]}"
    code, headers, body = raw_call(quota_cluster, "newActivity", name=name,
                                   installationScriptLocation=scripts.add("q-third.sh", install_script("true")))
    assert code == 429, body
    assert headers["Retry-After"] == "60"
    assert body["error"] == (f"quota: {MAX_ACTIVITIES} activities exist cluster-wide (--max-activities); "
                             "delete one first")
    code, _, _ = raw_call(quota_cluster, "getActivityStatus", name=name)
    assert code == 404
    for existing in ("sleeper", "echo"):
        assert client.ok("getActivityStatus", name=existing)["activity"]["status"] == "approved"
