"""Tests for podnode.raft.state: the replicated state machine, driven only through State.apply()."""

from __future__ import annotations

import copy
import random
import sys
from typing import Any

import pytest

from podnode.raft import commands as C
from podnode.raft.lifecycle import (
    ACTIVITY_TRANSITIONS,
    EXECUTION_TRANSITIONS,
    INSTALLATION_TRANSITIONS,
    NODE_TRANSITIONS,
    can_move,
)
from podnode.raft.state import State

from . import old_snapshot
from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok, snapshot


# ---- command builders -----------------------------------------------------------------------------
def uninstall_done(name: str, node: str) -> C.UninstallDone:
    return C.UninstallDone(name=name, node=node)


def exec_new(name: str, request_id: str | None = None, input: str = "", now: float = NOW) -> C.ExecNew:
    return C.ExecNew(name=name, input=input, requestId=request_id, now=now)


def place(*pairs: tuple[int, str], now: float = NOW) -> C.ExecPlace:
    return C.ExecPlace(placements=[list(p) for p in pairs], now=now)


def report(exec_id: int, node: str, attempt: int = 1, exit_code: int | None = 0, stdout: str = "",
           stderr: str = "", error: str | None = None) -> C.Report:
    return C.Report(id=exec_id, node=node, attempt=attempt, exitCode=exit_code, stdout=stdout, stderr=stderr,
                    stdoutTruncated=False, stderrTruncated=False, error=error)


def finish(*reports: C.Report, now: float = NOW) -> C.ExecFinish:
    return C.ExecFinish(reports=list(reports), now=now)


def terminate(exec_id: int, now: float = NOW) -> C.ExecTerminate:
    return C.ExecTerminate(id=exec_id, now=now)


def forget(exec_id: int) -> C.ExecForget:
    return C.ExecForget(id=exec_id)


def batch(cmds: list[Any]) -> dict:
    """A batch's wire form, of typed commands and of anything else as it is (the malformed ones)."""
    return C.batch([cmd.to_wire() if isinstance(cmd, C.Command) else cmd for cmd in cmds])


def refused(state: State, cmd: Any, kind: str) -> dict:
    result = state.apply(cmd)
    assert result.get("error") == kind, (cmd, result)
    assert isinstance(result.get("message"), str) and result["message"]
    return result


def busy_state() -> State:
    """A state with a bit of everything: waiting, running and finished executions, a verifying activity."""
    state = State()
    ok(state, node_up("n1", 2))
    ok(state, node_up("n2", 1))
    ok(state, activity_new("act"))
    ok(state, assign(("act", "n1")))
    ok(state, install_done("act", "n1"))
    ok(state, activity_new("ver"))
    ok(state, assign(("ver", "n2")))
    ok(state, exec_new("act", request_id="r1"))   # 1: stays waiting
    ok(state, exec_new("act"))                    # 2: running on n1
    ok(state, exec_new("act"))                    # 3: finished
    assert ok(state, place((2, "n1"), (3, "n1")))["placed"] == [2, 3]
    ok(state, finish(report(3, "n1", stdout="out3")))
    assert [state.executions[i]["status"] for i in (1, 2, 3)] == ["waiting", "in progress", "finished"]
    return state


# ---- nodes ----------------------------------------------------------------------------------------
def test_node_up_registers_and_refreshes_a_node():
    state = State()
    result = ok(state, node_up("n1", slots=3, now=10.0))
    assert result["node"]["id"] == "n1"
    node = state.nodes["n1"]
    assert node["slots"] == 3 and node["joinedAt"] == 10.0 and node["seenAt"] == 10.0
    assert node["raftAddr"] == "n1:4000" and node["httpUrl"] == "http://n1:8000"

    ok(state, node_up("n1", slots=-5, now=20.0))
    node = state.nodes["n1"]
    assert node["slots"] == 0, "negative slots are clamped"
    assert node["joinedAt"] == 10.0 and node["seenAt"] == 20.0


# ---- activities and installations ---------------------------------------------------------------
def test_activity_new_and_duplicate_name():
    state = State()
    result = ok(state, activity_new("act", maxAttempts=5))
    activity = result["activity"]
    assert activity["status"] == "verifying" and activity["id"] == 1 and activity["maxAttempts"] == 5
    assert activity["installationScriptLocation"] == "http://scripts/act.sh"
    assert state.installations["act"] == {}

    before = snapshot(state)
    refused(state, activity_new("act"), "conflict")
    assert snapshot(state) == before

    assert ok(state, activity_new("other"))["activity"]["id"] == 2
    assert state.activities["other"]["maxAttempts"] == 3


def test_install_assign_verifies_on_one_node_only():
    state = State()
    ok(state, node_up("n1"))
    ok(state, node_up("n2"))
    ok(state, activity_new("act"))

    result = ok(state, assign(("act", "n1"), ("act", "n2")))
    assert result["assigned"] == [["act", "n1"]]
    assert result["refused"] == [["act", "n2", "already being verified on another node"]]
    assert state.installations["act"] == {"n1": {"status": "installing", "since": NOW}}

    result = ok(state, assign(("act", "n2")))
    assert result["assigned"] == [] and result["refused"][0][2] == "already being verified on another node"


def test_install_assign_refusals():
    state = State()
    ok(state, node_up("n1"))
    ok(state, activity_new("act"))
    ok(state, assign(("act", "n1")))
    before = snapshot(state)
    result = ok(state, assign(("act", "ghost"), ("nope", "n1"), ("act", "n1")))
    assert result["assigned"] == []
    assert result["refused"] == [
        ["act", "ghost", "no such node"],
        ["nope", "n1", "no such activity"],
        ["act", "n1", "already assigned"],
    ]
    assert snapshot(state) == before


def test_install_done_ok_approves_then_install_everywhere():
    state = State()
    ok(state, node_up("n1"))
    ok(state, node_up("n2"))
    ok(state, activity_new("act"))
    ok(state, assign(("act", "n1")))
    ok(state, install_done("act", "n1", now=NOW + 1))
    assert state.activities["act"]["status"] == "approved"
    assert state.installations["act"]["n1"] == {"status": "installed", "since": NOW + 1}

    # Once approved, other nodes may install it.
    assert ok(state, assign(("act", "n2")))["assigned"] == [["act", "n2"]]
    # A failure on another node after approval does not reject the activity.
    ok(state, install_done("act", "n2", ok=False, error="disk full"))
    assert state.activities["act"]["status"] == "approved"
    assert state.installations["act"]["n2"]["status"] == "failed"
    assert state.installations["act"]["n2"]["errorDescription"] == "disk full"

    # A report for an installation that is not in progress is ignored.
    before = snapshot(state)
    assert ok(state, install_done("act", "n1", ok=False))["ignored"] is True
    assert ok(state, install_done("nope", "n1"))["ignored"] is True
    assert snapshot(state) == before


def test_install_failure_while_verifying_rejects_and_errors_waiting_executions():
    state = State()
    ok(state, node_up("n1"))
    ok(state, activity_new("act"))
    ok(state, assign(("act", "n1")))
    e1 = ok(state, exec_new("act"))["execution"]
    e2 = ok(state, exec_new("act"))["execution"]
    assert e1["status"] == e2["status"] == "waiting"

    ok(state, install_done("act", "n1", ok=False, error="script exited 2", now=NOW + 5))
    activity = state.activities["act"]
    assert activity["status"] == "rejected"
    assert activity["errorDescription"] == "script exited 2"
    for exec_id in (e1["id"], e2["id"]):
        execution = state.executions[exec_id]
        assert execution["status"] == "error"
        assert execution["finishTime"] == NOW + 5
        assert "script exited 2" in execution["errorDescription"]

    # A rejected activity takes no executions and no installations.
    refused(state, exec_new("act"), "conflict")
    ok(state, node_up("n2"))
    assert ok(state, assign(("act", "n2")))["refused"] == [["act", "n2", "activity is rejected"]]


def test_install_failure_without_message_gets_a_description():
    state = State()
    ok(state, node_up("n1"))
    ok(state, activity_new("act"))
    ok(state, assign(("act", "n1")))
    ok(state, install_done("act", "n1", ok=False))
    assert state.activities["act"]["status"] == "rejected"
    assert state.activities["act"]["errorDescription"]


# ---- executions: creation -----------------------------------------------------------------------
def test_exec_new_creates_waiting_execution():
    state = approved_state()
    result = ok(state, exec_new("act", input="hello", now=NOW + 1))
    execution = result["execution"]
    assert execution["id"] == 1 and execution["status"] == "waiting"
    assert execution["stdin"] == "hello" and execution["submitTime"] == NOW + 1
    assert execution["activityName"] == "act" and execution["activityId"] == state.activities["act"]["id"]
    assert execution["attempt"] == 0 and execution["workerId"] is None
    assert "duplicate" not in result
    assert ok(state, exec_new("act"))["execution"]["id"] == 2


def test_a_waiting_execution_is_kept_compact_until_it_first_runs():
    """A queue of 100,000 must cost little memory: a waiting execution that never ran holds 5 fields (6 with its
    requestId), a dict of 184 bytes (272) rather than 464; it gains the run fields and its activity's id when it
    first moves, and keeps them when it is queued again after a lost attempt. Reads see every field."""
    state = approved_state({"n1": 1})
    ok(state, exec_new("act", input="a"))
    ok(state, exec_new("act", input="b", request_id="r-1"))
    assert set(state.executions[1]) == {"id", "activityName", "stdin", "status", "submitTime"}
    assert set(state.executions[2]) == set(state.executions[1]) | {"requestId"}
    assert sys.getsizeof(state.executions[1]) <= 184 and sys.getsizeof(state.executions[2]) <= 272
    read = state.execution(1)
    assert read["status"] == "waiting" and read["activityId"] == state.activities["act"]["id"]
    assert read["attempt"] == 0 and read["workerId"] is None and read["stdout"] == ""
    ok(state, C.ExecPlace(now=NOW + 1, placements=[[1, "n1"]]))
    assert state.executions[1]["attempt"] == 1 and state.executions[1]["workerId"] == "n1"
    assert {"finishTime", "exitCode", "stdout", "stderr"} <= set(state.executions[1])
    ok(state, C.ExecTerminate(id=2, now=NOW + 2))   # ended without ever running: every field, none invented
    ended = state.executions[2]
    assert ended["status"] == "terminated" and ended["finishTime"] == NOW + 2 and ended["workerId"] is None
    assert ended["attempt"] == 0 and ended["stdout"] == "" and ended["exitCode"] is None
    assert ended["activityId"] == state.activities["act"]["id"]
    ok(state, exec_new("act", input="c"))   # deleting the activity drops its record at once (nothing installed
    ok(state, C.ActivityDelete(name="act", now=NOW + 3))   # anywhere lost): its waiting ones keep its id
    assert "act" not in state.activities or state.activities["act"]["status"] == "uninstalling"
    assert state.executions[3]["status"] == "terminated" and state.executions[3]["activityId"] == 1


def test_a_waiting_execution_keeps_its_activitys_id_when_the_activity_goes_at_once():
    state = State()
    ok(state, node_up("n1"))
    ok(state, activity_new("act"))   # verifying, installed nowhere: a delete drops its record at once
    activity_id = state.activities["act"]["id"]
    ok(state, exec_new("act"))
    ok(state, C.ActivityDelete(name="act", now=NOW + 1))
    assert "act" not in state.activities
    ended = state.execution(1)
    assert ended["status"] == "terminated" and ended["activityId"] == activity_id and ended["activityName"] == "act"


def test_exec_new_on_verifying_activity_waits():
    state = State()
    ok(state, activity_new("act"))
    assert ok(state, exec_new("act"))["execution"]["status"] == "waiting"


def test_exec_new_refusals():
    state = approved_state()
    before = snapshot(state)
    refused(state, exec_new("nope"), "not_found")
    assert snapshot(state) == before


def test_exec_new_request_id_dedupe():
    state = approved_state()
    ok(state, activity_new("other"))
    first = ok(state, exec_new("act", request_id="req-1", input="a"))
    before = snapshot(state)
    again = ok(state, exec_new("act", request_id="req-1", input="a", now=NOW + 3))
    assert again["duplicate"] is True
    assert again["execution"] == first["execution"]
    assert snapshot(state) == before, "a duplicate creates nothing"

    refused(state, exec_new("other", request_id="req-1"), "conflict")
    assert snapshot(state) == before

    # Without a request id every call is new.
    assert ok(state, exec_new("act"))["execution"]["id"] == first["execution"]["id"] + 1


def test_exec_new_request_id_of_forgotten_execution_is_a_conflict():
    state = approved_state()
    exec_id = ok(state, exec_new("act", request_id="req"))["execution"]["id"]
    ok(state, terminate(exec_id))
    ok(state, forget(exec_id))
    refused(state, exec_new("act", request_id="req"), "conflict")


# ---- executions: placement ----------------------------------------------------------------------
def test_exec_place_moves_waiting_to_in_progress():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, exec_new("act"))
    result = ok(state, place((1, "n2"), now=NOW + 2))
    assert result == {"ok": True, "placed": [1], "refused": []}
    execution = state.executions[1]
    assert execution["status"] == "in progress"
    assert execution["workerId"] == "n2" and execution["attempt"] == 1 and execution["startTime"] == NOW + 2
    assert state.busy_slots() == {"n1": 0, "n2": 1}


def test_exec_place_refusals_and_slots():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, node_up("n3", 5))              # up, but the activity is not installed there
    ok(state, activity_new("ver"))
    ok(state, assign(("ver", "n2")))        # installing, not installed
    for _ in range(4):
        ok(state, exec_new("act"))           # 1..4
    ok(state, exec_new("ver"))               # 5
    ok(state, exec_new("act"))               # 6
    ok(state, terminate(6))

    result = ok(state, place(
        (1, "n1"),        # placed
        (2, "n1"),        # n1 has one slot, now taken
        (1, "n2"),        # already in progress
        (3, "ghost"),     # unknown node
        (3, "n3"),        # not installed there
        (5, "n2"),        # installing, not installed
        (99, "n1"),       # unknown execution
        (6, "n2"),        # terminated, not waiting
        (4, "n2"),        # placed
    ))
    assert result["placed"] == [1, 4]
    assert result["refused"] == [
        [2, "node has no free slot"],
        [1, "execution is in progress"],
        [3, "no such node"],
        [3, "activity not installed on node"],
        [5, "activity not installed on node"],
        [99, "no such execution"],
        [6, "execution is terminated"],
    ]
    assert [state.executions[i]["status"] for i in (1, 2, 3, 4, 5)] == \
        ["in progress", "waiting", "waiting", "in progress", "waiting"]

    # Slots are counted against what already runs.
    assert ok(state, place((2, "n1")))["refused"] == [[2, "node has no free slot"]]


def test_exec_place_counts_terminated_runs_still_stopping():
    state = approved_state({"n1": 1})
    ok(state, exec_new("act"))
    ok(state, exec_new("act"))
    ok(state, place((1, "n1")))
    ok(state, terminate(1))
    assert state.executions[1]["outputPending"] is True
    assert ok(state, place((2, "n1")))["refused"] == [[2, "node has no free slot"]]
    ok(state, finish(report(1, "n1", exit_code=-15)))
    assert ok(state, place((2, "n1")))["placed"] == [2]


# ---- executions: results ------------------------------------------------------------------------
def test_exec_finish_exit_codes_and_output():
    state = approved_state({"n1": 3})
    for _ in range(3):
        ok(state, exec_new("act"))
    ok(state, place((1, "n1"), (2, "n1"), (3, "n1")))
    result = ok(state, finish(
        report(1, "n1", exit_code=0, stdout="hi\n", stderr="warn"),
        report(2, "n1", exit_code=3, stderr="boom"),
        report(3, "n1", exit_code=None, error="could not start main.sh"),
        now=NOW + 9,
    ))
    assert result["accepted"] == [1, 2, 3] and result["ignored"] == []
    e1, e2, e3 = (state.executions[i] for i in (1, 2, 3))
    assert e1["status"] == "finished" and e1["exitCode"] == 0
    assert e1["stdout"] == "hi\n" and e1["stderr"] == "warn" and e1["finishTime"] == NOW + 9
    assert e1["stdoutTruncated"] is False and e1["stderrTruncated"] is False
    assert e2["status"] == "error" and e2["exitCode"] == 3 and e2["stderr"] == "boom"
    assert e3["status"] == "error" and e3["errorDescription"] == "could not start main.sh"
    assert state.busy_slots() == {"n1": 0}

    # A second report for an ended execution changes nothing.
    before = snapshot(state)
    assert ok(state, finish(report(1, "n1", exit_code=5, stdout="late")))["ignored"] == [1]
    assert snapshot(state) == before


def test_exec_finish_ignores_stale_attempt_and_wrong_node():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, exec_new("act"))
    ok(state, place((1, "n1")))
    before = snapshot(state)
    result = ok(state, finish(
        report(1, "n2", attempt=1),   # wrong node
        report(1, "n1", attempt=2),   # another attempt
        report(1, "n1", attempt=0),
        report(42, "n1"),             # unknown execution
    ))
    assert result["accepted"] == [] and result["ignored"] == [1, 1, 1, 42]
    assert snapshot(state) == before
    assert ok(state, finish(report(1, "n1", attempt=1)))["accepted"] == [1]
    assert state.executions[1]["status"] == "finished"


def test_exec_terminate_waiting():
    state = approved_state()
    ok(state, exec_new("act"))
    result = ok(state, terminate(1, now=NOW + 4))
    execution = result["execution"]
    assert execution["status"] == "terminated" and execution["finishTime"] == NOW + 4
    assert "outputPending" not in execution
    assert execution["errorDescription"]


def test_exec_terminate_running_waits_for_output():
    state = approved_state({"n1": 1})
    ok(state, exec_new("act"))
    ok(state, place((1, "n1")))
    result = ok(state, terminate(1))
    assert result["execution"]["status"] == "terminated"
    assert result["execution"]["outputPending"] is True

    result = ok(state, finish(report(1, "n1", exit_code=-15, stdout="partial", stderr="killed"), now=NOW + 2))
    assert result["accepted"] == [1]
    execution = state.executions[1]
    assert execution["status"] == "terminated"
    assert "outputPending" not in execution
    assert execution["stdout"] == "partial" and execution["stderr"] == "killed" and execution["exitCode"] == -15

    # Output is attached once only.
    before = snapshot(state)
    assert ok(state, finish(report(1, "n1", stdout="again")))["ignored"] == [1]
    assert snapshot(state) == before


def test_exec_terminate_refusals():
    state = approved_state()
    ok(state, exec_new("act"))
    ok(state, terminate(1))
    before = snapshot(state)
    refused(state, terminate(1), "conflict")
    result = refused(state, terminate(77), "not_found")
    assert result["message"] == ("Execution with id 77 doesn't exist, its result has already been retrieved "
                                 "or it expired")
    assert snapshot(state) == before


def test_exec_forget_only_ended_and_only_once():
    state = approved_state({"n1": 1})
    ok(state, exec_new("act"))
    ok(state, place((1, "n1")))
    before = snapshot(state)
    refused(state, forget(1), "conflict")
    assert snapshot(state) == before

    ok(state, finish(report(1, "n1", stdout="result")))
    result = ok(state, forget(1))
    assert result["execution"]["stdout"] == "result" and result["execution"]["status"] == "finished"
    assert 1 not in state.executions
    result = refused(state, forget(1), "not_found")
    assert result["message"] == ("Execution with id 1 doesn't exist, its result has already been retrieved "
                                 "or it expired")


def test_exec_expire_drops_ended_results_and_old_request_ids():
    state = approved_state({"n1": 2})
    ok(state, exec_new("act", request_id="old", now=10.0))  # 1: finished
    ok(state, exec_new("act", request_id="new", now=500.0))  # 2: stays waiting
    ok(state, exec_new("act"))                               # 3: running
    ok(state, place((1, "n1"), (3, "n1")))
    ok(state, finish(report(1, "n1")))
    result = ok(state, {"t": C.EXEC_EXPIRE, "ids": [1, 2, 3, 99], "requestIdsBefore": 100.0, "now": NOW})
    assert result["expired"] == [1]
    assert sorted(state.executions) == [2, 3]
    assert list(state.request_ids) == ["new"]

    # Without a horizon request ids are kept.
    ok(state, {"t": C.EXEC_EXPIRE, "ids": [], "requestIdsBefore": None, "now": NOW})
    assert list(state.request_ids) == ["new"]


# ---- deleting activities ------------------------------------------------------------------------
def test_activity_delete_terminates_and_uninstalls():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, activity_new("keep"))
    ok(state, exec_new("act"))   # 1: running
    ok(state, exec_new("act"))   # 2: waiting
    ok(state, exec_new("act"))   # 3: finished
    ok(state, exec_new("keep"))  # 4: other activity
    ok(state, place((1, "n1"), (3, "n2")))
    ok(state, finish(report(3, "n2")))

    result = ok(state, C.ActivityDelete(name="act", now=NOW + 1))
    assert result["activity"]["status"] == "uninstalling"
    assert state.activities["act"]["status"] == "uninstalling"
    assert {n: i["status"] for n, i in state.installations["act"].items()} == \
        {"n1": "uninstalling", "n2": "uninstalling"}
    e1, e2, e3, e4 = (state.executions[i] for i in (1, 2, 3, 4))
    assert e1["status"] == "terminated" and e1["outputPending"] is True
    assert e2["status"] == "terminated" and "outputPending" not in e2
    assert e3["status"] == "finished"
    assert e4["status"] == "waiting"

    # While it is being uninstalled: no new executions, no second delete, the name stays taken.
    refused(state, exec_new("act"), "conflict")
    refused(state, C.ActivityDelete(name="act", now=NOW), "conflict")
    refused(state, activity_new("act"), "conflict")
    assert ok(state, assign(("act", "n1")))["refused"] == [["act", "n1", "already assigned"]]

    ok(state, uninstall_done("act", "n1"))
    assert "act" in state.activities
    assert ok(state, uninstall_done("act", "n1"))["ignored"] is True
    ok(state, uninstall_done("act", "n2"))
    assert "act" not in state.activities and "act" not in state.installations

    # The name is free again.
    assert ok(state, activity_new("act"))["activity"]["status"] == "verifying"


def test_activity_delete_without_installations_is_immediate():
    state = State()
    ok(state, activity_new("act"))
    ok(state, exec_new("act"))
    result = ok(state, C.ActivityDelete(name="act", now=NOW))
    assert result["activity"]["status"] == "uninstalling"
    assert "act" not in state.activities and "act" not in state.installations
    assert state.executions[1]["status"] == "terminated"
    refused(state, C.ActivityDelete(name="act", now=NOW), "not_found")


def test_uninstall_done_for_installed_activity_is_ignored():
    state = approved_state()
    before = snapshot(state)
    assert ok(state, uninstall_done("act", "n1"))["ignored"] is True
    assert ok(state, uninstall_done("nope", "n1"))["ignored"] is True
    assert snapshot(state) == before


# ---- batch ----------------------------------------------------------------------------------------
def test_batch_results_in_order():
    state = State()
    result = ok(state, batch([
        node_up("n1"),
        activity_new("act"),
        activity_new("act"),
        exec_new("act"),
        C.Sync(),
        "garbage",
        batch([activity_new("nested")]),
    ]))
    results = result["results"]
    assert len(results) == 7
    assert results[0]["node"]["id"] == "n1"
    assert results[1]["activity"]["name"] == "act"
    assert results[2]["error"] == "conflict"
    assert results[3]["execution"]["id"] == 1
    assert results[4] == {"ok": True}
    assert results[5]["error"] == "bad_request"
    assert results[6]["error"] == "bad_request" and "nested" in results[6]["message"]
    assert "nested" not in state.activities


def test_empty_batch():
    assert State().apply(batch([])) == {"ok": True, "results": []}


# ---- robustness ---------------------------------------------------------------------------------
MALFORMED: list[Any] = [
    None, 0, 1.5, "exec_new", b"\x00", [], [C.Sync()], {}, {"t": None}, {"t": 7}, {"t": ["x"]},
    {"t": "no_such_command"}, {"t": ""},
    # nodes
    {"t": C.NODE_UP},
    {"t": C.NODE_UP, "node": "n9"},
    {"t": C.NODE_UP, "node": "n9", "now": NOW},
    {"t": C.NODE_UP, "node": "n9", "raftAddr": "a", "httpUrl": "h", "now": NOW},
    C.NodeUp(node="n9", raftAddr="a", httpUrl="h", slots="many", now=NOW),
    C.NodeUp(node="n1", raftAddr="a", httpUrl="h", slots="many", now=NOW),
    # activities
    {"t": C.ACTIVITY_NEW},
    {"t": C.ACTIVITY_NEW, "name": "new"},
    {"t": C.ACTIVITY_NEW, "name": "new", "url": "u"},
    C.ActivityNew(name=["new"], url="u", now=NOW),
    C.ActivityNew(name="new", url="u", now=NOW, maxAttempts="x"),
    C.ActivityNew(name="act", url="u", now=NOW),
    {"t": C.ACTIVITY_DELETE},
    {"t": C.ACTIVITY_DELETE, "name": "act"},
    C.ActivityDelete(name={"a": 1}, now=NOW),
    C.ActivityDelete(name="missing", now=NOW),
    # installations
    {"t": C.INSTALL_ASSIGN, "assignments": [["act", "n2"]]},
    C.InstallAssign(assignments=5, now=NOW),
    C.InstallAssign(assignments=[["act"]], now=NOW),
    C.InstallAssign(assignments=[["act", "n2"], "garbage"], now=NOW),
    C.InstallAssign(assignments=[["act", "n2"], ["act", ["n1"]]], now=NOW),
    C.InstallAssign(assignments=[["act", "n2"], [["x"], "n1"]], now=NOW),
    {"t": C.INSTALL_DONE},
    {"t": C.INSTALL_DONE, "name": "ver"},
    {"t": C.INSTALL_DONE, "name": "ver", "node": "n2", "ok": True},
    {"t": C.INSTALL_DONE, "name": "ver", "node": "n2", "ok": False},
    C.InstallDone(name=["ver"], node="n2", ok=True, now=NOW),
    {"t": C.UNINSTALL_DONE},
    {"t": C.UNINSTALL_DONE, "name": "act"},
    # executions
    {"t": C.EXEC_NEW},
    {"t": C.EXEC_NEW, "name": "act"},
    {"t": C.EXEC_NEW, "name": "act", "requestId": "r2"},
    C.ExecNew(name="act", requestId=["r"], now=NOW),
    C.ExecNew(name=["act"], now=NOW),
    C.ExecNew(name="missing", now=NOW),
    {"t": C.EXEC_PLACE, "placements": [[1, "n1"]]},
    C.ExecPlace(placements=3, now=NOW),
    C.ExecPlace(placements=[[1]], now=NOW),
    C.ExecPlace(placements=[[1, "n1"], 5], now=NOW),
    C.ExecPlace(placements=[[1, "n1"], [[2], "n1"]], now=NOW),
    C.ExecPlace(placements=[[1, "n1"], [2, ["n1"]]], now=NOW),
    {"t": C.EXEC_FINISH, "reports": 5, "now": NOW},
    {"t": C.EXEC_FINISH, "reports": ["x"], "now": NOW},
    {"t": C.EXEC_FINISH, "reports": [{"id": 2, "node": "n1", "attempt": 1, "exitCode": 0}]},
    {"t": C.EXEC_FINISH, "reports": [{"id": 2, "node": "n1", "attempt": 1, "exitCode": 0}, "x"], "now": NOW},
    C.ExecFinish(reports=[C.Report(id=2, node="n1", attempt=1, exitCode=0), C.Report(id=[1])], now=NOW),
    {"t": C.EXEC_TERMINATE},
    {"t": C.EXEC_TERMINATE, "id": 1},
    {"t": C.EXEC_TERMINATE, "id": 2},
    C.ExecTerminate(id=[1], now=NOW),
    C.ExecTerminate(id=3, now=NOW),
    {"t": C.EXEC_FORGET},
    C.ExecForget(id=[3]),
    C.ExecForget(id=1),
    C.ExecForget(id=404),
    C.ExecExpire(ids=5),
    C.ExecExpire(ids=[[3]]),
    C.ExecExpire(ids=[3, [3]]),
    C.ExecExpire(ids=[3], requestIdsBefore="tomorrow"),
    C.Batch(cmds=5),
]


def test_malformed_commands_are_refused_without_raising_or_changing_state():
    for cmd in MALFORMED:
        state = busy_state()
        before = snapshot(state)
        try:
            result = state.apply(copy.deepcopy(cmd))
        except Exception as exc:  # pragma: no cover - the point of the test
            pytest.fail(f"apply({cmd!r}) raised {exc!r}")
        assert isinstance(result, dict) and "error" in result, (cmd, result)
        assert isinstance(result.get("message"), str), (cmd, result)
        assert snapshot(state) == before, f"refused command {cmd!r} changed the state"


def test_malformed_commands_inside_a_batch():
    state = busy_state()
    before = snapshot(state)
    result = state.apply(batch(copy.deepcopy(MALFORMED)))
    assert len(result["results"]) == len(MALFORMED)
    for cmd, sub in zip(MALFORMED, result["results"]):
        assert "error" in sub, (cmd, sub)
    assert snapshot(state) == before


# ---- snapshots and determinism ------------------------------------------------------------------
def scenario() -> list[dict]:
    return [
        node_up("n1", 2), node_up("n2", 1),
        activity_new("act"), assign(("act", "n2")), install_done("act", "n2"),
        assign(("act", "n1")), install_done("act", "n1", now=NOW + 1),
        activity_new("bad"), assign(("bad", "n1")),
        exec_new("act", request_id="a", input="x"), exec_new("act"), exec_new("bad"), exec_new("act"),
        place((1, "n1"), (2, "n2"), (3, "n1"), (4, "n1")),
        install_done("bad", "n1", ok=False, error="nope"),
        finish(report(1, "n1", stdout="one"), report(2, "n2", exit_code=1, stderr="two"), now=NOW + 2),
        terminate(4, now=NOW + 3),
        exec_new("act", request_id="a"),
        forget(1),
        activity_new("gone"), exec_new("gone"),
        C.ActivityDelete(name="gone", now=NOW + 4),
        C.ActivityDelete(name="bad", now=NOW + 4),
        batch([exec_new("act"), place((5, "n1"))]),
        "garbage", {"t": C.EXEC_NEW},
    ]


def test_snapshot_round_trip_through_msgpack():
    state = State()
    for cmd in scenario():
        state.apply(cmd)
    restored = State()
    restored.load_dict(C.decode(C.encode(state.to_dict())))
    assert restored.to_dict() == state.to_dict()
    assert restored.execution(2) == state.execution(2)
    assert restored.activity("act") == state.activity("act")

    # Both go on the same way.
    more = [exec_new("act"), place((6, "n2")), finish(report(5, "n1")), forget(5),
            uninstall_done("bad", "n1"), C.ExecExpire(ids=[2], requestIdsBefore=NOW + 10)]
    for cmd in more:
        assert restored.apply(copy.deepcopy(cmd)) == state.apply(copy.deepcopy(cmd))
    assert restored.to_dict() == state.to_dict()
    assert "bad" not in state.activities and 2 not in state.executions and state.request_ids == {}


def test_load_dict_of_empty_snapshot_gives_fresh_state():
    state = State()
    state.load_dict({})
    assert state.to_dict() == State().to_dict()


def test_determinism():
    a, b = State(), State()
    results_a = [a.apply(copy.deepcopy(cmd)) for cmd in scenario()]
    results_b = [b.apply(copy.deepcopy(cmd)) for cmd in scenario()]
    assert results_a == results_b
    assert a.to_dict() == b.to_dict()
    # The scenario did real work.
    assert a.executions[2]["status"] == "error" and a.executions[4]["status"] == "terminated"
    assert a.activities["bad"]["status"] == "uninstalling"
    assert "gone" not in a.activities


def test_node_drain_deadline_zero_is_now_and_none_is_the_default():
    state = State()
    ok(state, node_up("n1"))
    ok(state, node_up("n2"))
    ok(state, C.NodeDrain(node="n1", deadlineS=0.0, now=NOW))
    assert state.nodes["n1"]["drainDeadline"] == NOW, "deadline=0 must requeue at once, not in 300 s"
    ok(state, C.NodeDrain(node="n2", now=NOW))
    assert state.nodes["n2"]["drainDeadline"] == NOW + 300.0


# ---- node lifecycle ---------------------------------------------------------------------------------
def node_in(status: str) -> State:
    """A state with node n1 in the given status (and n2 up)."""
    state = State()
    ok(state, node_up("n1"))
    ok(state, node_up("n2"))
    steps = {"up": [], "draining": [C.NodeDrain(node="n1", now=NOW)],
             "lost": [C.NodeLost(node="n1", now=NOW)],
             "left": [C.NodeLeft(node="n1", now=NOW)]}[status]
    for cmd in steps:
        ok(state, cmd)
    assert state.nodes["n1"]["status"] == status
    return state


def test_the_node_transition_table_names_every_status():
    statuses = {"up", "draining", "lost", "left"}
    assert set(NODE_TRANSITIONS) == statuses
    assert all(targets <= statuses and status not in targets for status, targets in NODE_TRANSITIONS.items())


@pytest.mark.parametrize("status", ["up", "draining", "lost", "left"])
@pytest.mark.parametrize("cmd, target", [
    (C.NodeDrain(node="n1", now=NOW + 1), "draining"),
    (C.NodeLost(node="n1", now=NOW + 1), "lost"),
    (C.NodeLeft(node="n1", now=NOW + 1), "left"),
])
def test_a_node_status_changes_only_as_its_transition_table_allows(status, cmd, target):
    state = node_in(status)
    before = snapshot(state)
    result = state.apply(copy.deepcopy(cmd))
    if can_move(NODE_TRANSITIONS, status, target):
        assert result.get("ok") and not result.get("ignored"), result
        assert state.nodes["n1"]["status"] == target
    else:
        assert "error" in result or result.get("ignored"), result
        assert snapshot(state) == before


@pytest.mark.parametrize("status, after", [("up", "up"), ("draining", "draining"), ("lost", "up"), ("left", "up")])
def test_a_node_registering_again_is_up_unless_it_is_draining(status, after):
    state = node_in(status)
    ok(state, node_up("n1", now=NOW + 1))
    assert state.nodes["n1"]["status"] == after
    assert can_move(NODE_TRANSITIONS, status, after) or status == after


def statuses(state: State) -> dict[tuple, str]:
    found = {("node", n): rec["status"] for n, rec in state.nodes.items()}
    found.update({("activity", a): rec["status"] for a, rec in state.activities.items()})
    found.update({("install", a, n): inst["status"] for a, installs in state.installations.items()
                  for n, inst in installs.items()})
    found.update({("execution", i): e["status"] for i, e in state.executions.items()})
    return found


def random_command(rng: random.Random, state: State, now: float) -> dict:
    node, name = rng.choice(["n1", "n2", "n3"]), rng.choice(["a", "b"])
    running = [i for i, e in state.executions.items() if e.get("workerId")]
    exec_id = rng.choice(running if running and rng.random() < 0.5 else sorted(state.executions) or [1])
    choices = [
        node_up(node, rng.randint(0, 2), now=now),
        activity_new(name, now=now),
        assign((name, node), now=now),
        install_done(name, node, ok=rng.random() < 0.8, now=now),
        C.UninstallDone(name=name, node=node, now=now),
        C.Reinstall(name=name, node=node, now=now),
        C.ActivityDelete(name=name, now=now),
        C.ExecNew(name=name, now=now, node=rng.choice([None, node])),
        C.ExecPlace(placements=[[exec_id, node]], now=now),
        {"t": C.EXEC_FINISH, "now": now, "pull": rng.choice([None, node]), "reports": [
            {"id": i, "node": state.executions[i]["workerId"], "attempt": state.executions[i]["attempt"],
             "exitCode": rng.choice([0, 1])} for i in running[:1]]},
        C.ExecTerminate(id=exec_id, now=now),
        {"t": C.EXEC_LOST, "now": now, "reports": [
            {"id": i, "node": state.executions[i]["workerId"], "attempt": state.executions[i]["attempt"]}
            for i in running[-1:]]},
        C.NodeLost(node=node, now=now),
        C.NodeDrain(node=node, now=now),
        C.NodeLeft(node=node, now=now),
    ]
    weights = [3, 2, 3, 3, 1, 1, 1, 4, 3, 4, 1, 1, 1, 1, 1]
    return rng.choices(choices, weights=weights)[0]


@pytest.mark.parametrize("seed", range(20))
def test_every_status_change_is_in_its_transition_table(seed):
    tables = {"node": NODE_TRANSITIONS, "activity": ACTIVITY_TRANSITIONS, "install": INSTALLATION_TRANSITIONS,
              "execution": EXECUTION_TRANSITIONS}
    rng, state, now, moves = random.Random(seed), State(), NOW, set()
    for _ in range(300):
        now += rng.choice([0.0, 1.0])
        before = statuses(state)
        cmd = random_command(rng, state, now)
        result = state.apply(cmd)
        assert result.get("error") != "internal", (cmd, result)
        for key, status in statuses(state).items():
            old = before.get(key)
            if old is not None and old != status:
                assert can_move(tables[key[0]], old, status), (cmd, key, old, status)
                moves.add((key[0], old, status))
    assert len(moves) >= 10, moves  # the walk went places


# ---- a snapshot written by the code before the split ------------------------------------------------
def test_a_snapshot_written_before_the_state_was_split_loads_and_packs_to_the_same_bytes():
    state = State()
    state.load_dict(C.decode(old_snapshot.PACKED))
    # The fields it had come back the same, in the same order; fields added since are appended, empty.
    snapshot = state.to_dict()
    old_part = {k: v for k, v in snapshot.items() if k in old_snapshot.SNAPSHOT}
    assert C.encode(old_part) == old_snapshot.PACKED
    # In memory, a request id's [execution id, time] is a tuple (the garbage collector does not track it); the
    # bytes above are the same.
    old_rids = old_snapshot.SNAPSHOT["request_ids"]
    assert old_part == {**old_snapshot.SNAPSHOT, "request_ids": {rid: tuple(v) for rid, v in old_rids.items()}}
    assert list(snapshot)[:len(old_snapshot.SNAPSHOT)] == list(old_snapshot.SNAPSHOT)
    assert {k: v for k, v in snapshot.items() if k not in old_snapshot.SNAPSHOT} == \
        {"tokens": {}, "admin_revoked": False}

    # Every resource reads it.
    assert state.busy_slots() == {"n1": 1, "n2": 0, "n3": 0, "n4": 0, "w1": 0}   # n1 still stops execution 2
    assert state.activity("act")["installations"][0] == {"workerId": "n1", "status": "installed", "since": NOW}
    assert state.execution(4)["attempt"] == 1 and state.execution(4)["status"] == "waiting"
    assert state.launches["w2"]["provider"] == "local" and state.launch_failures["count"] == 1
    assert state.active_policy == "grow" and set(state.policies) == {"grow", "fixed"}
    assert state.next_activity_id == 4 and state.next_execution_id == 7

    # And goes on from it.
    dup = ok(state, C.ExecNew(name="act", requestId="req-1", now=NOW + 20))
    assert dup["duplicate"] and dup["execution"]["id"] == 1
    finished = ok(state, C.ExecFinish(now=NOW + 20, pull="n1", reports=[
        C.Report(id=2, node="n1", attempt=1, exitCode=None, stdout="", stderr="")]))
    assert finished["accepted"] == [2] and finished["pulled"] == [4, 5]   # first in first out; 6 is not installed
    assert state.executions[4]["attempt"] == 2 and state.executions[4]["workerIncarnation"] == "n1-a"
    assert ok(state, node_up("w2", now=NOW + 21))["node"]["removable"] is True
    assert "w2" not in state.launches
    assert state.apply(C.NodeDrain(node="n3", now=NOW + 21))["error"] == "conflict"
    assert ok(state, C.NodeLost(node="n3", now=NOW + 22))["moved"] == []
    assert "n3" not in state.installations["act"]   # its unfinished install is dropped
    assert state.apply(C.PolicyDelete(name="grow", now=NOW))["error"] == "conflict"
    assert ok(state, activity_new("next"))["activity"]["id"] == 4
    assert ok(state, C.ExecNew(name="ver", now=NOW + 23))["execution"]["id"] == 7
