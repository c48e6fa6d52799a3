"""waitingReason and queuePosition on real clusters: all slots busy with the count ahead (and the CLI showing
it), an activity still installing on every free node, a scaling policy at maxWorkers, no quorum. Executions
and installs wait on files the test creates, so every wait is a poll with a deadline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podnode.waiting import NO_QUORUM

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

pytestmark = pytest.mark.integration

# main.sh runs until the file named by its input exists.
GATED = install_script('while [ ! -e "$1" ]; do sleep 0.1; done\necho "through $1"')


def slow_install(shared: Path) -> str:
    """GATED's install, where the first install (the verification) is quick and every later one waits until
    shared/installs-go exists."""
    wait = (f"if ! mkdir {shared}/verified 2>/dev/null; then\n"
            f"  while [ ! -e {shared}/installs-go ]; do sleep 0.1; done\nfi\n")
    header = "#!/usr/bin/env bash\nset -e\n"
    assert GATED.startswith(header)
    return header + wait + GATED[len(header):]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """3 nodes of one slot each."""
    c = start_cluster(tmp_path_factory.mktemp("waiting"), nodes=3, slots=1)
    yield c
    c.stop()


@pytest.fixture
def client(cluster) -> Client:
    return Client(cluster.urls, cluster.token)


def status(client: Client, exec_id: int, node: int | None = None) -> dict:
    return client.ok("getExecutionStatus", node, executionId=exec_id)["execution"]


def until_status(client: Client, ids: list[int], want: str) -> None:
    wait_until(lambda: all(status(client, i)["status"] == want for i in ids), timeout_s=30,
               what=f"executions {ids} {want}")


def until_finished(client: Client, ids: list[int]) -> None:
    """Poll until every one has finished (reading an ended execution deletes it: each is read once)."""
    left = set(ids)

    def done():
        for exec_id in sorted(left):
            view = status(client, exec_id)
            if view["status"] != "waiting" and view["status"] != "in progress":
                assert view["status"] == "finished", view
                left.discard(exec_id)
        return not left
    wait_until(done, timeout_s=30, what=f"executions {sorted(left)} finished")


def pod(url: str, token: str, *args: str) -> subprocess.CompletedProcess:
    """The pod CLI as a subprocess, finding the token in $POD_TOKEN."""
    env = {**os.environ, "POD_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("POD_URL", None)
    return subprocess.run([sys.executable, "-m", "podnode.cli", "--url", url, *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_all_slots_busy_with_the_count_ahead_through_the_api_and_the_cli(cluster, client, scripts, shared_dir):
    approved(client, "gated", scripts.add("gated.sh", GATED))
    gate = shared_dir / "slots-go"
    try:
        running = [client.ok("newExecution", name="gated", input=str(gate))["execution"]["id"] for _ in range(3)]
        until_status(client, running, "in progress")
        waiting = [client.ok("newExecution", name="gated", input=str(gate))["execution"]["id"] for _ in range(4)]
        want = [("waiting", f"all 3 slots busy, {k} ahead of it", k) for k in range(4)]
        for node in range(3):   # every node says the same, leader or not (once it has applied the placements)
            wait_until(lambda: [(v["status"], v.get("waitingReason"), v.get("queuePosition"))
                                for v in (status(client, i, node) for i in waiting)] == want,
                       what=f"node {node} explains the queue")
            assert all("waitingReason" not in status(client, i, node) for i in running)
        page = client.ok("getAllExecutions", activity="gated", limit=3)
        assert [(v["id"], v.get("queuePosition")) for v in page["executions"]] == [(i, None) for i in running]
        page = client.ok("getAllExecutions", activity="gated", status="waiting", limit=2, cursor=page["nextCursor"])
        assert [(v["id"], v["waitingReason"], v["queuePosition"]) for v in page["executions"]] == [
            (waiting[k], f"all 3 slots busy, {k} ahead of it", k) for k in (0, 1)]

        listed = pod(cluster.urls[1], cluster.token, "execution", "list", "--activity", "gated")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split()[-2:] == ["QUEUE", "REASON"]
        for k, exec_id in enumerate(waiting):
            row = next(r for r in rows if r.split()[0] == str(exec_id))
            assert re.search(rf"waiting\s.*\s{k}\s+all 3 slots busy, {k} ahead of it$", row), row
        shown = pod(cluster.urls[2], cluster.token, "execution", "status", str(waiting[2]))
        assert shown.returncode == 0, shown.stderr
        assert "waiting: all 3 slots busy, 2 ahead of it (queue position 2: 0 starts next)" in shown.stdout
    finally:
        gate.touch()
    until_finished(client, running + waiting)   # the gate is open: the queue drains in order


def test_activity_still_installing_on_every_free_node(cluster, client, scripts, shared_dir):
    gate, installs_go = shared_dir / "install-test-go", shared_dir / "installs-go"
    try:
        client.ok("newActivity", name="slowinst",
                  installationScriptLocation=scripts.add("slowinst.sh", slow_install(shared_dir)))

        def verified():
            act = client.ok("getActivityStatus", name="slowinst")["activity"]
            by_status = {s: sorted(i["workerId"] for i in act["installations"] if i["status"] == s)
                         for s in ("installed", "installing")}
            return act["status"] == "approved" and len(by_status["installed"]) == 1 and \
                len(by_status["installing"]) == 2 and by_status
        installs = wait_until(verified, timeout_s=30, what="verified on one node, installing on the others")
        holder = client.ok("newExecution", name="slowinst", input=str(gate))["execution"]["id"]
        until_status(client, [holder], "in progress")
        assert status(client, holder)["workerId"] == installs["installed"][0]
        exec_id = client.ok("newExecution", name="slowinst", input=str(gate))["execution"]["id"]
        view = status(client, exec_id)
        match = re.fullmatch(r"all 1 slot busy, 0 ahead of it; activity still installing on every free node "
                             r"\((n\d) for \d+ s, (n\d) for \d+ s\)", view["waitingReason"])
        assert match and list(match.groups()) == installs["installing"], view
        assert view["queuePosition"] == 0
    finally:
        installs_go.touch()
        gate.touch()
    until_finished(client, [holder, exec_id])   # the installs end: it runs on one of those nodes


def test_at_max_workers_then_no_leader_without_quorum(tmp_path, scripts, shared_dir):
    """A cluster that launches nodes (the local provider) under a policy it has reached: the reason says the
    policy launches no more; then 2 of its 3 nodes are killed and the third says it has no leader."""
    cluster = start_cluster(tmp_path, nodes=3, slots=1, extra_args=FAST_RAFT + ["--provider", "local"])
    gate = shared_dir / "quorum-go"
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "gated", scripts.add("gated.sh", GATED))
        client.ok("newPolicy", name="three", rules="maxWorkers=3")
        client.ok("applyPolicy", name="three")
        running = [client.ok("newExecution", name="gated", input=str(gate))["execution"]["id"] for _ in range(3)]
        until_status(client, running, "in progress")
        exec_id = client.ok("newExecution", 0, name="gated", input=str(gate))["execution"]["id"]
        assert [status(client, exec_id, node)["waitingReason"] for node in range(3)] == \
            ["all 3 slots busy, 0 ahead of it; at maxWorkers=3"] * 3
        for node in cluster.nodes[1:]:   # killed: their executions wait on the gate, opened in finally
            cluster.stop_node(node, sig=signal.SIGKILL)

        def no_leader():
            view = status(client, exec_id, 0)
            return view if view["waitingReason"] == NO_QUORUM else None
        view = wait_until(no_leader, timeout_s=30, what="the lone node says it has no leader")
        assert view["status"] == "waiting" and view["queuePosition"] == 0
        page = client.ok("getAllExecutions", 0, status="waiting")
        assert [(v["id"], v["waitingReason"]) for v in page["executions"]] == [(exec_id, NO_QUORUM)]
    finally:
        gate.touch()
        cluster.stop()
