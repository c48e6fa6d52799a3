"""newExecution&wait in the state machine: an execution collected by the node whose request submitted it
(ExecNew.collector) is for nobody else to read until that node settles it (ExecSettle forget/release), or is lost,
leaves or restarts. Driven only through State.apply()."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from podnode.raft import commands as C
from podnode.raft.state import State

from .builders import NOW, approved_state, node_up, ok, snapshot
from .test_execution_index import assert_indexes_exact

COLLECTOR = "n3"


def cluster() -> State:
    """n1 and n2 run executions; n3 (no slots) is the node the requests come through."""
    return approved_state({"n1": 1, "n2": 1, "n3": 0}, incarnations={"n1": "i1", "n2": "i1", "n3": "i1"})


def submit(state: State, collector: str | None = COLLECTOR, request_id: str | None = None) -> int:
    result = ok(state, C.ExecNew(name="act", input="x", now=NOW, collector=collector, requestId=request_id))
    return result["execution"]["id"]


def run(state: State, exec_id: int, node: str = "n1") -> None:
    assert ok(state, C.ExecPlace(placements=[[exec_id, node]], now=NOW))["placed"] == [exec_id]


def end(state: State, exec_id: int, stdout: str = "out", now: float = NOW + 1) -> None:
    e = state.executions[exec_id]
    result = ok(state, C.ExecFinish(now=now, reports=[C.Report(id=exec_id, node=e["workerId"], attempt=e["attempt"],
                                                                exitCode=0, stdout=stdout)]))
    assert result["accepted"] == [exec_id]
    assert state.executions[exec_id]["status"] == "finished"


def finished_collected(state: State | None = None) -> tuple[State, int]:
    state = state or cluster()
    exec_id = submit(state)
    run(state, exec_id)
    end(state, exec_id)
    return state, exec_id


def settle(node: str = COLLECTOR, forget: list[Any] | None = None, release: list[Any] | None = None) -> C.ExecSettle:
    return C.ExecSettle(node=node, forget=forget, release=release, now=NOW + 2)


def counters_exact(state: State) -> None:
    table = state.execution_table
    assert (table.waiting, table.unread_bytes) == table.count()
    assert_indexes_exact(state)


def collected(state: State) -> dict[Any, list[int]]:
    return {n: sorted(ids) for n, ids in state.execution_table.index.collected.items()}


def unchanged_by(state: State, cmd: Any) -> dict:
    """Apply cmd; the state (and its index of collected ids) must be as before. Its result."""
    before, before_collected = snapshot(state), collected(state)
    result = state.apply(cmd)
    assert snapshot(state) == before and collected(state) == before_collected, (cmd, result)
    return result


def test_a_collected_execution_runs_and_ends_for_its_collector_only():
    state = cluster()
    exec_id = submit(state)
    assert state.executions[exec_id]["collector"] == COLLECTOR
    assert collected(state) == {COLLECTOR: [exec_id]}
    other = submit(state, collector=None)
    assert "collector" not in state.executions[other]
    run(state, exec_id)
    run(state, other, "n2")
    end(state, exec_id)
    end(state, other, now=NOW + 0.5)
    counters_exact(state)
    assert state.executions[exec_id]["collector"] == COLLECTOR, "ending does not release it"
    # Bulk reads and expiry see only the uncollected one.
    assert state.execution_table.ended_ids(None, 10) == [other]
    assert state.execution_table.ended_ids("act", 10) == [other]
    # A reader's delete is refused, and changes nothing.
    result = unchanged_by(state, C.ExecForget(id=exec_id))
    assert result["error"] == "conflict" and COLLECTOR in result["message"]
    assert ok(state, C.ExecForget(id=other))["execution"]["id"] == other
    # ExecForgetMany (getExecutionResults) refuses it per id too.
    result = unchanged_by(state, C.ExecForgetMany(ids=[exec_id]))
    assert result["results"][0]["error"] == "conflict"


def test_settle_by_another_node_changes_nothing():
    state, exec_id = finished_collected()
    for node in ("n1", "n2", "nowhere"):
        result = unchanged_by(state, settle(node, forget=[exec_id], release=[exec_id]))
        assert result == {"ok": True, "forgotten": [], "released": []}


def test_settle_forget_by_the_collector_deletes_it():
    state, exec_id = finished_collected()
    waiting_one = submit(state)   # n1's slot is free again, but nobody placed it: stays waiting
    counters_exact(state)
    result = ok(state, settle(forget=[exec_id, 999]))
    assert result == {"ok": True, "forgotten": [exec_id], "released": []}
    assert exec_id not in state.executions
    assert collected(state) == {COLLECTOR: [waiting_one]}
    counters_exact(state)
    assert state.execution_table.unread_bytes == 0
    # A second settle of the same id finds nothing.
    assert unchanged_by(state, settle(forget=[exec_id]))["forgotten"] == []


def test_settle_forget_of_one_not_ended_leaves_it_collected():
    state = cluster()
    exec_id = submit(state)
    run(state, exec_id)
    result = unchanged_by(state, settle(forget=[exec_id]))
    assert result["forgotten"] == []


def test_release_makes_an_ended_one_readable():
    state, exec_id = finished_collected()
    assert ok(state, settle(release=[exec_id])) == {"ok": True, "forgotten": [], "released": [exec_id]}
    assert "collector" not in state.executions[exec_id]
    assert collected(state) == {}
    counters_exact(state)
    assert state.execution_table.ended_ids(None, 10) == [exec_id]
    assert ok(state, C.ExecForget(id=exec_id))["execution"]["stdout"] == "out"
    counters_exact(state)


def test_release_of_a_running_one_then_it_ends_ready_for_anyone():
    state = cluster()
    exec_id = submit(state)
    run(state, exec_id)
    assert ok(state, settle(release=[exec_id]))["released"] == [exec_id]
    assert state.execution_table.ended_ids(None, 10) == []
    end(state, exec_id)
    counters_exact(state)
    assert state.execution_table.ended_ids(None, 10) == [exec_id]
    assert ok(state, C.ExecForget(id=exec_id))["ok"] is True


def test_forget_and_release_in_one_settle():
    state, first = finished_collected()
    second = submit(state)
    run(state, second)
    result = ok(state, settle(forget=[first], release=[second]))
    assert result == {"ok": True, "forgotten": [first], "released": [second]}
    assert first not in state.executions and "collector" not in state.executions[second]
    counters_exact(state)


@pytest.mark.parametrize("cmd", [C.NodeLost(node=COLLECTOR, now=NOW + 2), C.NodeLeft(node=COLLECTOR, now=NOW + 2),
                                 node_up(COLLECTOR, 0, now=NOW + 2, incarnation="i2")],
                         ids=["lost", "left", "restarted"])
def test_the_collector_gone_or_restarted_releases_everything_it_collects(cmd):
    state, ended = finished_collected()
    running = submit(state)
    run(state, running, "n2")
    mine_elsewhere = submit(state, collector="n2")
    ok(state, cmd)
    assert "collector" not in state.executions[ended]
    assert "collector" not in state.executions[running]
    assert state.executions[mine_elsewhere]["collector"] == "n2", "another collector's are kept"
    assert collected(state) == {"n2": [mine_elsewhere]}
    counters_exact(state)
    assert state.execution_table.ended_ids(None, 10) == [ended]
    assert ok(state, C.ExecForget(id=ended))["execution"]["stdout"] == "out"


def test_node_up_with_the_same_incarnation_releases_nothing():
    state, exec_id = finished_collected()
    ok(state, node_up(COLLECTOR, 0, now=NOW + 2, incarnation="i1"))
    assert state.executions[exec_id]["collector"] == COLLECTOR
    assert collected(state) == {COLLECTOR: [exec_id]}
    assert state.execution_table.ended_ids(None, 10) == []


def test_a_collector_first_seen_releases_nothing():
    """A node registering for the first time (no incarnation before) has held no requests the state knows."""
    state = cluster()
    exec_id = submit(state, collector="n9")
    run(state, exec_id)
    ok(state, node_up("n9", 0, incarnation="x"))
    assert state.executions[exec_id]["collector"] == "n9"


@pytest.mark.parametrize("bad", [["x"], [True], [1.5], [None], [[1]]])
@pytest.mark.parametrize("field", ["forget", "release"])
def test_settle_with_a_bad_id_is_refused_and_changes_nothing(bad, field):
    state, exec_id = finished_collected()
    cmd = settle(**{field: [exec_id, *bad]})
    result = unchanged_by(state, cmd)
    assert result["error"] == "bad_request" and result["message"]


@pytest.mark.parametrize("bad", [5, "x", {"a": 1}, True])
def test_settle_with_ids_not_a_list_is_refused_and_changes_nothing(bad):
    state, exec_id = finished_collected()
    wire = {**settle(forget=[exec_id]).to_wire(), "forget": bad}
    result = unchanged_by(state, wire)
    assert result["error"] == "bad_request" and result["message"]


def test_expiry_skips_collected_executions():
    state, exec_id = finished_collected()
    other = submit(state, collector=None)
    run(state, other, "n2")
    end(state, other)
    result = ok(state, C.ExecExpire(ids=[exec_id, other], now=NOW + 10**6))
    assert result["expired"] == [other]
    assert exec_id in state.executions and other not in state.executions
    counters_exact(state)


def test_a_repeated_request_id_answers_the_collected_record():
    state = cluster()
    exec_id = submit(state, request_id="r1")
    result = ok(state, C.ExecNew(name="act", input="x", now=NOW, collector="n1", requestId="r1"))
    assert result.get("duplicate") is True and result["execution"]["id"] == exec_id
    assert result["execution"]["collector"] == COLLECTOR, "the first request's collector stays"
    assert collected(state) == {COLLECTOR: [exec_id]}


def test_a_batch_settles_like_single_commands():
    state, exec_id = finished_collected()
    result = ok(state, C.Batch(cmds=[settle("n1", forget=[exec_id]).to_wire(), settle(forget=[exec_id]).to_wire()]))
    assert [r.get("forgotten") for r in result["results"]] == [[], [exec_id]]
    counters_exact(state)


def test_snapshot_round_trip_keeps_the_collector_and_its_index():
    state, ended = finished_collected()
    running = submit(state)
    run(state, running)   # n1: its slot was freed by the end
    waiting_one = submit(state, collector="n2")
    submit(state, collector=None)
    data = msgpack.unpackb(msgpack.packb(copy.deepcopy(state.to_dict()), use_bin_type=True), raw=False,
                           strict_map_key=False)
    reloaded = State()
    reloaded.load_dict(data)
    assert collected(reloaded) == collected(state) == {COLLECTOR: [ended, running], "n2": [waiting_one]}
    assert reloaded.executions[ended]["collector"] == COLLECTOR
    assert reloaded.execution_table.ended_ids(None, 10) == state.execution_table.ended_ids(None, 10) == []
    counters_exact(reloaded)
    # The reloaded state goes on as the original does.
    for s in (state, reloaded):
        assert ok(s, settle(forget=[ended], release=[running])) == {"ok": True, "forgotten": [ended],
                                                                    "released": [running]}
    assert snapshot(reloaded) == snapshot(state) and collected(reloaded) == collected(state)
