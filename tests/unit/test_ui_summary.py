"""The status page's data (podnode/ui_summary.py), from a real state machine: counts without a scan, the queue's
head, running executions with their output's tail, nodes' roles, throughput and the leader's decision log."""

from __future__ import annotations

from podnode import ui_summary as U
from podnode.raft import commands as C
from podnode.waiting import Facts, explain

from .builders import NOW, approved_state, ok


class NoScan(dict):
    """The executions' dict, refusing every walk over all of it (lookups by id are fine)."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the status page walked over every execution")

    __iter__ = values = items = keys = _refuse


def submit(state, count: int, name: str = "act") -> list[int]:
    return [ok(state, C.ExecNew(name=name, input=f"in{i}", now=NOW + i))["execution"]["id"] for i in range(count)]


def place(state, exec_id: int, node: str, now: float = NOW + 50) -> None:
    result = ok(state, C.ExecPlace(placements=[[exec_id, node]], now=now))
    assert result["placed"] == [exec_id], result


def finish(state, exec_id: int, node: str, code: int = 0) -> None:
    report = C.Report(id=exec_id, node=node, attempt=1, exitCode=code, stdout="out", stderr="")
    ok(state, C.ExecFinish(reports=[report], now=NOW + 60))


def test_counts_and_ended_total_follow_every_transition_without_a_scan():
    state = approved_state()
    ids = submit(state, 30)
    state.execution_table.executions = NoScan(state.execution_table.executions)
    assert U.counters(state) == (0, 30, 0)
    place(state, ids[0], "n1")
    place(state, ids[1], "n2")
    assert U.counters(state) == (0, 28, 2)
    finish(state, ids[0], "n1")
    ok(state, C.ExecTerminate(id=ids[5], now=NOW + 61))           # a waiting one, terminated
    assert U.counters(state) == (2, 27, 1)
    ok(state, C.ExecForget(id=ids[0]))                            # its result read: the record goes, still ended
    assert U.counters(state) == (2, 27, 1)
    cluster = U.read_cluster(state, head=20)
    assert len(cluster["queue"]) == 20 and cluster["counts"]["waiting"] == 27
    assert [e["id"] for e in cluster["queue"]][:3] == [ids[2], ids[3], ids[4]]   # oldest first, ids[5] gone
    assert [e["position"] for e in cluster["queue"]][:3] == [1, 2, 3]
    assert all("stdout" not in e for e in cluster["queue"])
    assert [r["id"] for r in cluster["running"]] == [ids[1]]
    (activity,) = cluster["activities"]
    assert (activity["name"], activity["waiting"], activity["running"]) == ("act", 27, 1)
    assert {i["workerId"]: i["status"] for i in activity["installations"]} == {"n1": "installed", "n2": "installed"}


def test_the_queue_shows_why_each_waits_as_the_api_does_and_a_long_input_is_cut():
    state = approved_state()   # n1 and n2, 2 slots each
    ids = submit(state, 6)
    for exec_id, node in zip(ids, ("n1", "n1", "n2", "n2")):
        place(state, exec_id, node)
    state.executions[ids[5]]["stdin"] = "x" * 100_000
    facts = Facts(now=NOW + 60, leader="n1")
    queue = U.read_cluster(state, facts=facts)["queue"]
    assert [(v["id"], v["queuePosition"], v["waitingReason"]) for v in queue] == [
        (ids[4], 0, "all 4 slots busy, 0 ahead of it"), (ids[5], 1, "all 4 slots busy, 1 ahead of it")]
    for view in queue:   # the same words getExecutionStatus gives
        assert {k: view[k] for k in ("waitingReason", "queuePosition")} == explain(state, state.execution(view["id"]),
                                                                                    facts)
    assert queue[1]["stdin"] == "x" * U.INPUT_CHARS and queue[1]["stdinTruncated"] is True
    assert "waitingReason" not in U.read_cluster(state)["queue"][0]   # without facts: no reason made up


def test_throughput_is_finished_per_second_between_samples():
    t = U.Throughput(size=3)
    t.sample(100.0, 10, 5, 2)
    t.sample(101.0, 14, 3, 2)
    t.sample(103.0, 20, 0, 1)
    t.sample(104.0, 18, 0, 0)   # fewer than before (a snapshot loaded): never a negative rate
    points = t.series()
    assert [p["finishedPerS"] for p in points] == [None, 3.0, 0.0]   # the first sample fell out of the ring
    assert [p["waiting"] for p in points] == [3, 0, 0] and points[0]["t"] == 101000


def test_decision_log_keeps_distinct_decisions_newest_first():
    log = U.DecisionLog(size=2)
    log.note({"at": 1.0, "launch": 0, "destroy": [], "reason": "queue empty"})
    log.note({"at": 3.0, "launch": 0, "destroy": [], "reason": "queue empty"})
    log.note({"at": 5.0, "launch": 2, "destroy": [], "reason": "8 waiting: launching 2"})
    log.note({})
    assert log.view() == [
        {"firstAt": 5000, "lastAt": 5000, "launch": 2, "destroy": [], "reason": "8 waiting: launching 2"},
        {"firstAt": 1000, "lastAt": 3000, "launch": 0, "destroy": [], "reason": "queue empty"}]
    log.note({"at": 6.0, "launch": 0, "destroy": ["w1"], "reason": "idle"})
    assert [d["reason"] for d in log.view()] == ["idle", "8 waiting: launching 2"]


def test_nodes_get_their_roles_and_the_running_their_tail():
    workers = [{"id": "n2", "raftAddress": "b:1", "status": "up"}, {"id": "w9", "raftAddress": "c:1", "status": "left"},
               {"id": "n1", "raftAddress": "a:1", "status": "lost"}, {"id": "o1", "raftAddress": "d:1", "status": "up"}]
    nodes = U.nodes_view(workers, leader="n2", members=["a:1", "b:1"], this_node="n1")
    assert [(n["id"], n["role"], n["self"]) for n in nodes] == [
        ("n1", "voter", True), ("n2", "leader", False), ("o1", "observer", False), ("w9", "observer", False)]
    state = approved_state()
    (exec_id,) = submit(state, 1)
    place(state, exec_id, "n1", now=NOW + 10)
    view = U.running_view(state.execution(exec_id), ("x" * 5000 + "END", "oops"), now=NOW + 12.5)
    assert view["elapsedS"] == 2.5 and view["workerId"] == "n1"
    assert view["stdoutTail"].endswith("END") and len(view["stdoutTail"]) == U.OUTPUT_TAIL_CHARS
    assert view["stderrTail"] == "oops"


def test_recently_ended_are_the_newest_unread_results():
    state = approved_state()
    ids = submit(state, 3)
    for exec_id in ids:
        place(state, exec_id, "n1")
        finish(state, exec_id, "n1", code=0 if exec_id != ids[1] else 3)
    ok(state, C.ExecForget(id=ids[2]))   # read: no longer held
    state.execution_table.executions = NoScan(state.execution_table.executions)
    ended = U.read_cluster(state)["ended"]
    assert [(e["id"], e["status"], e["exitCode"]) for e in ended] == [(ids[1], "error", 3), (ids[0], "finished", 0)]
    assert ended[0]["stdoutTail"] == "out" and ended[0]["runS"] == 10.0
    assert [e["id"] for e in U.read_cluster(state, ended=1)["ended"]] == [ids[1]]


def test_a_token_that_may_not_read_results_gets_the_summary_without_output():
    shared = {"node": "n1", "running": {"count": 1, "shown": [{"id": 1, "stdoutTail": "secret", "stderrTail": "e"}]},
              "ended": [{"id": 2, "status": "finished", "stdoutTail": "result", "stderrTail": ""}], "queue": []}
    hidden = U.without_output(shared)
    assert hidden["outputHidden"] is True and hidden["node"] == "n1"
    assert hidden["running"] == {"count": 1, "shown": [{"id": 1}]}
    assert hidden["ended"] == [{"id": 2, "status": "finished"}]
    assert "secret" not in repr(hidden) and "result" not in repr(hidden)
    assert shared["running"]["shown"][0]["stdoutTail"] == "secret"   # the summary other pages share is intact
