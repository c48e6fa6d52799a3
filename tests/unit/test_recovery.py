"""Tests for recovery: lost nodes, lost attempts, reinstalls and restarted nodes.

The state is driven only through State.apply(); the scheduler and reconcile are pure functions of it.
"""

from __future__ import annotations

import copy

import pytest

from podnode.exec.reconcile import reconcile
from podnode.raft import commands as C
from podnode.raft.state import State
from podnode.scheduler import place_new, plan, plan_lost, up_nodes

from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok, snapshot

LATER = 2000.0


# ---- command builders -----------------------------------------------------------------------------
def exec_new(name: str, now: float = NOW, node: str | None = None) -> C.ExecNew:
    return C.ExecNew(name=name, input="in", now=now, node=node)


def place(*pairs: tuple[int, str], now: float = NOW) -> C.ExecPlace:
    return C.ExecPlace(placements=[list(p) for p in pairs], now=now)


def report(exec_id: int, node: str, attempt: int = 1, exit_code: int | None = 0, stdout: str = "") -> C.Report:
    return C.Report(id=exec_id, node=node, attempt=attempt, exitCode=exit_code, stdout=stdout, stderr="",
                    stdoutTruncated=False, stderrTruncated=False, error=None)


def finish(*reports: C.Report, now: float = NOW, pull: str | None = None) -> C.ExecFinish:
    return C.ExecFinish(reports=list(reports), now=now, pull=pull)


def terminate(exec_id: int, now: float = NOW) -> C.ExecTerminate:
    return C.ExecTerminate(id=exec_id, now=now)


def node_lost(node: str, now: float = LATER, reason: str | None = None) -> C.NodeLost:
    return C.NodeLost(node=node, now=now, reason=reason)


def lost_report(exec_id: int, node: str, attempt: int = 1) -> C.Report:
    return C.Report(id=exec_id, node=node, attempt=attempt)


def exec_lost(*reports: C.Report, now: float = LATER, reason: str | None = None) -> C.ExecLost:
    return C.ExecLost(reports=list(reports), now=now, reason=reason)


def reinstall(name: str, node: str, now: float = LATER) -> C.Reinstall:
    return C.Reinstall(name=name, node=node, now=now)


# ---- helpers --------------------------------------------------------------------------------------
def new_exec(state: State, name: str = "act") -> int:
    return ok(state, exec_new(name))["execution"]["id"]


def running_on(state: State, node: str, name: str = "act") -> int:
    exec_id = new_exec(state, name)
    result = ok(state, place((exec_id, node)))
    assert result["placed"] == [exec_id], result
    return exec_id


def run_local(state: State, node: str = "n1", *, running: dict[int, int] | None = None,
              done: set[tuple[int, int]] | None = None, incarnation: str = ""):
    return reconcile(state, node, running=running or {}, done=done or set(), installing=set(),
                     uninstalling=set(), incarnation=incarnation)


# ---- node_lost: executions ------------------------------------------------------------------------
def test_node_lost_requeues_running_executions_below_max_attempts():
    state = approved_state(max_attempts=3)
    e1 = running_on(state, "n1")
    e2 = running_on(state, "n2")
    result = ok(state, node_lost("n1"))
    assert result["moved"] == [e1]
    execution = state.executions[e1]
    assert execution["status"] == "waiting"
    assert execution["workerId"] is None
    assert execution["startTime"] is None
    assert execution["attempt"] == 1
    assert "n1" in execution["lastError"]
    assert "workerIncarnation" not in execution
    assert execution["finishTime"] is None
    # The execution on the other node is untouched.
    assert state.executions[e2]["status"] == "in progress"
    assert state.executions[e2]["workerId"] == "n2"


def test_node_lost_uses_the_given_reason():
    state = approved_state()
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1", reason="node n1 was lost (unreachable for 31.0 s)"))
    assert state.executions[e1]["lastError"] == "node n1 was lost (unreachable for 31.0 s)"
    assert state.nodes["n1"]["lostReason"] == "node n1 was lost (unreachable for 31.0 s)"


def test_node_lost_gives_up_at_max_attempts():
    state = approved_state({"n1": 2, "n2": 2, "n3": 2}, max_attempts=2)
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1"))
    assert state.executions[e1]["status"] == "waiting"
    assert state.executions[e1]["attempt"] == 1

    ok(state, place((e1, "n2")))
    assert state.executions[e1]["attempt"] == 2
    ok(state, node_lost("n2", now=LATER + 5))
    execution = state.executions[e1]
    assert execution["status"] == "error"
    assert "gave up after 2 attempts" in execution["errorDescription"]
    assert "n2" in execution["errorDescription"]
    assert execution["finishTime"] == LATER + 5
    assert state.busy_slots()["n2"] == 0


def test_node_lost_with_max_attempts_one_gives_up_at_once():
    state = approved_state(max_attempts=1)
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1"))
    assert state.executions[e1]["status"] == "error"
    assert "gave up after 1 attempts" in state.executions[e1]["errorDescription"]


def test_default_max_attempts_is_used_without_the_field():
    state = approved_state({"n1": 1, "n2": 1, "n3": 1, "n4": 1})
    assert state.activities["act"]["maxAttempts"] == 3
    e1 = running_on(state, "n1")
    for i, node in enumerate(["n1", "n2"]):
        ok(state, node_lost(node))
        assert state.executions[e1]["status"] == "waiting"
        ok(state, place((e1, ["n2", "n3"][i])))
    ok(state, node_lost("n3"))
    assert state.executions[e1]["status"] == "error"
    assert "gave up after 3 attempts" in state.executions[e1]["errorDescription"]


def test_node_lost_drops_pending_output_of_terminated_executions():
    state = approved_state({"n1": 1, "n2": 1})
    e1 = running_on(state, "n1")
    ok(state, terminate(e1))
    assert state.executions[e1]["outputPending"] is True
    assert state.busy_slots()["n1"] == 1

    result = ok(state, node_lost("n1"))
    execution = state.executions[e1]
    assert result["moved"] == []
    assert "outputPending" not in execution
    assert execution["status"] == "terminated"
    assert "output was lost" in execution["errorDescription"]
    assert "terminated by request" in execution["errorDescription"]
    assert state.busy_slots()["n1"] == 0


def test_node_lost_leaves_ended_executions_alone():
    state = approved_state()
    e1 = running_on(state, "n1")
    ok(state, finish(report(e1, "n1", exit_code=0, stdout="out")))
    e2 = new_exec(state)  # waiting, not on any node
    before = copy.deepcopy(state.executions)
    ok(state, node_lost("n1"))
    assert state.executions == before
    assert state.executions[e2]["status"] == "waiting"


# ---- node_lost: installations ---------------------------------------------------------------------
def test_node_lost_drops_unfinished_installations_and_keeps_installed_ones():
    state = approved_state({"n1": 2, "n2": 2}, name="done")  # "done" installed on n1 and n2
    ok(state, activity_new("failing"))
    ok(state, assign(("failing", "n2")))
    ok(state, install_done("failing", "n2", ok=True))
    ok(state, assign(("failing", "n1")))
    ok(state, install_done("failing", "n1", ok=False, error="boom"))   # approved, failed on n1
    ok(state, activity_new("pending"))
    ok(state, assign(("pending", "n1")))                              # verifying on n1
    assert state.installations["failing"]["n1"]["status"] == "failed"
    assert state.installations["pending"]["n1"]["status"] == "installing"

    ok(state, node_lost("n1"))
    assert state.installations["done"]["n1"]["status"] == "installed"
    assert "n1" not in state.installations["failing"]
    assert state.installations["failing"]["n2"]["status"] == "installed"
    assert state.installations["pending"] == {}
    assert state.activities["pending"]["status"] == "verifying"


def test_node_lost_drops_uninstalling_and_removes_a_deleted_activity_whose_last_install_was_there():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, C.ActivityDelete(name="act", now=NOW))
    assert state.installations["act"]["n1"]["status"] == "uninstalling"
    ok(state, C.UninstallDone(name="act", node="n2"))
    assert "act" in state.activities

    ok(state, node_lost("n1"))
    assert "act" not in state.activities
    assert "act" not in state.installations


def test_node_lost_keeps_a_deleted_activity_still_uninstalling_elsewhere():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, C.ActivityDelete(name="act", now=NOW))
    ok(state, node_lost("n1"))
    assert state.activities["act"]["status"] == "uninstalling"
    assert list(state.installations["act"]) == ["n2"]
    ok(state, C.UninstallDone(name="act", node="n2"))
    assert "act" not in state.activities


def test_verifying_activity_moves_to_another_node_after_loss():
    state = State()
    ok(state, node_up("n1", 4))
    ok(state, node_up("n2", 1))
    ok(state, activity_new("act"))
    cmds = plan(state, NOW, live_nodes=["n1", "n2"])
    assert cmds[0].assignments == [["act", "n1"]]
    ok(state, cmds[0])
    # No second verify while the first is going on.
    assert plan(state, NOW, live_nodes=["n1", "n2"]) == []

    ok(state, node_lost("n1"))
    cmds = plan(state, LATER, live_nodes=["n1", "n2"])  # n1 reachable again but still declared lost
    assert [c.t for c in cmds] == [C.INSTALL_ASSIGN]
    assert cmds[0].assignments == [["act", "n2"]]
    result = ok(state, cmds[0])
    assert result["assigned"] == [["act", "n2"]] and result["refused"] == []
    ok(state, install_done("act", "n2", now=LATER))
    assert state.activities["act"]["status"] == "approved"


def test_node_status_and_repeat_and_unknown_node_lost():
    state = approved_state()
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1", now=LATER))
    assert state.nodes["n1"]["status"] == "lost"
    assert state.nodes["n1"]["lostAt"] == LATER
    assert state.nodes["n2"]["status"] == "up"

    # Re-place the requeued execution on n2, then the same node is declared lost again: nothing changes.
    ok(state, place((e1, "n2")))
    before = snapshot(state)
    assert ok(state, node_lost("n1", now=LATER + 10)) == {"ok": True, "ignored": True}
    assert state.to_dict() == before

    assert ok(state, node_lost("ghost")) == {"ok": True, "ignored": True}
    assert state.to_dict() == before


def test_node_lost_malformed_is_refused_without_change():
    state = approved_state()
    running_on(state, "n1")
    before = snapshot(state)
    for cmd in ({"t": C.NODE_LOST, "now": NOW}, {"t": C.NODE_LOST, "node": "n1"},
                {"t": C.NODE_LOST, "node": ["n1"], "now": NOW}):
        result = state.apply(cmd)
        assert "error" in result, (cmd, result)
        assert state.to_dict() == before


# ---- a lost node gets no work ---------------------------------------------------------------------
def test_lost_node_gets_no_placements():
    state = approved_state({"n1": 4, "n2": 1})
    ok(state, node_lost("n1"))
    e1 = new_exec(state)
    result = ok(state, place((e1, "n1")))
    assert result["placed"] == []
    assert result["refused"] == [[e1, "node is lost"]]
    assert state.executions[e1]["status"] == "waiting"

    assert up_nodes(state, ["n1", "n2"]) == ["n2"]
    assert place_new(state, "act", live_nodes=["n1", "n2"]) is None  # e1 is queued: FIFO
    cmds = plan(state, NOW, live_nodes=["n1", "n2"])
    assert cmds == [C.ExecPlace(placements=[[e1, "n2"]], now=NOW)]


def test_place_new_and_plan_skip_a_lost_node():
    state = approved_state({"n1": 4, "n2": 1})
    ok(state, node_lost("n1"))
    assert place_new(state, "act", live_nodes=["n1", "n2"]) == "n2"
    ok(state, node_lost("n2"))
    assert place_new(state, "act", live_nodes=["n1", "n2"]) is None
    new_exec(state)
    assert plan(state, NOW, live_nodes=["n1", "n2"]) == []


def test_exec_new_proposed_on_a_lost_node_queues():
    state = approved_state()
    ok(state, node_lost("n1"))
    result = ok(state, exec_new("act", node="n1"))
    assert result["execution"]["status"] == "waiting"
    assert result["execution"]["workerId"] is None


def test_pull_from_a_lost_node_gives_nothing():
    state = approved_state({"n1": 2, "n2": 2})
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1"))
    waiting = new_exec(state)
    # A late report from the lost node for the requeued attempt is ignored, and it pulls nothing.
    result = ok(state, finish(report(e1, "n1"), pull="n1"))
    assert result["accepted"] == []
    assert result["ignored"] == [e1]
    assert result["pulled"] == []
    assert state.executions[waiting]["status"] == "waiting"
    assert state.executions[e1]["status"] == "waiting"
    # A live node pulls them, oldest first.
    assert ok(state, finish(pull="n2"))["pulled"] == [e1, waiting]


def test_install_assign_refused_on_a_lost_node():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, activity_new("other"))
    ok(state, node_lost("n1"))
    result = ok(state, assign(("other", "n1")))
    assert result["assigned"] == []
    assert result["refused"] == [["other", "n1", "node is lost"]]
    assert state.installations["other"] == {}
    assert plan(state, NOW, live_nodes=["n1", "n2"])[0].assignments == [["other", "n2"]]


def test_node_up_after_loss_makes_the_node_usable_again():
    state = approved_state({"n1": 2, "n2": 2}, incarnations={"n1": "inc-a", "n2": "inc-b"})
    e1 = running_on(state, "n1")
    assert state.executions[e1]["workerIncarnation"] == "inc-a"
    ok(state, node_lost("n1"))
    assert "workerIncarnation" not in state.executions[e1]

    ok(state, node_up("n1", 2, now=LATER, incarnation="inc-c"))
    assert state.nodes["n1"]["status"] == "up"
    assert state.nodes["n1"]["incarnation"] == "inc-c"
    assert "lostReason" not in state.nodes["n1"]
    assert state.nodes["n1"]["joinedAt"] == NOW
    assert up_nodes(state, ["n1", "n2"]) == ["n1", "n2"]

    result = ok(state, place((e1, "n1"), now=LATER))
    assert result["placed"] == [e1]
    execution = state.executions[e1]
    assert execution["status"] == "in progress"
    assert execution["workerId"] == "n1"
    assert execution["attempt"] == 2
    assert execution["startTime"] == LATER
    assert execution["workerIncarnation"] == "inc-c"
    # Installations that survived the loss are usable again; others get planned again.
    assert place_new(state, "act", live_nodes=["n1"]) == "n1"


def test_node_up_after_loss_gets_dropped_installs_planned_again():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, activity_new("other"))
    ok(state, assign(("other", "n2")))
    ok(state, install_done("other", "n2"))
    ok(state, assign(("other", "n1")))          # installing on n1
    ok(state, node_lost("n1"))
    assert "n1" not in state.installations["other"]
    assert plan(state, LATER, live_nodes=["n1", "n2"]) == []
    ok(state, node_up("n1", now=LATER))
    cmds = plan(state, LATER, live_nodes=["n1", "n2"])
    assert cmds[0].assignments == [["other", "n1"]]
    assert ok(state, cmds[0])["assigned"] == [["other", "n1"]]


def test_placement_records_incarnation_including_pull_and_exec_new():
    state = approved_state({"n1": 2, "n2": 2}, incarnations={"n1": "i1"})
    e1 = ok(state, exec_new("act", node="n1"))["execution"]
    assert e1["workerIncarnation"] == "i1"
    e2 = new_exec(state)
    ok(state, finish(pull="n2"))
    assert state.executions[e2]["workerIncarnation"] == ""  # n2 gave no incarnation


# ---- stale reports --------------------------------------------------------------------------------
@pytest.mark.parametrize("second_node", ["n1", "n2"])
def test_stale_finish_after_requeue_and_replacement_is_ignored(second_node):
    state = approved_state({"n1": 2, "n2": 2})
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1"))
    if second_node == "n1":
        ok(state, node_up("n1", now=LATER))
    ok(state, place((e1, second_node), now=LATER))
    assert state.executions[e1]["attempt"] == 2

    stale = ok(state, finish(report(e1, "n1", attempt=1, exit_code=1, stdout="old"), now=LATER))
    assert stale["accepted"] == [] and stale["ignored"] == [e1]
    assert state.executions[e1]["status"] == "in progress"
    assert state.executions[e1]["stdout"] == ""

    fresh = ok(state, finish(report(e1, second_node, attempt=2, exit_code=0, stdout="new"), now=LATER + 1))
    assert fresh["accepted"] == [e1]
    execution = state.executions[e1]
    assert execution["status"] == "finished"
    assert execution["stdout"] == "new"
    assert execution["exitCode"] == 0
    assert execution["finishTime"] == LATER + 1


# ---- exec_lost ------------------------------------------------------------------------------------
def test_exec_lost_requeues_only_matching_attempts():
    state = approved_state({"n1": 3, "n2": 2})
    e1 = running_on(state, "n1")
    e2 = running_on(state, "n1")
    e3 = running_on(state, "n2")
    result = ok(state, exec_lost(lost_report(e1, "n1", 1),
                                 lost_report(e2, "n1", 2),     # wrong attempt
                                 lost_report(e3, "n1", 1),     # wrong node
                                 lost_report(99, "n1", 1),     # no such execution
                                 reason="node n1 restarted while running it"))
    assert result == {"ok": True, "lost": [e1]}
    assert state.executions[e1]["status"] == "waiting"
    assert state.executions[e1]["workerId"] is None
    assert state.executions[e1]["attempt"] == 1
    assert state.executions[e1]["lastError"] == "node n1 restarted while running it"
    for other, node in ((e2, "n1"), (e3, "n2")):
        assert state.executions[other]["status"] == "in progress"
        assert state.executions[other]["workerId"] == node
    assert state.nodes["n1"]["status"] == "up"  # exec_lost does not declare the node lost


def test_exec_lost_default_reason_and_give_up():
    state = approved_state(max_attempts=1)
    e1 = running_on(state, "n1")
    ok(state, exec_lost(lost_report(e1, "n1", 1)))
    assert state.executions[e1]["status"] == "error"
    assert "restarted" in state.executions[e1]["errorDescription"]
    assert "gave up after 1 attempts" in state.executions[e1]["errorDescription"]


def test_exec_lost_of_an_old_attempt_after_replacement_is_ignored():
    state = approved_state({"n1": 2, "n2": 2})
    e1 = running_on(state, "n1")
    ok(state, exec_lost(lost_report(e1, "n1", 1)))
    ok(state, place((e1, "n1")))
    before = snapshot(state)
    assert ok(state, exec_lost(lost_report(e1, "n1", 1))) == {"ok": True, "lost": []}
    assert state.to_dict() == before


def test_exec_lost_clears_pending_output_of_a_terminated_execution():
    state = approved_state({"n1": 1, "n2": 1})
    e1 = running_on(state, "n1")
    ok(state, terminate(e1))
    assert state.busy_slots()["n1"] == 1
    result = ok(state, exec_lost(lost_report(e1, "n1", 1), reason="node n1 restarted while running it"))
    assert result["lost"] == [e1]
    execution = state.executions[e1]
    assert execution["status"] == "terminated"
    assert "outputPending" not in execution
    assert "output was lost" in execution["errorDescription"]
    assert state.busy_slots()["n1"] == 0
    # Its late finish report is now ignored.
    assert ok(state, finish(report(e1, "n1")))["ignored"] == [e1]


def test_exec_lost_ignores_ended_executions():
    state = approved_state()
    e1 = running_on(state, "n1")
    ok(state, finish(report(e1, "n1", exit_code=0, stdout="x")))
    before = snapshot(state)
    assert ok(state, exec_lost(lost_report(e1, "n1", 1))) == {"ok": True, "lost": []}
    assert state.to_dict() == before


@pytest.mark.parametrize("reports", [
    ["junk"],
    [None],
    [{"id": 1, "node": "n1", "attempt": 1}, "junk"],          # a good one first: nothing applied
    [{"id": [1], "node": "n1", "attempt": 1}],                 # unhashable id
    [1, 2],
])
def test_exec_lost_malformed_reports_are_refused_without_change(reports):
    state = approved_state()
    e1 = running_on(state, "n1")
    assert e1 == 1
    before = snapshot(state)
    result = state.apply({"t": C.EXEC_LOST, "reports": reports, "now": LATER})
    assert "error" in result, result
    assert isinstance(result.get("message"), str) and result["message"]
    assert state.to_dict() == before
    assert state.executions[e1]["status"] == "in progress"


def test_exec_lost_malformed_command_shapes_are_refused_without_change():
    state = approved_state()
    running_on(state, "n1")
    before = snapshot(state)
    for cmd in ({"t": C.EXEC_LOST, "reports": 5, "now": LATER},
                {"t": C.EXEC_LOST, "reports": "abc", "now": LATER},
                {"t": C.EXEC_LOST, "reports": [lost_report(1, "n1").to_wire()]}):   # no "now"
        result = state.apply(cmd)
        assert "error" in result, (cmd, result)
        assert state.to_dict() == before
    assert ok(state, {"t": C.EXEC_LOST, "now": LATER}) == {"ok": True, "lost": []}


# ---- reinstall ------------------------------------------------------------------------------------
def test_reinstall_moves_installed_back_to_installing():
    state = approved_state({"n1": 2, "n2": 2})
    assert ok(state, reinstall("act", "n1", now=LATER)) == {"ok": True}
    assert state.installations["act"]["n1"] == {"status": "installing", "since": LATER}
    assert state.installations["act"]["n2"]["status"] == "installed"
    assert state.activities["act"]["status"] == "approved"
    # Not placeable there until installed again; reconcile asks the node to install it.
    e1 = new_exec(state)
    assert ok(state, place((e1, "n1")))["refused"] == [[e1, "activity not installed on node"]]
    out = run_local(state, "n1")
    assert [a["name"] for a in out.install] == ["act"]
    ok(state, install_done("act", "n1", now=LATER))
    assert state.installations["act"]["n1"]["status"] == "installed"
    assert ok(state, place((e1, "n1")))["placed"] == [e1]


def test_reinstall_ignores_other_statuses_and_unknowns():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, activity_new("verif"))
    ok(state, assign(("verif", "n1")))                        # installing
    ok(state, activity_new("bad"))
    ok(state, assign(("bad", "n1")))
    ok(state, install_done("bad", "n1", ok=False))            # failed
    ok(state, activity_new("gone"))
    ok(state, assign(("gone", "n1")))
    ok(state, install_done("gone", "n1"))
    ok(state, assign(("gone", "n2")))
    ok(state, install_done("gone", "n2"))
    ok(state, C.ActivityDelete(name="gone", now=NOW))   # uninstalling
    before = snapshot(state)
    for name, node in (("verif", "n1"), ("bad", "n1"), ("gone", "n1"), ("act", "ghost"), ("nope", "n1")):
        assert ok(state, reinstall(name, node)) == {"ok": True, "ignored": True}, (name, node)
    assert state.to_dict() == before


def test_reinstall_twice_is_ignored_the_second_time():
    state = approved_state()
    ok(state, reinstall("act", "n1", now=LATER))
    before = snapshot(state)
    assert ok(state, reinstall("act", "n1", now=LATER + 1)) == {"ok": True, "ignored": True}
    assert state.to_dict() == before


# ---- scheduler.plan_lost --------------------------------------------------------------------------
def test_plan_lost_only_for_up_nodes_over_the_threshold():
    state = approved_state({"n1": 2, "n2": 2, "n3": 2, "n4": 2})
    e1 = running_on(state, "n1")
    ok(state, node_lost("n4"))
    silent = {"n1": 31.0, "n2": 30.0, "n3": 5.0, "n4": 100.0, "ghost": 100.0}
    cmds = plan_lost(state, LATER, silent_s=silent, lost_after_s=30.0)
    assert [c.node for c in cmds] == ["n1"]
    cmd = cmds[0]
    assert cmd.t == C.NODE_LOST
    assert cmd.now == LATER
    assert "lost" in cmd.reason and "n1" in cmd.reason

    assert ok(state, copy.deepcopy(cmd))["moved"] == [e1]
    assert state.nodes["n1"]["status"] == "lost"
    assert state.executions[e1]["lastError"] == cmd.reason
    assert plan_lost(state, LATER, silent_s=silent, lost_after_s=30.0) == []


def test_plan_lost_sorted_and_empty():
    state = approved_state({"n1": 2, "n2": 2, "n3": 2})
    assert plan_lost(state, LATER, silent_s={}, lost_after_s=30.0) == []
    cmds = plan_lost(state, LATER, silent_s={"n3": 40.0, "n1": 50.0}, lost_after_s=30.0)
    assert [c.node for c in cmds] == ["n1", "n3"]
    for cmd in cmds:
        ok(state, cmd)
    assert {n: r["status"] for n, r in state.nodes.items()} == {"n1": "lost", "n2": "up", "n3": "lost"}


# ---- reconcile with incarnation -------------------------------------------------------------------
def test_reconcile_starts_this_incarnations_work_and_reports_older_as_lost():
    state = approved_state({"n1": 4, "n2": 2}, incarnations={"n1": "old"})
    e_old = running_on(state, "n1")                     # placed on incarnation "old"
    ok(state, node_up("n1", 4, incarnation="new"))      # n1 restarted (not declared lost)
    e_new = running_on(state, "n1")                     # placed on incarnation "new"
    e_other = running_on(state, "n2")
    assert state.executions[e_old]["workerIncarnation"] == "old"
    assert state.executions[e_new]["workerIncarnation"] == "new"

    out = run_local(state, "n1", incarnation="new")
    assert [r["id"] for r in out.start] == [e_new]
    assert [r["id"] for r in out.lost] == [e_old]
    assert out.stop == []
    assert e_other not in [r["id"] for r in out.start + out.lost]

    # Reporting them lost requeues them; reconcile then has nothing more to say about them.
    lost = [lost_report(r["id"], "n1", r["attempt"]) for r in out.lost]
    assert ok(state, exec_lost(*lost))["lost"] == [e_old]
    out = run_local(state, "n1", incarnation="new")
    assert out.lost == []
    assert [r["id"] for r in out.start] == [e_new]


def test_reconcile_reports_output_pending_of_an_earlier_incarnation_as_lost():
    state = approved_state({"n1": 4, "n2": 2}, incarnations={"n1": "old"})
    e_old = running_on(state, "n1")
    e_cur = running_on(state, "n1")
    ok(state, node_up("n1", 4, incarnation="new"))
    e_cur2 = running_on(state, "n1")
    ok(state, terminate(e_old))
    ok(state, terminate(e_cur2))   # terminated, outputPending, this incarnation
    assert state.executions[e_old]["outputPending"] and state.executions[e_cur2]["outputPending"]

    out = run_local(state, "n1", running={e_cur2: 1}, incarnation="new")
    lost_ids = [r["id"] for r in out.lost]
    assert e_old in lost_ids
    assert e_cur2 not in lost_ids
    assert e_cur2 in out.stop
    # e_cur is in progress from the old incarnation: also lost, not started.
    assert e_cur in lost_ids
    assert out.start == []

    ok(state, exec_lost(*(lost_report(r["id"], "n1", r["attempt"]) for r in out.lost)))
    assert "outputPending" not in state.executions[e_old]
    assert state.executions[e_cur]["status"] == "waiting"
    assert run_local(state, "n1", running={e_cur2: 1}, incarnation="new").lost == []


def test_reconcile_records_running_or_done_here_are_neither_started_nor_lost():
    state = approved_state({"n1": 4}, incarnations={"n1": "old"})
    e_run = running_on(state, "n1")
    e_done = running_on(state, "n1")
    ok(state, node_up("n1", 4, incarnation="new"))
    e_run_new = running_on(state, "n1")
    e_done_new = running_on(state, "n1")
    out = run_local(state, "n1", running={e_run: 1, e_run_new: 1}, done={(e_done, 1), (e_done_new, 1)},
                    incarnation="new")
    assert out.start == []
    assert out.lost == []
    assert out.stop == []


def test_reconcile_output_pending_running_here_is_not_lost():
    state = approved_state({"n1": 4}, incarnations={"n1": "old"})
    e1 = running_on(state, "n1")
    ok(state, terminate(e1))
    ok(state, node_up("n1", 4, incarnation="new"))
    out = run_local(state, "n1", running={e1: 1}, incarnation="new")
    assert out.lost == [] and out.start == []
    assert out.stop == [e1]


def test_reconcile_same_incarnation_output_pending_is_not_lost():
    state = approved_state({"n1": 4}, incarnations={"n1": "i"})
    e1 = running_on(state, "n1")
    ok(state, terminate(e1))
    out = run_local(state, "n1", done={(e1, 1)}, incarnation="i")
    assert out.lost == [] and out.start == []


def test_reconcile_default_incarnation_matches_nodes_without_one():
    state = approved_state({"n1": 2})
    e1 = running_on(state, "n1")
    assert state.executions[e1]["workerIncarnation"] == ""
    out = run_local(state, "n1")
    assert [r["id"] for r in out.start] == [e1] and out.lost == []
    out = run_local(state, "n1", incarnation="fresh")
    assert out.start == [] and [r["id"] for r in out.lost] == [e1]


def test_reconcile_after_node_lost_stops_the_requeued_runs():
    state = approved_state({"n1": 2, "n2": 2}, incarnations={"n1": "i"})
    e1 = running_on(state, "n1")
    ok(state, node_lost("n1"))
    out = run_local(state, "n1", running={e1: 1}, incarnation="i")
    assert out.stop == [e1]
    assert out.start == [] and out.lost == []


# ---- determinism ----------------------------------------------------------------------------------
def recovery_script() -> list[dict]:
    return [
        node_up("n1", 2, incarnation="a"),
        node_up("n2", 1, incarnation="b"),
        node_up("n3", 1, incarnation="c"),
        activity_new("act", maxAttempts=2),
        assign(("act", "n1")),
        install_done("act", "n1"),
        assign(("act", "n2"), ("act", "n3")),
        install_done("act", "n2"),
        install_done("act", "n3"),
        activity_new("pending"),
        assign(("pending", "n2")),
        exec_new("act"), exec_new("act"), exec_new("act"), exec_new("act"),
        place((1, "n1"), (2, "n1"), (3, "n2"), (4, "n3")),
        terminate(2),
        node_lost("n1", now=LATER),
        node_lost("n1", now=LATER + 1),
        node_lost("ghost"),
        exec_lost(lost_report(3, "n2", 1), lost_report(4, "n3", 7), now=LATER + 2),
        {"t": C.EXEC_LOST, "reports": ["junk"], "now": LATER + 2},
        reinstall("act", "n3", now=LATER + 3),
        reinstall("act", "n1", now=LATER + 3),
        node_lost("n2", now=LATER + 4),
        node_up("n1", 2, now=LATER + 5, incarnation="a2"),
        finish(report(1, "n1", 1), pull="n1", now=LATER + 6),
        install_done("act", "n3", now=LATER + 7),
        place((3, "n3"), now=LATER + 8),
        exec_lost(lost_report(3, "n3", 2), now=LATER + 9),
        C.batch([exec_new("act"), node_lost("n3", now=LATER + 10), reinstall("act", "n1")]),
    ]


def test_recovery_commands_are_deterministic():
    a, b = State(), State()
    results_a = [a.apply(copy.deepcopy(cmd)) for cmd in recovery_script()]
    results_b = [b.apply(copy.deepcopy(cmd)) for cmd in recovery_script()]
    assert results_a == results_b
    assert a.to_dict() == b.to_dict()
    # The script really exercised recovery.
    assert a.nodes["n1"]["status"] == "up" and a.nodes["n2"]["status"] == "lost"
    assert a.nodes["n3"]["status"] == "lost"
    assert any(r.get("moved") for r in results_a)
    assert any(r.get("lost") for r in results_a)
    assert any("error" in r for r in results_a)        # the junk exec_lost
    statuses = {e["status"] for e in a.executions.values()}
    assert "error" in statuses or "waiting" in statuses


def test_recovery_state_survives_a_snapshot_round_trip():
    a = State()
    for cmd in recovery_script():
        a.apply(copy.deepcopy(cmd))
    b = State()
    b.load_dict(C.decode(C.encode(a.to_dict())))
    assert b.to_dict() == a.to_dict()


# ---- gaps found while writing these tests, now fixed -----------------------------------------------
def test_deleting_an_activity_installed_on_an_already_lost_node_completes():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, node_lost("n1"))
    ok(state, C.ActivityDelete(name="act", now=LATER))
    ok(state, C.UninstallDone(name="act", node="n2"))
    assert "act" not in state.activities


def test_reconcile_output_pending_done_here_is_not_lost():
    state = approved_state({"n1": 4}, incarnations={"n1": "old"})
    e1 = running_on(state, "n1")
    ok(state, terminate(e1))
    ok(state, node_up("n1", 4, incarnation="new"))
    assert run_local(state, "n1", done={(e1, 1)}, incarnation="new").lost == []


def test_max_attempts_out_of_range_is_refused_and_changes_nothing():
    state = approved_state({"n1": 2})
    before = copy.deepcopy(state.to_dict())
    for bad in (0, -2, 101):
        result = state.apply(C.ActivityNew(name="x", url="u", now=NOW, maxAttempts=bad))
        assert result["error"] == "bad_request" and "maxAttempts" in result["message"]
    assert state.to_dict() == before


def test_a_node_back_up_shows_no_lost_fields():
    state = approved_state({"n1": 2, "n2": 2})
    ok(state, node_lost("n1"))
    assert state.nodes["n1"]["status"] == "lost" and "lostAt" in state.nodes["n1"]
    ok(state, node_up("n1", 2))
    assert state.nodes["n1"]["status"] == "up"
    assert "lostAt" not in state.nodes["n1"] and "lostReason" not in state.nodes["n1"]
