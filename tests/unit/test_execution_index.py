"""The state machine's execution indexes (queues, slots by node, unread results by age, ids by activity and
status) always equal a recomputation from the records, after any sequence of commands and after a snapshot is
loaded; and the reads built on them (pages, counts, ended_ids, expiry) answer what a scan would."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnode import placement, scheduler
from podnode.raft import commands as C
from podnode.raft.execution_index import age
from podnode.raft.executions import EXECUTION_STATUSES
from podnode.raft.lifecycle import TERMINAL
from podnode.raft.state import State

from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok
from .test_quotas import ACTIVITIES, NODES, _draw_command


def recomputed(state: State) -> dict[str, Any]:
    """Every index, by a scan of the records."""
    executions = state.executions
    ids: dict[tuple, list[int]] = {}
    for exec_id in sorted(executions):
        e = executions[exec_id]
        for key in ((e["activityName"], e["status"]), (None, e["status"])):
            ids.setdefault(key, []).append(exec_id)
    on_node: dict[Any, list[int]] = {}
    for exec_id in sorted(executions):
        e = executions[exec_id]
        if e["status"] == "in progress" or e.get("outputPending"):
            on_node.setdefault(e.get("workerId"), []).append(exec_id)
    ready: dict[Any, list] = {}
    for e in sorted(executions.values(), key=lambda e: (e.get("finishTime") or 0.0, e["id"])):
        if e["status"] in TERMINAL and not e.get("outputPending") and "collector" not in e:
            for key in (e["activityName"], None):
                ready.setdefault(key, []).append((float(e.get("finishTime") or 0.0), e["id"]))
    collected: dict[Any, list[int]] = {}
    for exec_id in sorted(executions):
        if "collector" in executions[exec_id]:
            collected.setdefault(executions[exec_id]["collector"], []).append(exec_id)
    return {"ids": ids, "on_node": on_node, "ready": ready, "collected": collected,
            "queues": placement.queues(executions), "busy": placement.busy_slots(state.nodes, executions)}


def kept(state: State) -> dict[str, Any]:
    index, table = state.execution_table.index, state.execution_table
    return {"ids": {k: list(v) for k, v in index.ids.items() if len(v)},
            "on_node": {n: sorted(v) for n, v in index.on_node.items()},
            "ready": {k: list(v) for k, v in index.ready.items() if len(v)},
            "collected": {n: sorted(v) for n, v in index.collected.items()},
            "queues": {a: list(v) for a, v in table.queues().items()},
            "busy": table.busy_slots()}


def assert_indexes_exact(state: State) -> None:
    assert kept(state) == recomputed(state)


def _draw(data: st.DataObject, state: State) -> Any:
    """helper-a's random commands (test_quotas), and as often commands aimed at the executions that hold slots,
    so that terminations, late outputs, lost attempts and lost nodes meet running work."""
    holding = sorted(i for i, e in state.executions.items() if e["status"] == "in progress" or e.get("outputPending"))
    kind = data.draw(st.sampled_from(["any", "any", "terminate", "finish", "lost", "node", "place",
                                      "collect", "settle", "restart"]))
    if kind in ("collect", "settle", "restart"):
        return _draw_collecting(data, state, kind)
    if kind == "any" or (not holding and kind != "place"):
        return _draw_command(data, state)
    if kind == "place":
        waiting = sorted(i for i, e in state.executions.items() if e["status"] == "waiting") or [999]
        where = data.draw(st.sampled_from(NODES))
        return C.ExecPlace(now=NOW, placements=[[data.draw(st.sampled_from(waiting)), where]])
    exec_id = data.draw(st.sampled_from(holding))
    e = state.executions[exec_id]
    if kind == "terminate":
        return C.ExecTerminate(id=exec_id, now=NOW)
    if kind == "node":
        return data.draw(st.sampled_from([C.NodeLost(node=e["workerId"], now=NOW),
                                          C.NodeLeft(node=e["workerId"], now=NOW)]))
    report = C.Report(id=exec_id, node=e["workerId"], attempt=e["attempt"], exitCode=data.draw(st.sampled_from([0, 1])),
                      stdout="out")
    if kind == "lost":
        return C.ExecLost(now=NOW, reports=[report])
    return C.ExecFinish(now=NOW, reports=[report], pull=data.draw(st.none() | st.sampled_from(NODES)))


def _draw_collecting(data: st.DataObject, state: State, kind: str) -> Any:
    """newExecution&wait's commands: a submission collected by a node, that node's settle of random ids (some
    collected by it, some by another, some gone), and a node's restart (a new incarnation releases its ids)."""
    node = st.sampled_from(NODES)
    if kind == "collect":
        return C.ExecNew(name=data.draw(st.sampled_from(ACTIVITIES)), now=NOW, input="in", collector=data.draw(node),
                         requestId=data.draw(st.none() | st.sampled_from(["r1", "r2"])))
    if kind == "restart":
        return node_up(data.draw(node), slots=1, incarnation=data.draw(st.sampled_from(["i1", "i2", "i3"])))
    collected = state.execution_table.index.collected
    ended_by = sorted({state.executions[i]["collector"] for ids in collected.values() for i in ids
                       if state.executions[i]["status"] in TERMINAL})
    who = data.draw(st.sampled_from(ended_by) if ended_by and data.draw(st.booleans()) else node)
    mine = sorted(collected.get(who, ()))
    ended = [i for i in mine if state.executions[i]["status"] in TERMINAL]

    def ids(preferred: list[int]) -> st.SearchStrategy:
        if preferred and data.draw(st.booleans()):
            return st.lists(st.sampled_from(preferred), min_size=1, max_size=3)
        return st.none() | st.lists(st.sampled_from(sorted(state.executions) + [999]), max_size=3)
    return C.ExecSettle(node=who, forget=data.draw(ids(ended)), release=data.draw(ids(mine)), now=NOW)


def _with_time(data: st.DataObject, cmd: Any) -> Any:
    """The command at a drawn time, earlier or later than the last (proposers' clocks differ)."""
    if isinstance(cmd, C.Command) and any(f.name == "now" for f in dataclasses.fields(cmd)):
        return dataclasses.replace(cmd, now=NOW + data.draw(st.integers(-5, 5)))
    return cmd


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_indexes_equal_a_recomputation_after_random_commands(data):
    state = State()
    for name in NODES[:2]:
        ok(state, node_up(name, slots=1))
    for name in ACTIVITIES:
        ok(state, activity_new(name))
        if data.draw(st.booleans()):   # installed at once, so that executions run from the start
            ok(state, assign((name, "n1")))
            ok(state, install_done(name, "n1"))
            ok(state, assign((name, "n2")))
            ok(state, install_done(name, "n2"))
    for _ in range(data.draw(st.integers(1, 40))):
        cmd = _with_time(data, _draw(data, state))
        result = state.apply(cmd)
        assert result.get("error") != "internal", (cmd, result)
        assert_indexes_exact(state)
    reloaded = State()
    reloaded.load_dict(copy.deepcopy(state.to_dict()))   # a snapshot: the indexes are rebuilt once
    assert kept(reloaded) == kept(state)
    # What the reads answer, against scans.
    for activity in (None, *ACTIVITIES):
        mine = [e for _, e in sorted(state.executions.items()) if activity in (None, e["activityName"])]
        counts = state.execution_table.counts(activity)
        assert counts == {s: sum(1 for e in mine if e["status"] == s) for s in EXECUTION_STATUSES}
        ready = sorted((e for e in mine if e["status"] in TERMINAL and not e.get("outputPending")
                        and "collector" not in e), key=age)
        assert state.execution_table.ended_ids(activity, 3) == [e["id"] for e in ready[:3]]
        for status in (None, *EXECUTION_STATUSES):
            want = [e["id"] for e in mine if status in (None, e["status"])]
            after = data.draw(st.integers(0, max(want, default=0) + 1))
            limit = data.draw(st.integers(1, 4))
            assert state.execution_table.page(activity, status, after, limit) == [i for i in want if i > after][:limit]


def test_plans_and_expiry_read_the_indexes_not_the_records():
    """A long queue behind full slots: the plan is what a scan gives, and expiry takes the oldest results first,
    a batch at a time."""
    state = approved_state({"n1": 2, "n2": 1})
    for i in range(50):
        ok(state, C.ExecNew(name="act", now=NOW + i))
    cmds = scheduler.plan(state, NOW + 60, live_nodes=["n1", "n2"], expire=False)
    assert [p[0] for p in cmds[0].placements] == [1, 2, 3]
    ok(state, cmds[0])
    assert scheduler.plan(state, NOW + 60, live_nodes=["n1", "n2"], expire=False) == []
    for exec_id, t in ((2, NOW + 10), (1, NOW + 20), (3, NOW + 30)):
        e = state.executions[exec_id]
        result = ok(state, C.ExecFinish(now=t, pull=e["workerId"], reports=[
            C.Report(id=exec_id, node=e["workerId"], attempt=1, exitCode=0)]))
        assert len(result["pulled"]) == 1
    assert state.execution_table.ended_ids(None, 10) == [2, 1, 3]
    retention = scheduler.Retention(result_ttl_s=100, request_id_ttl_s=10**9, expire_batch=2)
    expiry = scheduler.plan_expiry(state, NOW + 125, retention)
    assert expiry.ids == [2, 1]
    ok(state, expiry)
    assert scheduler.plan_expiry(state, NOW + 125, retention) is None
    assert scheduler.plan_expiry(state, NOW + 131, retention).ids == [3]
    assert_indexes_exact(state)
