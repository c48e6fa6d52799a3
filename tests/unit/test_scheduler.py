"""Tests for podnode.scheduler.plan: a pure function from state and time to commands."""

from __future__ import annotations

import copy

from podnode.raft import commands as C
from podnode.raft.state import State
from podnode.scheduler import Retention, place_new, plan

from .builders import ok

NOW = 100_000.0


def node_up(node: str, slots: int) -> dict:
    return C.NodeUp(node=node, raftAddr=f"{node}:1", httpUrl=f"http://{node}", slots=slots, now=NOW)


def make_state(nodes: dict[str, int], installed: dict[str, list[str]] | None = None) -> State:
    """Nodes with their slots; activities approved and installed on the listed nodes."""
    state = State()
    for node, slots in nodes.items():
        ok(state, node_up(node, slots))
    for name, on in (installed or {}).items():
        ok(state, C.ActivityNew(name=name, url="u", now=NOW))
        for node in on:
            ok(state, C.InstallAssign(assignments=[[name, node]], now=NOW))
            ok(state, C.InstallDone(name=name, node=node, ok=True, now=NOW))
    return state


def new_execs(state: State, name: str, count: int) -> list[int]:
    return [ok(state, C.ExecNew(name=name, now=NOW))["execution"]["id"] for _ in range(count)]


def placements(cmds: list[C.Command]) -> list[list]:
    places = [c for c in cmds if c.t == C.EXEC_PLACE]
    assert len(places) <= 1, "placements come in one command"
    return places[0].placements if places else []


def installs(cmds: list[C.Command]) -> list[list]:
    assigns = [c for c in cmds if c.t == C.INSTALL_ASSIGN]
    assert len(assigns) <= 1
    return assigns[0].assignments if assigns else []


def apply_all(state: State, cmds: list[C.Command]) -> list[dict]:
    """Apply a plan and check the state machine accepted every decision in it."""
    results = []
    for cmd in cmds:
        result = ok(state, copy.deepcopy(cmd))
        assert not result.get("refused"), (cmd, result)
        results.append(result)
    return results


def test_nothing_to_do():
    state = make_state({"n1": 2}, {"act": ["n1"]})
    assert plan(state, NOW, live_nodes=["n1"]) == []
    assert plan(State(), NOW, live_nodes=[]) == []


def test_fifo_placement_across_nodes_with_free_slots():
    state = make_state({"n1": 2, "n2": 2}, {"act": ["n1", "n2"]})
    ids = new_execs(state, "act", 3)
    cmds = plan(state, NOW, live_nodes=["n1", "n2"])
    assert [c.t for c in cmds] == [C.EXEC_PLACE]
    assert cmds[0].now == NOW
    places = placements(cmds)
    assert [p[0] for p in places] == ids
    # Most free slots first: n1 (tie, by name), then n2 (now has more), then n1 again.
    assert [p[1] for p in places] == ["n1", "n2", "n1"]
    apply_all(state, cmds)
    assert state.busy_slots() == {"n1": 2, "n2": 1}


def test_fifo_order_when_slots_are_short():
    state = make_state({"n1": 2}, {"act": ["n1"]})
    ids = new_execs(state, "act", 5)
    places = placements(plan(state, NOW, live_nodes=["n1"]))
    assert places == [[ids[0], "n1"], [ids[1], "n1"]]


def test_queues_when_all_busy():
    state = make_state({"n1": 1, "n2": 1}, {"act": ["n1", "n2"]})
    ids = new_execs(state, "act", 2)
    apply_all(state, plan(state, NOW, live_nodes=["n1", "n2"]))
    assert all(state.executions[i]["status"] == "in progress" for i in ids)
    waiting = new_execs(state, "act", 3)
    assert plan(state, NOW, live_nodes=["n1", "n2"]) == []
    assert all(state.executions[i]["status"] == "waiting" for i in waiting)

    # A slot frees up: the oldest waiting one gets it.
    running = state.executions[ids[0]]
    ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=ids[0], node=running["workerId"], attempt=1, exitCode=0)]))
    assert placements(plan(state, NOW, live_nodes=["n1", "n2"])) == [[waiting[0], running["workerId"]]]


def test_zero_slot_node_gets_nothing():
    state = make_state({"n1": 0}, {"act": ["n1"]})
    new_execs(state, "act", 1)
    assert plan(state, NOW, live_nodes=["n1"]) == []


def test_only_live_nodes():
    state = make_state({"n1": 4, "n2": 1}, {"act": ["n1", "n2"]})
    new_execs(state, "act", 2)
    places = placements(plan(state, NOW, live_nodes=["n2", "ghost"]))
    assert [p[1] for p in places] == ["n2"]
    assert plan(state, NOW, live_nodes=[]) == []


def test_only_nodes_with_the_activity_installed():
    state = make_state({"n1": 4, "n2": 1, "n3": 9}, {"act": ["n2"], "other": ["n1"]})
    ok(state, C.InstallAssign(assignments=[["act", "n3"]], now=NOW))  # still installing on n3
    a = new_execs(state, "act", 2)
    o = new_execs(state, "other", 1)
    cmds = plan(state, NOW, live_nodes=["n1", "n2", "n3"])
    assert placements(cmds) == [[a[0], "n2"], [o[0], "n1"]]
    apply_all(state, cmds)


def test_most_free_slots_first_and_prefer_on_ties():
    state = make_state({"a": 2, "b": 3, "c": 3}, {"act": ["a", "b", "c"]})
    ids = new_execs(state, "act", 1)
    assert placements(plan(state, NOW, live_nodes=["a", "b", "c"])) == [[ids[0], "b"]]
    assert placements(plan(state, NOW, live_nodes=["a", "b", "c"], prefer="c")) == [[ids[0], "c"]]
    # The preferred node is used only on a tie.
    assert placements(plan(state, NOW, live_nodes=["a", "b", "c"], prefer="a")) == [[ids[0], "b"]]
    # A preferred node that is not live is not used.
    assert placements(plan(state, NOW, live_nodes=["a", "b"], prefer="c")) == [[ids[0], "b"]]


def test_free_slots_count_running_executions():
    state = make_state({"a": 3, "b": 2}, {"act": ["a", "b"]})
    first = new_execs(state, "act", 2)
    ok(state, C.ExecPlace(placements=[[first[0], "a"], [first[1], "a"]], now=NOW))
    ids = new_execs(state, "act", 1)
    # a has 1 free, b has 2 free.
    assert placements(plan(state, NOW, live_nodes=["a", "b"], prefer="a")) == [[ids[0], "b"]]


def test_verifying_activity_gets_exactly_one_install():
    state = make_state({"n1": 1, "n2": 3, "n3": 3})
    ok(state, C.ActivityNew(name="act", url="u", now=NOW))
    cmds = plan(state, NOW, live_nodes=["n1", "n2", "n3"], prefer="n3")
    assert installs(cmds) == [["act", "n3"]]
    assert cmds[0].now == NOW
    apply_all(state, cmds)
    # While it is being verified nothing more is assigned.
    assert plan(state, NOW, live_nodes=["n1", "n2", "n3"]) == []


def test_verifying_install_picks_most_free_slots():
    state = make_state({"n1": 1, "n2": 3})
    ok(state, C.ActivityNew(name="act", url="u", now=NOW))
    assert installs(plan(state, NOW, live_nodes=["n1", "n2"], prefer="n1")) == [["act", "n2"]]
    assert plan(state, NOW, live_nodes=[]) == []


def test_approved_activity_installs_on_every_live_node_lacking_one():
    state = make_state({"n1": 1, "n2": 1, "n3": 1, "n4": 1}, {"act": ["n1"]})
    cmds = plan(state, NOW, live_nodes=["n1", "n2", "n3"])
    assert installs(cmds) == [["act", "n2"], ["act", "n3"]]
    apply_all(state, cmds)
    assert plan(state, NOW, live_nodes=["n1", "n2", "n3"]) == []
    # n4 comes back: it gets the activity too.
    assert installs(plan(state, NOW, live_nodes=["n1", "n2", "n3", "n4"])) == [["act", "n4"]]


def test_no_installs_for_rejected_or_uninstalling_activities():
    state = make_state({"n1": 1, "n2": 1}, {"gone": ["n1"]})
    ok(state, C.ActivityNew(name="bad", url="u", now=NOW))
    ok(state, C.InstallAssign(assignments=[["bad", "n1"]], now=NOW))
    ok(state, C.InstallDone(name="bad", node="n1", ok=False, now=NOW))
    ok(state, C.ActivityDelete(name="gone", now=NOW))
    assert state.activities["bad"]["status"] == "rejected"
    assert state.activities["gone"]["status"] == "uninstalling"
    assert plan(state, NOW, live_nodes=["n1", "n2"]) == []


def test_expiry_of_old_results():
    state = make_state({"n1": 4}, {"act": ["n1"]})
    ids = new_execs(state, "act", 4)
    ok(state, {"t": C.EXEC_PLACE, "placements": [[i, "n1"] for i in ids], "now": NOW})
    ok(state, {"t": C.EXEC_FINISH, "now": NOW - 100, "reports": [
        {"id": ids[0], "node": "n1", "attempt": 1, "exitCode": 0}]})
    ok(state, {"t": C.EXEC_FINISH, "now": NOW - 10, "reports": [
        {"id": ids[1], "node": "n1", "attempt": 1, "exitCode": 1}]})
    ok(state, {"t": C.EXEC_TERMINATE, "id": ids[2], "now": NOW - 100})   # output still pending: kept
    retention = Retention(result_ttl_s=50, request_id_ttl_s=10**9)

    cmds = plan(state, NOW, live_nodes=["n1"], retention=retention)
    assert cmds == [C.ExecExpire(ids=[ids[0]], requestIdsBefore=None, now=NOW)]
    results = apply_all(state, cmds)
    assert results[0]["expired"] == [ids[0]]
    assert sorted(state.executions) == ids[1:]

    # Within the TTL nothing expires.
    assert plan(state, NOW, live_nodes=["n1"], retention=retention) == []
    # Later the other one goes too.
    later = plan(state, NOW + 100, live_nodes=["n1"], retention=retention)
    assert later[0].t == C.EXEC_EXPIRE and later[0].ids == [ids[1]]


def test_expiry_of_old_request_ids():
    state = make_state({"n1": 1}, {"act": ["n1"]})
    ok(state, {"t": C.EXEC_NEW, "name": "act", "requestId": "old", "now": NOW - 1000})
    ok(state, {"t": C.EXEC_NEW, "name": "act", "requestId": "new", "now": NOW})
    retention = Retention(result_ttl_s=10, request_id_ttl_s=100)
    cmds = [c for c in plan(state, NOW, live_nodes=[], retention=retention)]
    assert cmds == [C.ExecExpire(ids=[], requestIdsBefore=NOW - 100, now=NOW)]
    apply_all(state, cmds)
    assert list(state.request_ids) == ["new"]
    assert plan(state, NOW, live_nodes=[], retention=retention) == []


def test_placements_batched_into_one_command():
    state = make_state({"n1": 5, "n2": 5}, {"act": ["n1", "n2"], "other": ["n2"]})
    act = new_execs(state, "act", 4)
    other = new_execs(state, "other", 3)
    cmds = plan(state, NOW, live_nodes=["n1", "n2"])
    # "other" is approved but missing on n1: installed there first, placed on n2 meanwhile.
    assert [c.t for c in cmds] == [C.INSTALL_ASSIGN, C.EXEC_PLACE]
    assert installs(cmds) == [["other", "n1"]]
    places = placements(cmds)
    assert [p[0] for p in places] == act + other
    assert all(node == "n2" for exec_id, node in places if exec_id in other)
    apply_all(state, cmds)
    assert state.busy_slots() == {"n1": 2, "n2": 5}


def test_plan_is_pure():
    state = make_state({"n1": 2, "n2": 2}, {"act": ["n1"]})
    ok(state, C.ActivityNew(name="new", url="u", now=NOW))
    new_execs(state, "act", 3)
    before = copy.deepcopy(state.to_dict())
    first = plan(state, NOW, live_nodes=["n1", "n2"], prefer="n2")
    assert state.to_dict() == before
    assert plan(state, NOW, live_nodes=["n2", "n1"], prefer="n2") == first


def test_a_whole_plan_is_accepted_by_the_state():
    state = make_state({"n1": 2, "n2": 1, "n3": 3}, {"act": ["n1"], "b": ["n2", "n3"]})
    ok(state, C.ActivityNew(name="fresh", url="u", now=NOW))   # verifying
    old = new_execs(state, "b", 1)
    ok(state, C.ExecPlace(placements=[[old[0], "n2"]], now=NOW - 10_000))
    ok(state, C.ExecFinish(now=NOW - 10_000, reports=[C.Report(id=old[0], node="n2", attempt=1, exitCode=0)]))
    ok(state, C.ExecNew(name="act", requestId="rid", now=NOW - 10_000))
    new_execs(state, "act", 3)
    new_execs(state, "b", 5)
    new_execs(state, "fresh", 2)
    retention = Retention(result_ttl_s=100, request_id_ttl_s=100)

    cmds = plan(state, NOW, live_nodes=["n1", "n2", "n3"], prefer="n1", retention=retention)
    assert [c.t for c in cmds] == [C.INSTALL_ASSIGN, C.EXEC_PLACE, C.EXEC_EXPIRE]
    results = apply_all(state, cmds)
    assert results[0]["assigned"] == cmds[0].assignments
    assert results[1]["placed"] == [p[0] for p in cmds[1].placements]
    assert results[2]["expired"] == cmds[2].ids == old
    assert state.request_ids == {}
    # Every slot is used; nothing runs where it is not installed.
    assert state.busy_slots() == {"n1": 2, "n2": 1, "n3": 3}
    for execution in state.executions.values():
        if execution["status"] == "in progress":
            inst = state.installations[execution["activityName"]][execution["workerId"]]
            assert inst["status"] == "installed"

    # Applied in one batch, as the bridge would send it, the plan is accepted too.
    state2 = make_state({"n1": 2}, {"act": ["n1"]})
    ok(state2, C.ActivityNew(name="fresh", url="u", now=NOW))
    new_execs(state2, "act", 3)
    cmds = plan(state2, NOW, live_nodes=["n1"])
    result = ok(state2, C.batch(cmds))
    assert all("error" not in r and not r.get("refused") for r in result["results"])


# ---- placement proposed with newExecution ------------------------------------------------------------
def submit(state: State, name: str, node: str | None) -> dict:
    return ok(state, C.ExecNew(name=name, now=NOW, node=node))["execution"]


def test_place_new_picks_a_free_installed_live_node():
    state = make_state({"n1": 1, "n2": 2, "n3": 4}, {"a": ["n1", "n2"]})
    assert place_new(state, "a", live_nodes=["n1", "n2", "n3"]) == "n2"   # n3 has more slots but no install
    assert place_new(state, "a", live_nodes=["n1"]) == "n1"
    assert place_new(state, "a", live_nodes=["n3"]) is None
    assert place_new(state, "missing", live_nodes=["n1", "n2"]) is None


def test_new_execution_starts_at_once_where_proposed():
    state = make_state({"n1": 1, "n2": 1}, {"a": ["n1", "n2"]})
    first = submit(state, "a", place_new(state, "a", live_nodes=["n1", "n2"], prefer="n1"))
    assert first["status"] == "in progress" and first["workerId"] == "n1" and first["attempt"] == 1
    assert first["startTime"] == NOW
    second = submit(state, "a", place_new(state, "a", live_nodes=["n1", "n2"], prefer="n1"))
    assert second["workerId"] == "n2"
    # Every slot is taken: nothing to propose, and a stale proposal is re-checked and ignored.
    assert place_new(state, "a", live_nodes=["n1", "n2"]) is None
    third = submit(state, "a", "n1")
    assert third["status"] == "waiting" and third["workerId"] is None


def test_new_execution_never_jumps_the_queue():
    state = make_state({"n1": 1, "n2": 1}, {"a": ["n1"], "b": ["n2"]})
    running = submit(state, "a", "n1")
    queued = submit(state, "a", None)
    assert (running["status"], queued["status"]) == ("in progress", "waiting")
    # n2 is free, but an execution is already waiting: first in, first out, so nothing starts out of turn.
    assert place_new(state, "b", live_nodes=["n1", "n2"]) is None
    late = submit(state, "b", "n2")
    assert late["status"] == "waiting"
    assert placements(plan(state, NOW, live_nodes=["n1", "n2"])) == [[late["id"], "n2"]]


def finish(state: State, exec_id: int, node: str, pull: str | None) -> dict:
    return ok(state, C.ExecFinish(now=NOW, pull=pull, reports=[
        C.Report(id=exec_id, attempt=1, node=node, exitCode=0, stdout="", stderr="")]))


def test_a_finishing_node_pulls_the_oldest_waiting_work_it_can_run():
    state = make_state({"n1": 1, "n2": 1}, {"a": ["n1", "n2"], "b": ["n2"]})
    r1, r2 = submit(state, "a", "n1"), submit(state, "a", "n2")
    wb, wa1, wa2 = submit(state, "b", None), submit(state, "a", None), submit(state, "a", None)
    assert all(e["status"] == "waiting" for e in (wb, wa1, wa2))
    # n1 cannot run b: it takes the oldest one it can run.
    assert finish(state, r1["id"], "n1", pull="n1")["pulled"] == [wa1["id"]]
    assert state.executions[wa1["id"]]["workerId"] == "n1"
    # n2 takes b, which is older than the remaining a.
    assert finish(state, r2["id"], "n2", pull="n2")["pulled"] == [wb["id"]]
    # Without pull nothing is placed; the leader's plan does it.
    assert finish(state, wa1["id"], "n1", pull=None)["pulled"] == []
    assert state.executions[wa2["id"]]["status"] == "waiting"
    assert placements(plan(state, NOW, live_nodes=["n1", "n2"])) == [[wa2["id"], "n1"]]


def test_pull_respects_slots_and_unknown_nodes():
    state = make_state({"n1": 2}, {"a": ["n1"]})
    r1 = submit(state, "a", "n1")
    submit(state, "a", "n1")
    waiting = [submit(state, "a", None)["id"] for _ in range(3)]
    assert finish(state, r1["id"], "n1", pull="n1")["pulled"] == waiting[:1]   # one slot freed, one taken
    assert ok(state, C.ExecFinish(now=NOW, pull="ghost", reports=[]))["pulled"] == []
