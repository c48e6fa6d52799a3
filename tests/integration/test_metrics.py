"""GET /metrics scraped from live nodes of a real 3-node cluster (2 slots each), parsed with prometheus_client's
parser: the token it needs, counters that move exactly with a known load on every node, the queue and slot
gauges while executions wait on a file, histogram counts, and the Raft gauges of the leader and a follower."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Client, approved, install_script, wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple], float]   # (sample name, sorted label items) -> value

# main.sh: "fail" exits 3; "wait FILE" runs until FILE exists (the test creates it); anything else echoes.
MAIN = """case "$1" in
  fail) echo failing >&2; exit 3 ;;
  wait\\ *) while [ ! -e "${1#wait }" ]; do sleep 0.05; done; echo released ;;
  *) echo "ok $1" ;;
esac"""


def fetch(url: str, token: str | None, accept: str | None = None) -> tuple[int, str, str]:
    """GET url/metrics; (status, content type, body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(url + "/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def scrape(url: str, token: str) -> Samples:
    code, content_type, text = fetch(url, token)
    assert code == 200, (code, text)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def statuses(client: Client) -> dict[int, str]:
    return {e["id"]: e["status"] for e in client.ok("getAllExecutions")["executions"]}


@pytest.fixture(scope="module")
def reader(cluster) -> str:
    """A token of the read scope, as a Prometheus scraper would be given."""
    return Client(cluster.urls, cluster.token).ok("newToken", name="scraper", scope="read")["token"]["token"]


@pytest.fixture(scope="module")
def activity(cluster, scripts) -> str:
    client = Client(cluster.urls, cluster.token)
    approved(client, "metered", scripts.add("metered.sh", install_script(MAIN)))
    return "metered"


def test_metrics_need_a_token_and_a_read_token_is_enough(cluster, reader):
    for url in cluster.urls:
        code, _, body = fetch(url, None)
        assert code == 401 and "no token" in body, (code, body)
        assert fetch(url, "pod_00000000_" + "A" * 43)[0] == 401
        samples = scrape(url, reader)
        assert get(samples, "pod_raft_term") >= 1
    # A scraper that asks for OpenMetrics gets it; a malformed Accept header gets the default text format.
    code, content_type, text = fetch(cluster.urls[0], reader, "application/openmetrics-text; version=1.0.0")
    assert code == 200 and content_type.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
    code, content_type, _ = fetch(cluster.urls[0], reader, "application/openmetrics-text; version=abc")
    assert code == 200 and content_type.startswith("text/plain; version=0.0.4"), content_type


def test_installs_are_counted_on_every_node(cluster, reader, activity):
    for url in cluster.urls:   # one install per node, known to every node (counted as each applies the log)
        wait_until(lambda: get(scrape(url, reader), "pod_installs_total", activity=activity, result="installed")
                   == 3, what=f"3 installs of {activity} counted on {url}")


COUNTERS = ("pod_executions_submitted_total", "pod_executions_started_total", "pod_executions_finished_total",
            "pod_executions_error_total", "pod_executions_terminated_total", "pod_executions_retried_total",
            "pod_execution_wait_seconds_count", "pod_execution_run_seconds_count")


def test_counters_move_exactly_with_a_known_load_on_every_node(cluster, reader, activity, shared_dir: Path):
    client = Client(cluster.urls, cluster.token)
    before = [scrape(url, reader) for url in cluster.urls]
    ids = [client.ok("newExecution", name=activity, input=word)["execution"]["id"] for word in ("a", "b", "c")]
    ids.append(client.ok("newExecution", name=activity, input="fail")["execution"]["id"])
    stuck = client.ok("newExecution", name=activity, input=f"wait {shared_dir / 'never'}")["execution"]["id"]
    wait_until(lambda: statuses(client).get(stuck) == "in progress", what="the execution to terminate running")
    client.ok("terminateExecution", executionId=stuck)
    # 5 submitted and started; 3 finished, 1 error (exit 3), 1 terminated while it ran; none retried; each
    # waited once and ran (the terminated one until its end).
    expected = dict(zip(COUNTERS, (5, 5, 3, 1, 1, 0, 5, 5)))

    def deltas(url: str, earlier: Samples) -> dict[str, float]:
        now = scrape(url, reader)
        return {name: get(now, name, activity=activity) - get(earlier, name, activity=activity) for name in COUNTERS}

    for url, earlier in zip(cluster.urls, before):
        wait_until(lambda: deltas(url, earlier) == expected, what=f"the counters of {url} to move by {expected}")
    ended = {exec_id: status for exec_id, status in statuses(client).items() if exec_id in ids}
    assert sorted(ended.values()) == ["error", "finished", "finished", "finished"], ended


def test_queue_length_running_and_slots_while_executions_wait_on_a_file(cluster, reader, activity, shared_dir):
    client = Client(cluster.urls, cluster.token)
    gate = shared_dir / "release"
    for _ in range(6 + 3):   # 6 slots in all: 6 run and 3 wait
        client.ok("newExecution", name=activity, input=f"wait {gate}")
    url = cluster.urls[1]

    def full() -> Samples | None:
        samples = scrape(url, reader)
        return samples if get(samples, "pod_executions_running") == 6 and get(samples, "pod_queue_length") == 3 \
            else None
    samples = wait_until(full, what="6 running and 3 waiting")
    for node in ("n1", "n2", "n3"):
        assert get(samples, "pod_node_slots", node=node) == 2
        assert get(samples, "pod_node_slots_busy", node=node) == 2
    assert get(samples, "pod_executions", activity=activity, status="waiting") == 3
    assert get(samples, "pod_executions", activity=activity, status="in progress") == 6
    assert get(samples, "pod_nodes", status="up") == 3
    gate.touch()
    wait_until(lambda: (s := scrape(url, reader)) and get(s, "pod_queue_length") == 0
               and get(s, "pod_executions_running") == 0, what="the queue drained once the file exists")


def test_raft_gauges_on_the_leader_and_a_follower(cluster, reader):
    leader = wait_until(cluster.leader, what="a leader")
    follower = next(node for node in cluster.nodes if node is not leader)
    on_leader, on_follower = scrape(leader.url, reader), scrape(follower.url, reader)
    assert get(on_leader, "pod_raft_role", role="leader") == 1
    assert get(on_leader, "pod_raft_role", role="follower") == 0
    assert get(on_follower, "pod_raft_role", role="follower") == 1
    assert get(on_follower, "pod_raft_role", role="leader") == 0
    for samples in (on_leader, on_follower):
        assert get(samples, "pod_raft_has_quorum") == 1
        assert get(samples, "pod_raft_last_applied") > 0
        # Committed and not applied: at least what this node's own commit index says.
        assert get(samples, "pod_raft_last_applied") + get(samples, "pod_raft_apply_lag") >= \
            get(samples, "pod_raft_commit_index") > 0
    assert get(on_leader, "pod_raft_term") == get(on_follower, "pod_raft_term") >= 1
    # Both apply the same log: the follower catches up with what the leader had committed.
    committed = get(on_leader, "pod_raft_commit_index")
    wait_until(lambda: get(scrape(follower.url, reader), "pod_raft_last_applied") >= committed,
               what="the follower to apply the leader's commit index")
    assert get(on_leader, "pod_node_info", node=leader.node_id, version=_version()) == 1


def _version() -> str:
    from podnode import __version__
    return __version__


def test_a_restarted_node_counts_from_zero_without_counting_its_journal_again(cluster, reader, activity):
    """Last in this module: it restarts a follower. What the node applies while it catches up (its journal, the
    entries it missed) is not counted again: its counters start from zero, then move with the cluster's."""
    client = Client(cluster.urls, cluster.token)
    leader = wait_until(cluster.leader, what="a leader")
    victim = next(node for node in cluster.nodes if node is not leader)
    others = [node for node in cluster.nodes if node is not victim]
    submitted = "pod_executions_submitted_total"
    before = {node.node_id: get(scrape(node.url, reader), submitted, activity=activity) for node in others}
    assert all(count >= 5 for count in before.values()), before
    cluster.stop_node(victim)
    cluster.start_node(victim)
    cluster.wait_ready(timeout_s=30)
    restarted = scrape(victim.url, reader)
    assert get(restarted, submitted, activity=activity) == 0
    assert get(restarted, "pod_raft_last_applied") > 0          # it has applied the log: the gauges are there
    assert get(restarted, "pod_node_slots", node=victim.node_id) == 2
    client.ok("newExecution", name=activity, input="after the restart")
    wait_until(lambda: get(scrape(victim.url, reader), submitted, activity=activity) == 1,
               what="the restarted node counting the new execution")
    for node in others:
        wait_until(lambda: get(scrape(node.url, reader), submitted, activity=activity) == before[node.node_id] + 1,
                   what=f"{node.node_id} counting it too")
