"""Tests for podnode.placement: the placement rules as pure functions of plain data, and the promise that the
scheduler and the state machine apply the same rules (a plan made on the current state is never refused)."""

from __future__ import annotations

import copy
import random
import subprocess
import sys

import pytest

from podnode import placement, scheduler
from podnode.raft import commands as C
from podnode.raft.state import State

from .builders import NOW, activity_new, approved_state, assign, install_done, ok


def node(slots: int, status: str = "up") -> dict:
    return {"slots": slots, "status": status}


def execution(activity: str = "a", status: str = "waiting", worker: str | None = None, **kw) -> dict:
    return {"activityName": activity, "status": status, "workerId": worker, **kw}


INSTALLED = {"status": "installed"}


def test_the_rules_import_no_state_machine():
    code = "import sys, podnode.placement; print(sorted(m for m in sys.modules if m.startswith('podnode')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "podnode.raft.state" not in out and "podnode.scheduler" not in out, out


def test_only_an_up_node_takes_work():
    assert placement.takes_work(node(1)) and placement.takes_work({"slots": 1})
    assert not any(placement.takes_work(node(1, s)) for s in ("draining", "lost", "left"))
    nodes = {"n1": node(1), "n2": node(1, "draining"), "n3": node(1, "lost")}
    assert placement.up_nodes(nodes, ["n3", "n2", "n1", "unknown"]) == ["n1"]


def test_a_slot_is_held_while_running_and_while_a_terminated_run_is_stopped():
    executions = {1: execution(status="in progress", worker="n1"),
                  2: execution(status="terminated", worker="n1", outputPending=True),
                  3: execution(status="terminated", worker="n1"),
                  4: execution(status="finished", worker="n2"),
                  5: execution(status="in progress", worker="gone")}
    assert placement.busy_slots({"n1": node(3), "n2": node(1)}, executions) == {"n1": 2, "n2": 0}


def test_why_not_place_gives_each_reason():
    nodes = {"n1": node(1), "n2": node(1, "draining")}
    installations = {"a": {"n1": INSTALLED, "n2": INSTALLED}, "b": {"n1": {"status": "installing"}}}

    def why(ex, n, busy=None):
        return placement.why_not_place(ex, n, nodes=nodes, installations=installations, busy=busy or {"n1": 0, "n2": 0})

    assert why(None, "n1") == "no such execution"
    assert why(execution(status="finished"), "n1") == "execution is finished"
    assert why(execution(), "n9") == "no such node"
    assert why(execution(), "n2") == "node is draining"
    assert why(execution("b"), "n1") == "activity not installed on node"
    assert why(execution(), "n1", {"n1": 1, "n2": 0}) == "node has no free slot"
    assert why(execution(), "n1") is None


def test_the_most_free_slots_win_then_the_preferred_node_then_the_name():
    installations = {"a": {"n1": INSTALLED, "n2": INSTALLED, "n3": INSTALLED}}
    assert placement.best_node(installations, "a", {"n1": 1, "n2": 2, "n3": 2}, None) == "n2"
    assert placement.best_node(installations, "a", {"n1": 1, "n2": 2, "n3": 2}, "n3") == "n3"
    assert placement.best_node(installations, "a", {"n1": 1, "n4": 5}, None) == "n1"   # n4 has no install
    assert placement.best_node(installations, "b", {"n1": 1}, None) is None


def test_a_new_execution_never_starts_ahead_of_the_queue():
    nodes, installations = {"n1": node(2)}, {"a": {"n1": INSTALLED}}
    kw = dict(installations=installations, nodes=nodes, live=["n1"], prefer=None)
    assert placement.place_new("a", queued=0, busy={"n1": 0}, **kw) == "n1"
    assert placement.place_new("a", queued=1, busy={"n1": 0}, **kw) is None   # even one of another activity
    assert placement.place_new("a", queued=0, busy={"n1": 2}, **kw) is None   # no free slot


def test_pull_takes_the_oldest_waiting_it_can_run_as_many_as_it_has_free_slots():
    nodes = {"n1": node(3), "n2": node(1, "draining")}
    installations = {"a": {"n1": INSTALLED, "n2": INSTALLED}, "b": {}}
    executions = {5: execution(), 2: execution("b"), 3: execution(), 1: execution(status="in progress", worker="n1"),
                  4: execution(), 9: execution()}
    busy = placement.busy_slots(nodes, executions)
    queues = placement.queues(executions)
    assert queues == {"a": [3, 4, 5, 9], "b": [2]}
    kw = dict(queues=queues, installations=installations, nodes=nodes, busy=busy)
    assert placement.pull("n1", **kw) == [3, 4]   # 2 slots free; 2 is not installed there
    assert placement.pull("n2", **kw) == []       # draining
    assert placement.pull("n9", **kw) == []


def test_the_queues_merge_first_in_first_out_and_an_activity_that_cannot_run_is_dropped():
    queues = {"a": [1, 4, 5, 9], "b": [2, 3, 10], "c": [], "d": [6]}
    assert list(placement.oldest_first(queues, lambda name: True)) == [
        (1, "a"), (2, "b"), (3, "b"), (4, "a"), (5, "a"), (6, "d"), (9, "a"), (10, "b")]
    asked = []

    def runnable(name):
        asked.append(name)
        return name != "a"
    assert [i for i, _ in placement.oldest_first(queues, runnable)] == [2, 3, 6, 10]
    assert asked.count("a") == 1   # dropped at once: its queue is never walked


def test_plan_placements_fills_the_free_slots_oldest_first_and_skips_what_cannot_run():
    nodes = {"n1": node(2), "n2": node(1)}
    installations = {"a": {"n1": INSTALLED}, "b": {"n2": INSTALLED}, "c": {}}
    queues = {"a": [1, 2, 3], "b": [4, 5], "c": [0]}
    kw = dict(installations=installations, nodes=nodes, live=["n1", "n2"], prefer=None)
    assert placement.plan_placements(queues=queues, busy={"n1": 0, "n2": 0}, **kw) == [[1, "n1"], [2, "n1"],
                                                                                       [4, "n2"]]
    assert placement.plan_placements(queues=queues, busy={"n1": 2, "n2": 1}, **kw) == []


# ---- the scheduler and the state machine agree ------------------------------------------------------
def random_state(seed: int) -> State:
    rng = random.Random(seed)
    state = approved_state({"n1": rng.randint(0, 3), "n2": rng.randint(1, 2), "n3": rng.randint(0, 2)}, name="a")
    ok(state, activity_new("b"))
    ok(state, assign(("b", rng.choice(["n1", "n2", "n3"]))))
    if rng.random() < 0.7:
        ok(state, install_done("b", next(iter(state.installations["b"]))))
    for i in range(rng.randint(0, 12)):
        ok(state, C.ExecNew(name=rng.choice("ab"), now=NOW + i))
        if rng.random() < 0.4:
            for cmd in scheduler.plan(state, NOW + i, live_nodes=rng.sample(["n1", "n2", "n3"], k=2), expire=False):
                ok(state, cmd)
    running = [i for i, e in state.executions.items() if e["status"] == "in progress"]
    for exec_id in rng.sample(running, k=len(running) // 2):
        ok(state, C.ExecTerminate(id=exec_id, now=NOW + 20))
    if rng.random() < 0.3:
        ok(state, C.NodeDrain(node="n2", now=NOW + 21))
    if rng.random() < 0.3:
        ok(state, C.NodeLost(node="n3", now=NOW + 21))
    return state


@pytest.mark.parametrize("seed", range(40))
def test_the_state_machine_accepts_every_placement_the_scheduler_plans(seed):
    state = random_state(seed)
    live = ["n1", "n2", "n3"]
    cmds = scheduler.plan(state, NOW + 30, live_nodes=live, prefer=random.Random(seed).choice(live), expire=False)
    for cmd in cmds:
        result = ok(state, copy.deepcopy(cmd))
        assert result["refused"] == [], (cmd, result)
    # What is left waiting could go nowhere.
    assert scheduler.plan(state, NOW + 30, live_nodes=live, expire=False) == []


@pytest.mark.parametrize("seed", range(40))
def test_the_state_machine_accepts_the_node_place_new_proposes(seed):
    state = random_state(seed)
    for name in ("a", "b"):
        proposed = scheduler.place_new(state, name, live_nodes=["n1", "n2", "n3"])
        trial = State()
        trial.load_dict(copy.deepcopy(state.to_dict()))
        result = ok(trial, C.ExecNew(name=name, now=NOW + 30, node=proposed))
        assert result["execution"]["status"] == ("waiting" if proposed is None else "in progress"), (name, proposed)
        if proposed is not None:
            assert result["execution"]["workerId"] == proposed


def test_a_node_pulls_what_the_scheduler_would_place_on_it_alone():
    state = approved_state({"n1": 2, "n2": 2})
    for i in range(4):
        ok(state, C.ExecNew(name="act", now=NOW + i))
    planned = scheduler.plan(state, NOW, live_nodes=["n1"], expire=False)[0].placements
    pulled = ok(state, C.ExecFinish(reports=[], pull="n1", now=NOW + 5))["pulled"]
    assert pulled == [exec_id for exec_id, _ in planned] == [1, 2]
