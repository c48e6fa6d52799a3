"""What the executions held cost the garbage collector: nothing. Their records and remembered request ids hold only
numbers, strings, booleans and None, so after a collection CPython stops tracking them, and a full collection's
pause does not grow with the queue (100,000 request ids held as lists added 11 ms to every full collection)."""

from __future__ import annotations

import gc

from podnode.raft import commands as C

from .builders import NOW, approved_state, ok


def test_executions_and_request_ids_are_not_tracked_by_the_garbage_collector():
    state = approved_state({"n1": 2, "n2": 2}, incarnations={"n1": "i1", "n2": "i1"})
    ids = [ok(state, C.ExecNew(name="act", input=str(i), now=NOW, requestId=f"r{i}" if i % 2 else None,
                               collector="n2" if i % 3 == 0 else None))["execution"]["id"] for i in range(300)]
    ok(state, C.ExecPlace(placements=[[ids[0], "n1"], [ids[1], "n1"], [ids[2], "n2"]], now=NOW))
    ok(state, C.ExecFinish(now=NOW + 1, reports=[C.Report(id=ids[0], node="n1", attempt=1, exitCode=0, stdout="o"),
                                                 C.Report(id=ids[1], node="n1", attempt=1, exitCode=3, stderr="e")]))
    ok(state, C.ExecTerminate(id=ids[3], now=NOW + 2))
    assert {state.executions[i]["status"] for i in ids[:4]} == {"finished", "error", "in progress", "terminated"}
    gc.collect()
    tracked = [r for r in state.executions.values() if gc.is_tracked(r)]
    assert tracked == [], tracked[:3]
    assert len(state.request_ids) == 150
    assert not any(gc.is_tracked(seen) for seen in state.request_ids.values())
    # A snapshot loaded back is the same (msgpack gives lists: they become tuples again).
    again = approved_state({}, incarnations={})
    again.load_dict(C.decode(C.encode(state.to_dict())))
    gc.collect()
    assert not any(gc.is_tracked(r) for r in again.executions.values())
    assert not any(gc.is_tracked(seen) for seen in again.request_ids.values())
    assert again.request_ids == state.request_ids
