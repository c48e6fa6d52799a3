"""Cluster-wide quotas in the state machine: exact refusals that change nothing, and counters kept exact by every
transition (compared with a recomputation after random command sequences)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnode.errors import TooMany, from_result
from podnode.raft import commands as C
from podnode.raft.state import State

from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok, snapshot


def exec_new(name: str = "act", **kw: Any) -> C.ExecNew:
    return C.ExecNew(name=name, now=NOW, **kw)


def finish(exec_id: int, state: State, stdout: str = "", stderr: str = "", code: int = 0) -> C.ExecFinish:
    e = state.executions[exec_id]
    return C.ExecFinish(now=NOW, reports=[C.Report(id=exec_id, node=e["workerId"], attempt=e["attempt"],
                                                   exitCode=code, stdout=stdout, stderr=stderr)])


def counters(state: State) -> tuple[int, int]:
    table = state.execution_table
    return table.waiting, table.unread_bytes


def assert_exact(state: State) -> None:
    assert counters(state) == state.execution_table.count()


def too_many(state: State, cmd: Any) -> dict:
    """Apply a command that a full quota must refuse: the refusal, and nothing changed."""
    before, kept = snapshot(state), counters(state)
    result = state.apply(cmd)
    assert result["error"] == "too_many", result
    assert result["retryAfterS"] > 0
    assert snapshot(state) == before and counters(state) == kept
    return result


# ---- refusals ----------------------------------------------------------------------------------------------
def test_waiting_quota_refuses_the_one_over_and_changes_nothing():
    state = approved_state({"n1": 1})
    for _ in range(3):
        assert ok(state, exec_new(maxWaiting=3))["execution"]["status"] == "waiting"
    result = too_many(state, exec_new(maxWaiting=3, requestId="r-over"))
    assert result["message"] == ("quota: 3 executions are waiting cluster-wide (--max-waiting-executions); "
                                 "try again when some have started")
    assert state.next_execution_id == 4 and "r-over" not in state.request_ids
    ok(state, exec_new(maxWaiting=4))     # a higher limit in the command: accepted
    ok(state, exec_new())                 # an entry without a limit (as logged before quotas): no limit
    assert counters(state) == (5, 0)
    ok(state, C.ExecPlace(now=NOW, placements=[[1, "n1"]]))   # one starts: room again
    ok(state, exec_new(maxWaiting=5))


def test_a_duplicate_request_id_is_answered_even_when_the_quota_is_full():
    state = approved_state({"n1": 1})
    first = ok(state, exec_new(maxWaiting=1, requestId="r1"))["execution"]
    again = ok(state, exec_new(maxWaiting=1, requestId="r1"))
    assert again["duplicate"] and again["execution"]["id"] == first["id"]


def test_unread_bytes_quota_until_the_results_are_read():
    state = approved_state({"n1": 2})
    ok(state, exec_new(node="n1"))
    ok(state, exec_new(node="n1"))
    ok(state, finish(1, state, stdout="é" * 4, stderr="xy"))   # 8 + 2 bytes
    assert counters(state) == (0, 10)
    result = too_many(state, exec_new(maxUnreadBytes=10))
    assert "10 bytes of ended executions' output are unread" in result["message"]
    assert "--max-unread-result-bytes" in result["message"]
    ok(state, exec_new(maxUnreadBytes=11))                        # under another limit: accepted
    ok(state, finish(2, state, stdout="more", code=3))           # finishing always succeeds, over the quota too
    assert state.executions[2]["status"] == "error" and counters(state) == (1, 14)
    ok(state, C.ExecForget(id=1))                                 # read
    ok(state, C.ExecExpire(ids=[2], now=NOW))                     # expired
    assert counters(state) == (1, 0)
    ok(state, exec_new(maxUnreadBytes=1))


def test_terminated_output_arriving_later_is_counted():
    state = approved_state({"n1": 1})
    ok(state, exec_new(node="n1"))
    ok(state, C.ExecTerminate(id=1, now=NOW))
    assert state.executions[1]["outputPending"] and counters(state) == (0, 0)
    ok(state, finish(1, state, stdout="abc"))
    assert counters(state) == (0, 3)


def test_activities_quota():
    state = State()
    ok(state, activity_new("a", maxActivities=2))
    ok(state, activity_new("b", maxActivities=2))
    result = too_many(state, activity_new("c", maxActivities=2))
    assert result["message"] == "quota: 2 activities exist cluster-wide (--max-activities); delete one first"
    assert state.next_activity_id == 3
    ok(state, C.ActivityDelete(name="a", now=NOW))   # installed nowhere: gone at once
    ok(state, activity_new("c", maxActivities=2))


def test_a_malformed_limit_is_no_limit():
    state = approved_state({"n1": 1})
    for bad in ("3", True, -1, 0, None):
        ok(state, C.ExecNew(name="act", now=NOW, maxWaiting=bad, maxUnreadBytes=bad))


def test_refusal_carries_its_retry_hint_to_the_error():
    state = approved_state({"n1": 1})
    ok(state, exec_new(maxWaiting=1))
    exc = from_result(state.apply(exec_new(maxWaiting=1)))
    assert isinstance(exc, TooMany) and exc.retry_after_s == 5.0
    assert from_result({"error": "conflict", "message": "m"}).retry_after_s is None


# ---- an activity's own limits --------------------------------------------------------------------------------
def test_activity_limits_are_recorded_and_checked():
    state = State()
    rec = ok(state, activity_new("a", timeoutS=1.5, memoryMB=64, maxProcesses=10))["activity"]
    assert rec["limits"] == {"timeoutS": 1.5, "memoryMB": 64, "maxProcesses": 10}
    assert ok(state, activity_new("b", timeoutS=0, memoryMB=0))["activity"]["limits"] == {"timeoutS": 0.0,
                                                                                          "memoryMB": 0}  # none
    assert ok(state, activity_new("c", maxProcesses=5))["activity"]["limits"] == {"maxProcesses": 5}
    assert "limits" not in ok(state, activity_new("e"))["activity"]
    before = snapshot(state)
    for bad in ({"timeoutS": -1}, {"memoryMB": 1.5}, {"maxProcesses": "9"}, {"timeoutS": float("nan")},
                {"timeoutS": float("inf")}, {"memoryMB": True}, {"maxProcesses": 10**9}):
        result = state.apply(activity_new("d", **bad))
        assert result["error"] == "bad_request" and next(iter(bad)) in result["message"], (bad, result)
    assert snapshot(state) == before


# ---- the counters stay exact ---------------------------------------------------------------------------------
NODES = ("n1", "n2", "n3")
ACTIVITIES = ("a", "b")
TEXT = st.text(alphabet=st.sampled_from("ab\u00e9\u20ac\U0001f600"), max_size=6)


def _draw_command(data: st.DataObject, state: State) -> Any:
    ids = sorted(state.executions) + [999]
    some_id = st.sampled_from(ids)
    node = st.sampled_from(NODES)
    kind = data.draw(st.sampled_from(
        ["new", "new", "new", "place", "finish", "finish", "lost", "terminate", "forget", "expire",
         "node_lost", "node_left", "node_up", "activity_delete", "activity_new", "install", "batch"]))
    if kind == "new":
        return C.ExecNew(name=data.draw(st.sampled_from(ACTIVITIES)), now=NOW, input=data.draw(TEXT),
                         node=data.draw(st.none() | node), maxWaiting=data.draw(st.none() | st.integers(0, 6)),
                         maxUnreadBytes=data.draw(st.none() | st.integers(0, 40)))
    if kind == "place":
        return C.ExecPlace(now=NOW, placements=[[data.draw(some_id), data.draw(node)]])
    if kind in ("finish", "lost"):
        exec_id = data.draw(some_id)
        e = state.executions.get(exec_id, {})
        report = C.Report(id=exec_id, node=e.get("workerId"), attempt=e.get("attempt"),
                          exitCode=data.draw(st.sampled_from([0, 1])), stdout=data.draw(TEXT), stderr=data.draw(TEXT))
        return (C.ExecFinish(now=NOW, reports=[report], pull=data.draw(st.none() | node)) if kind == "finish"
                else C.ExecLost(now=NOW, reports=[report]))
    if kind == "terminate":
        return C.ExecTerminate(id=data.draw(some_id), now=NOW)
    if kind == "forget":
        return C.ExecForget(id=data.draw(some_id))
    if kind == "expire":
        return C.ExecExpire(ids=data.draw(st.lists(some_id, max_size=3)), now=NOW)
    if kind == "node_lost":
        return C.NodeLost(node=data.draw(node), now=NOW)
    if kind == "node_left":
        return C.NodeLeft(node=data.draw(node), now=NOW)
    if kind == "node_up":
        return node_up(data.draw(node), slots=data.draw(st.integers(0, 2)), incarnation=data.draw(TEXT))
    if kind == "activity_delete":
        return C.ActivityDelete(name=data.draw(st.sampled_from(ACTIVITIES)), now=NOW)
    if kind == "activity_new":
        return activity_new(data.draw(st.sampled_from(ACTIVITIES)), maxAttempts=data.draw(st.integers(1, 3)))
    if kind == "install":
        name, where = data.draw(st.sampled_from(ACTIVITIES)), data.draw(node)
        return C.Batch(cmds=[assign((name, where)).to_wire(),
                             install_done(name, where, ok=data.draw(st.booleans())).to_wire()])
    return C.Batch(cmds=[_draw_command(data, state).to_wire(), _draw_command(data, state).to_wire()])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_counters_stay_exact_across_random_commands(data):
    state = State()
    for name in NODES[:2]:
        ok(state, node_up(name, slots=1))
    for name in ACTIVITIES:
        ok(state, activity_new(name))
    for _ in range(data.draw(st.integers(1, 40))):
        cmd = _draw_command(data, state)
        before, kept = snapshot(state), counters(state)
        result = state.apply(cmd)
        assert result.get("error") != "internal", (cmd, result)
        assert_exact(state)
        if result.get("error") == "too_many":
            assert snapshot(state) == before and counters(state) == kept
    reloaded = State()
    reloaded.load_dict(copy.deepcopy(state.to_dict()))   # a snapshot: recomputed once
    assert counters(reloaded) == counters(state)
