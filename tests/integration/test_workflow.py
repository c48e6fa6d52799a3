"""The whole user workflow on a real 3-node cluster, asking a different node each time."""

from __future__ import annotations

import time

from podnode.local.procs import free_port

from ..conftest import Client, approved, install_script, wait_until

TERMINAL = {"finished", "error", "terminated"}


def run_to_end(client: Client, exec_id: int, node: int | None = None, timeout_s: float = 30.0) -> dict:
    """Wait (server side, wait=S) until the execution ends; return the final read."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.ok("getExecutionStatus", node, executionId=exec_id, wait=10)["execution"]
        if body["status"] in TERMINAL:
            return body
    raise AssertionError(f"execution {exec_id} did not end within {timeout_s} s")


def test_activity_and_execution_round_trip(client, scripts):
    url = scripts.add("greet.sh", install_script('echo "hello $1"; echo "to stderr" >&2'))
    created = client.ok("newActivity", 0, name="greet", installationScriptLocation=url)
    assert created["status"] == "installing"
    assert created["activity"]["status"] == "verifying"
    assert created["activity"]["name"] == "greet" and created["activity"]["installationScriptLocation"] == url
    act = approved(client, "greet", url, create=False)
    assert {i["workerId"] for i in act["installations"]} == {"n1", "n2", "n3"}

    started = client.ok("newExecution", 1, name="greet", input="big world")["execution"]
    assert started["status"] in ("waiting", "in progress")
    assert started["stdin"] == "big world" and started["activityName"] == "greet"
    assert started["activityId"] == act["id"]

    done = run_to_end(client, started["id"], node=2)
    assert done["status"] == "finished"
    assert done["stdout"] == "hello big world\n"
    assert done["stderr"] == "to stderr\n"
    assert done["exitCode"] == 0 and done["workerId"] in {"n1", "n2", "n3"}
    assert done["startTime"] <= done["finishTime"] and done["attempts"] == 1

    code, body = client.call("getExecutionStatus", 0, executionId=started["id"])
    assert code == 404
    assert body["error"] == (f"Execution with id {started['id']} doesn't exist, its result has already been "
                             "retrieved or it expired")


def test_execution_without_input_and_nonzero_exit(client, scripts):
    url = scripts.add("fails.sh", install_script('echo "arg=[$1]"; echo oops >&2; exit 7'))
    approved(client, "fails", url)
    started = client.ok("newExecution", name="fails")["execution"]
    assert started["stdin"] == ""
    done = run_to_end(client, started["id"])
    assert done["status"] == "error" and done["exitCode"] == 7
    assert done["stdout"] == "arg=[]\n" and done["stderr"] == "oops\n"


def test_rejected_activities(client, scripts):
    cases = {
        "nomain": (scripts.add("nomain.sh", "#!/bin/bash\necho installing; touch other.sh\n"), "main.sh"),
        "failing": (scripts.add("failing.sh", "#!/bin/bash\necho step one\necho broken >&2\nexit 3\n"), "code 3"),
        "unreachable": (f"http://127.0.0.1:{free_port()}/install.sh", "could not download"),
        "missing": (scripts.url("does-not-exist.sh"), "404"),
    }
    for name, (url, _) in cases.items():
        client.ok("newActivity", name=name, installationScriptLocation=url)
    for name, (_url, reason) in cases.items():
        act = wait_until(lambda: (a := client.ok("getActivityStatus", name=name)["activity"])["status"] != "verifying"
                         and a, what=f"{name} verified")
        assert act["status"] == "rejected", act
        assert reason in act["errorDescription"], act
        assert len(act["installations"]) == 1 and act["installations"][0]["status"] == "failed"
    failing = client.ok("getActivityStatus", name="failing")["activity"]
    assert "broken" in failing["errorDescription"]  # the tail of the install log
    code, body = client.call("newExecution", name="failing")
    assert code == 409 and "rejected" in body["error"]
    # A rejected activity can be deleted, and the name reused.
    client.ok("deleteActivity", name="nomain")
    wait_until(lambda: client.call("getActivityStatus", name="nomain")[0] == 404, what="nomain gone")
    good = scripts.add("nomain-fixed.sh", install_script("echo fixed"))
    approved(client, "nomain", good)


def test_bad_input_gets_clear_errors_and_changes_nothing(client, scripts, cluster):
    url = scripts.add("bad-input.sh", install_script("echo ok"))
    approved(client, "badinput", url)
    before = client.ok("getAllExecutions", 0)["executions"]
    cases = [
        ({}, 400, "action"),
        ({"action": "noSuchAction"}, 400, "Unknown action"),
        ({"action": "newActivity", "name": "x"}, 400, "installationScriptLocation"),
        ({"action": "newActivity", "name": "", "installationScriptLocation": url}, 400, "name"),
        ({"action": "newActivity", "name": "../etc", "installationScriptLocation": url}, 400, "Invalid activity name"),
        ({"action": "newActivity", "name": "a" * 65, "installationScriptLocation": url}, 400, "Invalid"),
        ({"action": "newActivity", "name": "x1", "installationScriptLocation": "ftp://h/x"}, 400, "scheme"),
        ({"action": "newActivity", "name": "x2", "installationScriptLocation": "javascript:alert(1)"}, 400,
         "unsupported install script URL scheme 'javascript'"),
        ({"action": "newActivity", "name": "x3", "installationScriptLocation": "http://h/" + "a" * 3000}, 400,
         "longer than"),
        ({"action": "newActivity", "name": "badinput", "installationScriptLocation": url}, 409, "already exists"),
        ({"action": "getActivityStatus", "name": "nope"}, 404, "doesn't exist"),
        ({"action": "deleteActivity", "name": "nope"}, 404, "doesn't exist"),
        ({"action": "newExecution", "name": "nope"}, 404, "doesn't exist"),
        ({"action": "newExecution", "name": "badinput", "input": "x" * (64 * 1024 + 1)}, 413, "limit"),
        ({"action": "newExecution", "name": "badinput", "requestId": "bad id!"}, 400, "requestId"),
        ({"action": "getExecutionStatus", "executionId": "abc"}, 400, "whole number"),
        ({"action": "getExecutionStatus", "executionId": "-1"}, 400, "whole number"),
        ({"action": "getExecutionStatus", "executionId": "999999"}, 404, "doesn't exist"),
        ({"action": "getExecutionStatus", "executionId": "1", "wait": "soon"}, 400, "wait"),
        ({"action": "terminateExecution", "executionId": "999999"}, 404, "doesn't exist"),
        ({"action": "terminateExecution"}, 400, "executionId"),
    ]
    assert all(text for _, _, text in cases), "every case names the words its error must contain"
    for i, (params, code, text) in enumerate(cases):
        action = params.pop("action", None)
        got, body = client.call(action, i % 3, **params) if action else _raw(client, i % 3, params)
        assert got == code, (action, params, got, body)
        assert isinstance(body.get("error"), str) and text in body["error"], (action, params, body)
    assert [client.call("getActivityStatus", name=n)[0] for n in ("x", "x1", "x2", "x3")] == [404] * 4
    assert client.ok("getAllExecutions", 1)["executions"] == before
    code, body = _get(cluster.urls[0] + "/no/such/path", cluster.token)
    assert code == 404 and "error" in body
    # Every node is still serving and agrees on the leader.
    leaders = {cluster.status(n)["leader"] for n in cluster.nodes}
    assert len(leaders) == 1 and None not in leaders


def _raw(client: Client, node: int, params: dict):
    import urllib.parse
    return _get(f"{client.urls[node]}/POD/?{urllib.parse.urlencode(params)}", client.token)


def _get(url: str, token: str):
    from podnode.local.cluster import get_json
    return get_json(url, token=token)


def test_queueing_when_all_slots_are_busy(client, scripts):
    url = scripts.add("slow.sh", install_script('sleep 0.4; echo "done $1"'))
    approved(client, "slow", url)
    ids = [client.ok("newExecution", name="slow", input=str(i))["execution"]["id"] for i in range(14)]
    # 3 nodes x 2 slots: at most 6 run, the rest wait.
    snapshot = client.ok("getAllExecutions")["executions"]
    mine = [e for e in snapshot if e["id"] in ids]
    assert sum(e["status"] == "in progress" for e in mine) <= 6
    assert any(e["status"] == "waiting" for e in mine), mine
    outputs = {}
    for exec_id in ids:
        done = run_to_end(client, exec_id, timeout_s=60)
        assert done["status"] == "finished", done
        outputs[exec_id] = done["stdout"]
    assert outputs == {exec_id: f"done {i}\n" for i, exec_id in enumerate(ids)}


def test_output_is_readable_while_running_from_any_node(client, scripts, cluster):
    url = scripts.add("letters.sh", install_script('for l in a b c d e f; do echo "$l"; sleep 0.3; done'))
    approved(client, "letters", url)
    exec_id = client.ok("newExecution", 0, name="letters")["execution"]["id"]
    worker = wait_until(lambda: client.ok("getExecutionStatus", 0, executionId=exec_id)["execution"]["workerId"],
                        what="placed")
    other = next(i for i, n in enumerate(cluster.nodes) if n.node_id != worker)

    def partial():
        e = client.ok("getExecutionStatus", other, executionId=exec_id)["execution"]
        return e if e["status"] == "in progress" and e["stdout"].startswith("a\nb\n") else None
    running = wait_until(partial, what="partial output read through a node that is not the worker")
    assert running["stdout"] != "a\nb\nc\nd\ne\nf\n"
    done = run_to_end(client, exec_id, node=other)
    assert done["stdout"] == "a\nb\nc\nd\ne\nf\n"


def test_terminate_running_and_waiting(client, scripts):
    url = scripts.add("sleepy.sh", install_script('echo started; sleep 30; echo never'))
    approved(client, "sleepy", url)
    ids = [client.ok("newExecution", name="sleepy")["execution"]["id"] for _ in range(7)]  # 6 slots: 1 waits
    wait_until(lambda: sum(e["status"] == "in progress" for e in client.ok("getAllExecutions")["executions"]
                           if e["id"] in ids) == 6, what="six running")
    mine = [e for e in client.ok("getAllExecutions")["executions"] if e["id"] in ids]
    waiting = [e["id"] for e in mine if e["status"] == "waiting"]
    assert len(waiting) == 1, [(e["id"], e["status"], e.get("workerId"), e.get("errorDescription")) for e in mine]
    running = [i for i in ids if i not in waiting]
    wait_until(lambda: "started" in client.ok("getExecutionStatus", executionId=running[0])["execution"]["stdout"],
               what="first output")
    for exec_id in ids:
        body = client.ok("terminateExecution", executionId=exec_id)
        assert body == {"execution": {"id": exec_id, "status": "terminated"}}
    code, body = client.call("terminateExecution", executionId=ids[0])
    assert code in (404, 409), body  # already ended (or already read)
    first = run_to_end(client, running[0])
    assert first["status"] == "terminated" and first["stdout"] == "started\n"
    assert run_to_end(client, waiting[0])["status"] == "terminated"
    for exec_id in running[1:]:
        assert run_to_end(client, exec_id)["status"] == "terminated"
    # The slots are free again: a new execution runs at once.
    quick = scripts.add("quick.sh", install_script("echo quick"))
    approved(client, "quick", quick)
    assert run_to_end(client, client.ok("newExecution", name="quick")["execution"]["id"])["stdout"] == "quick\n"


def test_delete_activity_while_executions_run(client, scripts):
    url = scripts.add("doomed.sh", install_script('echo begin; sleep 30'))
    approved(client, "doomed", url)
    ids = [client.ok("newExecution", name="doomed")["execution"]["id"] for _ in range(3)]
    wait_until(lambda: all(client.ok("getExecutionStatus", executionId=i)["execution"]["status"] == "in progress"
                           for i in ids), what="running")
    body = client.ok("deleteActivity", name="doomed")
    assert body["status"] == "uninstalling" and body["activity"]["status"] == "uninstalling"
    code, err = client.call("newExecution", name="doomed")
    assert code in (404, 409), err
    wait_until(lambda: client.call("getActivityStatus", name="doomed")[0] == 404, what="activity removed")
    for exec_id in ids:
        assert run_to_end(client, exec_id)["status"] == "terminated"
    # The name is free again.
    approved(client, "doomed", url)


def test_stderr_flood_does_not_block(client, scripts):
    url = scripts.add("flood.sh", install_script("yes x | head -c 20000000 >&2; echo done"))
    approved(client, "flood", url)
    done = run_to_end(client, client.ok("newExecution", name="flood")["execution"]["id"], timeout_s=60)
    assert done["status"] == "finished" and done["stdout"] == "done\n"
    assert done.get("stderrTruncated") is True
    assert 0 < len(done["stderr"]) <= 1024 * 1024 and set(done["stderr"]) == {"x", "\n"}


def test_request_id_makes_new_execution_idempotent(client, scripts):
    url = scripts.add("idem.sh", install_script('echo "idem $1"'))
    approved(client, "idem", url)
    first = client.ok("newExecution", 0, name="idem", input="1", requestId="req-42")["execution"]
    again = client.ok("newExecution", 1, name="idem", input="1", requestId="req-42")["execution"]
    assert again["id"] == first["id"]
    assert run_to_end(client, first["id"])["stdout"] == "idem 1\n"
