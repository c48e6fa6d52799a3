"""waitingReason and queuePosition (podnode/waiting.py): one test per reason, on states built by applying
commands, and queuePosition checked against the order the scheduler's pure plan places executions in."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from podnode import scheduler
from podnode.api.actions import execution_page
from podnode.raft import commands as C
from podnode.raft.state import State
from podnode.waiting import NO_QUORUM, Facts, Waiting, explain

from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok

FACTS = Facts(now=NOW + 4)


def submit(state: State, name: str = "act", count: int = 1) -> list[int]:
    return [ok(state, C.ExecNew(name=name, now=NOW))["execution"]["id"] for _ in range(count)]


def place_all(state: State) -> list[list]:
    """Apply the scheduler's plan (placements and installs) once; the placements it made."""
    placed = []
    for cmd in scheduler.plan(state, NOW, live_nodes=list(state.nodes), expire=False):
        result = ok(state, copy.deepcopy(cmd))
        assert not result.get("refused"), result
        if cmd.t == C.EXEC_PLACE:
            placed = cmd.placements
    return placed


def why(state: State, exec_id: int, facts: Facts = FACTS) -> dict:
    return explain(state, state.execution(exec_id), facts)


def test_all_slots_busy_with_the_count_ahead():
    state = approved_state({"n1": 2, "n2": 1})
    submit(state, count=3)
    assert len(place_all(state)) == 3
    waiting = submit(state, count=3)
    assert [why(state, i) for i in waiting] == [
        {"waitingReason": f"all 3 slots busy, {k} ahead of it", "queuePosition": k} for k in range(3)]


def test_a_free_slot_means_about_to_start_and_a_partly_busy_cluster_says_how_many_slots_are_taken():
    state = approved_state({"n1": 2, "n2": 1})
    submit(state, count=2)
    place_all(state)
    first, second, third = submit(state, count=3)
    assert why(state, first) == {"waitingReason": "about to start: a slot is free on n2", "queuePosition": 0}
    assert why(state, second)["waitingReason"] == "2 of 3 slots busy, 1 ahead of it"
    assert why(state, third)["queuePosition"] == 2


def test_the_free_slot_named_is_the_one_the_leader_prefers_on_a_tie():
    state = approved_state({"n1": 1, "n2": 1})
    exec_id, = submit(state)
    for leader in ("n1", "n2"):
        said = why(state, exec_id, Facts(now=NOW, leader=leader))["waitingReason"]
        planned = scheduler.plan(state, NOW, live_nodes=["n1", "n2"], prefer=leader, expire=False)[0].placements
        assert said == f"about to start: a slot is free on {leader}" and planned == [[exec_id, leader]]


def test_running_and_ended_executions_have_no_reason():
    state = approved_state({"n1": 1})
    running, = submit(state)
    place_all(state)
    assert why(state, running) is None
    ok(state, C.ExecFinish(reports=[C.Report(id=running, node="n1", attempt=1, exitCode=0)], now=NOW))
    assert state.execution(running)["status"] == "finished" and why(state, running) is None


def test_no_leader_is_said_first():
    state = approved_state({"n1": 1})
    exec_id, = submit(state)
    assert why(state, exec_id, Facts(now=NOW, has_leader=False)) == {"waitingReason": NO_QUORUM,
                                                                      "queuePosition": 0}


def verifying_state() -> State:
    state = State()
    ok(state, node_up("n1", 1))
    ok(state, node_up("n2", 3))
    ok(state, activity_new("act"))
    return state


def test_a_new_activity_says_where_its_verification_starts_then_how_long_it_has_been_installing():
    state = verifying_state()
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == \
        "activity not installed on any node yet: its verification is about to start on n2"
    assert scheduler.plan(state, NOW, live_nodes=["n1", "n2"])[0].assignments == [["act", "n2"]]  # the same node
    ok(state, assign(("act", "n2")))
    assert why(state, exec_id)["waitingReason"] == "activity being verified: installing on n2 for 4 s"


def test_activity_still_installing_on_every_free_node():
    state = approved_state({"n1": 1})
    ok(state, node_up("n2", 2))
    ok(state, node_up("n3", 2))
    submit(state)
    place_all(state)   # n1's slot taken; the install on n2 and n3 starts
    assert sorted(state.installations["act"]) == ["n1", "n2", "n3"]
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == \
        "all 1 slot busy, 0 ahead of it; activity still installing on every free node (n2 for 4 s, n3 for 4 s)"


def test_activity_still_installing_everywhere_after_its_files_went_missing():
    state = approved_state({"n1": 1, "n2": 1})
    for node in ("n1", "n2"):
        ok(state, C.Reinstall(name="act", node=node, now=NOW + 1))
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == \
        "activity still installing on every free node (n1 for 3 s, n2 for 3 s)"


def test_installation_failed_everywhere_and_the_node_that_has_it_drains():
    state = approved_state({"n1": 1})
    ok(state, node_up("n2", 1))
    ok(state, assign(("act", "n2")))
    ok(state, install_done("act", "n2", ok=False, error="curl: 404"))
    ok(state, C.NodeDrain(node="n1", now=NOW))
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == ("installation failed on every node that takes work "
                                                    "(n2: curl: 404); every node able to run it is draining (n1)")


def test_every_node_able_to_run_it_is_draining():
    state = approved_state({"n1": 1, "n2": 2})
    for node in ("n1", "n2"):
        ok(state, C.NodeDrain(node=node, now=NOW))
    exec_id, = submit(state)
    assert why(state, exec_id) == {"waitingReason": "every node able to run it is draining (n1, n2)",
                                   "queuePosition": 0}
    assert scheduler.plan(state, NOW, live_nodes=["n1", "n2"], expire=False) == []   # the scheduler agrees


def test_lost_and_unreachable_nodes_and_a_node_that_has_not_installed_it_yet():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, C.NodeLost(node="n1", now=NOW))
    exec_id, = submit(state)
    leader_view = Facts(now=NOW, live=frozenset({"n1", "n3"}))   # the leader does not reach n2
    assert why(state, exec_id, leader_view)["waitingReason"] == \
        "every node able to run it takes no work (n1 lost, n2 unreachable from the leader)"
    ok(state, node_up("n3", 1))
    assert why(state, exec_id, leader_view)["waitingReason"] == (
        "activity not installed yet on n3: its install is about to start; every node able to run it takes no "
        "work (n1 lost, n2 unreachable from the leader)")


def test_no_node_takes_work_or_there_is_none():
    state = verifying_state()
    exec_id, = submit(state)
    ok(state, C.NodeLost(node="n1", now=NOW))
    ok(state, C.NodeDrain(node="n2", now=NOW))
    assert why(state, exec_id)["waitingReason"] == "no node takes work (n1 lost, n2 draining)"
    state = approved_state({"n1": 1})
    exec_id, = submit(state)
    ok(state, C.NodeLeft(node="n1", now=NOW))
    assert why(state, exec_id)["waitingReason"] == "no node in the cluster"


def test_nodes_without_slots_run_nothing():
    state = approved_state({"n1": 0})
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == "every node that has it installed has no slots (n1)"
    assert scheduler.plan(state, NOW, live_nodes=["n1"], expire=False) == []


def test_scaling_out_names_the_launches_in_flight():
    state = approved_state({"n1": 1})
    submit(state)
    place_all(state)
    ok(state, C.NodeLaunched(node="w3", provider="local", now=NOW))
    exec_id, = submit(state)
    assert why(state, exec_id)["waitingReason"] == "all 1 slot busy, 0 ahead of it; scaling out: w3 launching for 4 s"


def policy(state: State, rules: dict) -> None:
    ok(state, C.PolicyNew(name="p", rules=rules, now=NOW))
    ok(state, C.PolicyApply(name="p"))


def test_at_max_workers_and_the_spend_cap():
    state = approved_state({"n1": 1, "n2": 1})
    submit(state, count=2)
    place_all(state)
    exec_id, = submit(state)
    policy(state, {"maxWorkers": 2, "maxCostPerHour": 0.5})
    scaling = Facts(now=NOW, scaling=True, new_node_price=1.0)
    assert why(state, exec_id, scaling)["waitingReason"] == (
        "all 2 slots busy, 0 ahead of it; at maxWorkers=2 and the spend cap (maxCostPerHour=0.5, spending 0.00/h)")
    assert why(state, exec_id)["waitingReason"] == "all 2 slots busy, 0 ahead of it"  # no provider: no policy
    policy_state = copy.deepcopy(state)
    ok(policy_state, C.PolicyReset())
    policy(policy_state, {"maxWorkers": 3, "maxCostPerHour": 2})
    assert why(policy_state, exec_id, scaling)["waitingReason"] == "all 2 slots busy, 0 ahead of it"
    ok(policy_state, C.PolicyReset())
    policy(policy_state, {"fixedWorkers": 2})
    assert why(policy_state, exec_id, scaling)["waitingReason"] == "all 2 slots busy, 0 ahead of it; at fixedWorkers=2"


def test_a_price_not_known_yet_claims_the_spend_cap_only_when_the_nodes_held_reach_it():
    state = approved_state({"n1": 1})
    submit(state)
    place_all(state)
    exec_id, = submit(state)
    policy(state, {"maxCostPerHour": 0.5})
    assert why(state, exec_id, Facts(now=NOW, scaling=True))["waitingReason"] == "all 1 slot busy, 0 ahead of it"
    ok(state, C.NodeLaunched(node="w2", provider="local", hourlyPrice=0.6, now=NOW))
    ok(state, node_up("w2", 1))   # adopts the launch: removable, 0.6/h
    ok(state, C.ExecPlace(placements=[[exec_id, "w2"]], now=NOW))   # (installed nowhere: refused, still waits)
    assert why(state, exec_id, Facts(now=NOW, scaling=True))["waitingReason"].endswith(
        "at the spend cap (maxCostPerHour=0.5, spending 0.60/h)")


def test_an_activity_that_no_node_can_run_holds_back_nobody():
    state = approved_state({"n1": 1})
    ok(state, activity_new("late"))   # verifying: installed nowhere yet
    a1, = submit(state)
    late = submit(state, "late", 2)
    a2, = submit(state)
    reasons = Waiting(state, FACTS)
    assert [reasons.position(i, state.execution(i)["activityName"]) for i in (a1, *late, a2)] == [0, 1, 2, 1]
    assert place_all(state) == [[a1, "n1"]]   # and the plan installs "late" on n1


# ---- queuePosition is the order the scheduler places them in ------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "x"]), min_size=1, max_size=25), st.integers(1, 3))
def test_queue_position_is_the_order_of_the_plan(names, slots):
    """Activities a, b, c installed, x on no node: the plan is applied step by step (its placements only: x's
    verification install is left out, so x stays installed nowhere), each step's placements are the head of
    the queue in order of queuePosition, and an execution's position counts exactly the placements before it."""
    state = State()
    ok(state, node_up("n1", slots))
    for name in ("a", "b", "c"):
        ok(state, activity_new(name))
        ok(state, assign((name, "n1")))
        ok(state, install_done(name, "n1"))
    ok(state, activity_new("x"))
    ids = [ok(state, C.ExecNew(name=name, now=NOW))["execution"]["id"] for name in names]
    positions = {i: why(state, i)["queuePosition"] for i in ids}
    order = []
    while True:
        places = [c for c in scheduler.plan(state, NOW, live_nodes=["n1"], expire=False) if c.t == C.EXEC_PLACE]
        if not places:
            break
        batch = [exec_id for exec_id, _ in places[0].placements]
        assert [why(state, i)["queuePosition"] for i in batch] == list(range(len(batch)))
        assert not ok(state, places[0])["refused"]
        order += batch
        ok(state, C.ExecFinish(reports=[C.Report(id=i, node="n1", attempt=1, exitCode=0) for i in batch], now=NOW))
    assert order == [i for i, name in zip(ids, names) if name != "x"]
    assert [positions[i] for i in order] == list(range(len(order)))
    for i, name in zip(ids, names):
        if name == "x":   # never placed: its position counts every execution queued before it
            assert positions[i] == sum(1 for j in ids if j < i)
            assert why(state, i)["queuePosition"] == sum(1 for j in ids if j < i and names[ids.index(j)] == "x")


# ---- getAllExecutions pages: the same answers, without a scan -------------------------------------------------
class NoScan(dict):
    """The executions by id, counting lookups and refusing every walk over them."""
    lookups = 0

    def get(self, key, default=None):
        NoScan.lookups += 1
        return super().get(key, default)

    def _walk(self, *args):
        raise AssertionError("a walk over every execution")
    __iter__ = keys = values = items = _walk   # type: ignore[assignment]


def test_a_page_explains_each_waiting_execution_from_the_indexes_alone():
    state = approved_state({"n1": 1, "n2": 1})
    ok(state, activity_new("late"))
    submit(state, count=2)
    place_all(state)
    for i in range(3000):
        submit(state, "late" if i % 7 == 0 else "act")
    one_by_one = {i: why(state, i) for i in range(1400, 1500) if state.executions[i]["status"] == "waiting"}
    state.execution_table.executions = NoScan(state.execution_table.executions)
    NoScan.lookups = 0
    page = execution_page(state, activity=None, status="waiting", after=1399, limit=100, facts=FACTS)
    assert NoScan.lookups == 100   # one per execution of the page, whatever the depth
    assert {v["id"]: {k: v[k] for k in ("waitingReason", "queuePosition")} for v in page["executions"]} == one_by_one
    # 1397 wait before 1400 (ids 3..1399), of which 200 are of "late", which no node can run: 1197 ahead of it.
    assert one_by_one[1400] == {"waitingReason": "all 2 slots busy, 1197 ahead of it", "queuePosition": 1197}
