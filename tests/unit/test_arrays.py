"""Arrays of executions in the state machine (raft/arrays.py): all or none, ids in input order, idempotent by
requestId, quotas for the whole array, and many results forgotten in one entry."""

from __future__ import annotations

from typing import Any

from podnode.raft import commands as C
from podnode.raft.state import State

from .builders import NOW, approved_state, ok, snapshot


def many(inputs: Any, name: str = "act", **kw: Any) -> C.ExecNewMany:
    return C.ExecNewMany(name=name, now=NOW, inputs=inputs, **kw)


def refused(state: State, cmd: Any, kind: str) -> dict:
    """Apply a command that must be refused: the refusal, and nothing changed."""
    before, counters = snapshot(state), state.execution_table.count()
    result = state.apply(cmd)
    assert result.get("error") == kind, result
    assert snapshot(state) == before and state.execution_table.count() == counters
    return result


def finish_all(state: State) -> None:
    for exec_id, e in list(state.executions.items()):
        if e["status"] == "in progress":
            ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=exec_id, node=e["workerId"], attempt=e["attempt"],
                                                              exitCode=0, stdout=f"out {e['stdin']}")]))


def test_an_array_makes_one_execution_per_input_in_order():
    state = approved_state()
    result = ok(state, many(["a", "b", "", "d"]))
    ids = result["ids"]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [state.executions[i]["stdin"] for i in ids] == ["a", "b", "", "d"]
    assert all(state.executions[i]["activityName"] == "act" for i in ids)
    assert state.execution_table.count() == (state.execution_table.waiting, state.execution_table.unread_bytes)


def test_the_proposers_placement_fills_its_free_slots_and_the_rest_wait():
    state = approved_state({"n1": 2, "n2": 2})
    ids = ok(state, many(["1", "2", "3", "4", "5"], node="n1"))["ids"]
    statuses = [state.executions[i]["status"] for i in ids]
    assert statuses == ["in progress", "in progress", "waiting", "waiting", "waiting"]
    assert {state.executions[i]["workerId"] for i in ids[:2]} == {"n1"}


def test_the_same_request_id_answers_the_same_ids_and_makes_nothing_new():
    state = approved_state()
    first = ok(state, many(["x", "y", "z"], requestId="run-1"))
    next_id = state.next_execution_id
    again = ok(state, many(["x", "y", "z"], requestId="run-1"))
    assert again["ids"] == first["ids"] and again["duplicate"] is True
    assert state.next_execution_id == next_id
    assert [state.executions[i]["requestId"] for i in first["ids"]] == ["run-1#0", "run-1#1", "run-1#2"]
    # after the results were read (forgotten), the same request still answers the same ids
    finish_all(state)
    ok(state, C.ExecForgetMany(ids=first["ids"], now=NOW))
    assert ok(state, many(["x", "y", "z"], requestId="run-1"))["ids"] == first["ids"]


def test_a_request_id_used_for_another_length_or_activity_is_a_conflict():
    state = approved_state()
    ok(state, many(["x", "y"], requestId="r"))
    refused(state, many(["x"], requestId="r"), "conflict")
    refused(state, many(["x", "y", "z"], requestId="r"), "conflict")
    ok(state, C.ActivityNew(name="other", url="http://scripts/other.sh", now=NOW))
    refused(state, many(["x", "y"], name="other", requestId="r"), "conflict")


def test_array_request_ids_never_meet_newexecution_ones():
    state = approved_state()
    single = ok(state, C.ExecNew(name="act", now=NOW, requestId="r"))["execution"]["id"]
    ids = ok(state, many(["x"], requestId="r"))["ids"]
    assert single not in ids


def test_bad_inputs_refuse_the_whole_array_with_the_index():
    state = approved_state()
    assert "inputs[2]" in refused(state, many(["a", "b", 3]), "bad_request")["message"]
    refused(state, many("abc"), "bad_request")
    refused(state, many([]), "bad_request")
    refused(state, many(["a"], name="nope"), "not_found")
    refused(state, {"t": "exec_new_many", "now": NOW, "inputs": ["a"]}, "internal")  # no name: a missing field


def test_the_waiting_quota_takes_the_whole_array_or_none_of_it():
    state = approved_state({"n1": 1})
    ok(state, many(["1", "2"], maxWaiting=5))          # 2 waiting
    result = refused(state, many(["3", "4", "5", "6"], maxWaiting=5), "too_many")
    assert "room for 3, not 4" in result["message"] and result["retryAfterS"] > 0
    assert len(ok(state, many(["3", "4", "5"], maxWaiting=5))["ids"]) == 3   # exactly full
    refused(state, many(["7"], maxWaiting=5), "too_many")
    assert state.execution_table.waiting == 5


def test_the_unread_bytes_quota_refuses_the_whole_array():
    state = approved_state({"n1": 2})
    ok(state, many(["a", "b"], node="n1"))
    finish_all(state)
    assert state.execution_table.unread_bytes > 0
    refused(state, many(["c", "d"], maxUnreadBytes=state.execution_table.unread_bytes), "too_many")
    ok(state, many(["c", "d"], maxUnreadBytes=state.execution_table.unread_bytes + 1))


def test_forget_many_hands_each_ended_one_once_and_leaves_the_others():
    state = approved_state({"n1": 2})
    ids = ok(state, many(["a", "b", "c"], node="n1"))["ids"]   # two run, one waits
    finish_all(state)
    result = ok(state, C.ExecForgetMany(ids=[ids[0], ids[2], 999, ids[1]], now=NOW))["results"]
    assert result[0]["execution"]["stdout"] == "out a"
    assert result[1]["error"] == "conflict"            # still waiting: not consumed
    assert result[2]["error"] == "not_found"
    assert result[3]["execution"]["stdout"] == "out b"
    assert set(state.executions) == {ids[2]}
    again = ok(state, C.ExecForgetMany(ids=[ids[0]], now=NOW))["results"]
    assert again[0]["error"] == "not_found"
    assert state.execution_table.count() == (state.execution_table.waiting, state.execution_table.unread_bytes)


def test_forget_many_refuses_ids_that_are_not_whole_numbers_and_changes_nothing():
    state = approved_state({"n1": 2})
    ids = ok(state, many(["a"], node="n1"))["ids"]
    finish_all(state)
    refused(state, C.ExecForgetMany(ids=[ids[0], "x"], now=NOW), "bad_request")
    refused(state, C.ExecForgetMany(ids=[ids[0], [1]], now=NOW), "bad_request")


def test_ended_ids_lists_ended_executions_of_an_activity_oldest_first():
    state = approved_state({"n1": 2})
    ids = ok(state, many(["a", "b", "c"], node="n1"))["ids"]
    assert state.execution_table.ended_ids("act", 10) == []
    finish_all(state)
    assert state.execution_table.ended_ids("act", 10) == ids[:2]
    assert state.execution_table.ended_ids("act", 1) == ids[:1]
    assert state.execution_table.ended_ids(None, 10) == ids[:2]
    assert state.execution_table.ended_ids("other", 10) == []


def test_the_wire_form_round_trips():
    cmd = many(["a", "b"], requestId="r", node="n1", maxWaiting=3)
    wire = C.decode(C.encode(cmd.to_wire()))
    assert wire == {"t": "exec_new_many", "name": "act", "now": NOW, "inputs": ["a", "b"], "requestId": "r",
                    "node": "n1", "maxWaiting": 3}
    assert C.ExecNewMany.from_wire(wire) == cmd
