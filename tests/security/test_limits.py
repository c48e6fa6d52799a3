"""An activity's own limits (newActivity timeoutS, memoryMB, maxProcesses) against real node processes: shown in
the activity, applied to each of its executions; an activity without them runs with the node's defaults."""

from __future__ import annotations

import pytest

from podnode.local.cluster import LocalCluster

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

NODE_MAX_PROCESSES = 200   # the nodes' defaults (--exec-max-processes, --exec-memory-mb)
NODE_MEMORY_MB = 100

# Forks sleeping children until a fork fails or 40 run; prints how many ran.
FORKER = """python3 - <<'PY'
import os, signal
children = []
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
print(len(children))
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
PY"""
# Writes $1 MB (every page touched), then says so.
HOG = """python3 -c "import sys; b = b'x' * (int(sys.argv[1]) * 1024 * 1024); print('allocated', len(b))" "$1" """


@pytest.fixture(scope="module")
def limits_cluster(tmp_path_factory) -> LocalCluster:
    cluster = start_cluster(tmp_path_factory.mktemp("limits"), nodes=2, slots=2, extra_args=[
        *FAST_RAFT, "--exec-max-processes", str(NODE_MAX_PROCESSES), "--exec-memory-mb", str(NODE_MEMORY_MB)])
    yield cluster
    cluster.stop()


@pytest.fixture
def client(limits_cluster) -> Client:
    return Client(limits_cluster.urls, limits_cluster.token)


def run(client: Client, name: str, input: str = "") -> dict:
    exec_id = client.ok("newExecution", name=name, input=input)["execution"]["id"]

    def ended():
        rec = client.ok("getExecutionStatus", executionId=exec_id, wait=5)["execution"]
        return rec if rec["status"] not in ("waiting", "in progress") else None
    return wait_until(ended, timeout_s=60, what=f"execution {exec_id} ended")


def test_timeout_s(client, scripts):
    act = approved(client, "slow", scripts.add("l-slow.sh", install_script("sleep 30")), timeoutS="1")
    assert act["limits"] == {"timeoutS": 1.0, "memoryMB": NODE_MEMORY_MB, "maxProcesses": NODE_MAX_PROCESSES}
    rec = run(client, "slow")
    assert rec["status"] == "error", rec
    assert "timed out after 1 s" in rec["errorDescription"]
    assert rec["finishTime"] - rec["startTime"] < 15_000


def test_max_processes(client, scripts):
    url = scripts.add("l-forker.sh", install_script(FORKER))
    act = approved(client, "forker-limited", url, maxProcesses="8")
    assert act["limits"]["maxProcesses"] == 8
    approved(client, "forker", url)        # the same script under the node's default
    limited, free = run(client, "forker-limited"), run(client, "forker")
    assert free["status"] == "finished" and free["stdout"].strip() == "40", free
    assert limited["status"] == "finished", limited
    assert int(limited["stdout"]) < 8, limited


def allocated(rec: dict) -> bool:
    if rec["status"] == "finished" and "allocated" in rec["stdout"]:
        return True
    assert rec["status"] == "error" and "allocated" not in rec["stdout"], rec
    return False


def test_memory_mb_lower_higher_or_none(client, scripts):
    url = scripts.add("l-hog.sh", install_script(HOG))
    assert approved(client, "hog", url)["limits"]["memoryMB"] == NODE_MEMORY_MB
    assert approved(client, "hog-64", url, memoryMB="64")["limits"]["memoryMB"] == 64
    assert approved(client, "hog-300", url, memoryMB="300")["limits"]["memoryMB"] == 300
    assert approved(client, "hog-none", url, memoryMB="0")["limits"]["memoryMB"] is None
    assert allocated(run(client, "hog", "80"))           # under the node's 100 MB
    assert not allocated(run(client, "hog", "150"))
    assert not allocated(run(client, "hog-64", "80"))    # the activity's own, lower
    assert allocated(run(client, "hog-300", "150"))      # higher
    assert allocated(run(client, "hog-none", "150"))     # none at all


@pytest.mark.parametrize("param, value", [("timeoutS", "-1"), ("timeoutS", "abc"), ("memoryMB", "1.5"),
                                          ("maxProcesses", "99999999999"), ("timeoutS", "inf")])
def test_bad_limits_are_refused_naming_the_parameter(client, scripts, param, value):
    code, body = client.call("newActivity", name="bad-limits", **{param: value},
                             installationScriptLocation=scripts.add("l-bad.sh", install_script("true")))
    assert code == 400 and param in body["error"], body
    assert client.call("getActivityStatus", name="bad-limits")[0] == 404
