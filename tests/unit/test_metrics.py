"""The pure parts of /metrics: the apply-path counters driven by a real State applying commands, the gate that
counts each log index once, the durations, and the scrape-time gauges rendered and parsed back with
prometheus_client's own parser."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from podnode.metrics.apply_counts import Gate, run_s, seconds_between, wait_s
from podnode.metrics.gauges import StateCollector, cluster_view, raft_view
from podnode.metrics.registry import NodeMetrics
from podnode.raft import commands as C
from podnode.raft.observer import ApplyObserver
from podnode.raft.state import State

from .builders import NOW, activity_new, approved_state, assign, install_done, node_up, ok, snapshot


class Log:
    """Applies commands to a state as a replica does, one log index per entry."""

    def __init__(self, state: State, index: int = 0):
        self.state, self.index = state, index

    def apply(self, cmd: Any) -> dict:
        self.index += 1
        return self.state.apply(cmd)

    def ok(self, cmd: Any) -> dict:
        result = self.apply(cmd)
        assert "error" not in result, (cmd, result)
        return result


def observed(metrics: NodeMetrics, state: State, index: int = 0) -> Log:
    log = Log(state, index)
    state.observer = metrics.observer_for(lambda: log.index)
    return log


def value(metrics: NodeMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def report(exec_id: int, node: str, code: int, attempt: int = 1) -> C.Report:
    return C.Report(id=exec_id, node=node, attempt=attempt, exitCode=code, stdout="", stderr="")


def load(log: Log) -> None:
    """Five executions of `act` on n1 and n2 (2 slots each): 3 finish, 1 exits 2, 1 is terminated while it
    waits; then one more runs on n2, which is lost: it is retried, and finishes on n1."""
    for _ in range(5):
        log.ok(C.ExecNew(name="act", now=NOW))
    log.ok(C.ExecPlace(placements=[[1, "n1"], [2, "n1"], [3, "n2"], [4, "n2"]], now=NOW + 2))
    log.ok(C.ExecTerminate(id=5, now=NOW + 3))
    log.ok(C.ExecFinish(reports=[report(1, "n1", 0), report(2, "n1", 2)], now=NOW + 5))
    log.ok(C.ExecFinish(reports=[report(3, "n2", 0), report(4, "n2", 0)], now=NOW + 12))
    log.ok(C.ExecNew(name="act", now=NOW + 20))
    log.ok(C.ExecPlace(placements=[[6, "n2"]], now=NOW + 20))
    log.ok(C.NodeLost(node="n2", now=NOW + 30))
    log.ok(C.ExecPlace(placements=[[6, "n1"]], now=NOW + 31))
    log.ok(C.ExecFinish(reports=[report(6, "n1", 0, attempt=2)], now=NOW + 33))


def test_counters_and_histograms_follow_the_applied_commands():
    metrics = NodeMetrics()
    metrics.start_counting(after_index=0)
    log = observed(metrics, approved_state())
    load(log)
    act = {"activity": "act"}
    assert value(metrics, "pod_executions_submitted_total", **act) == 6
    assert value(metrics, "pod_executions_started_total", **act) == 6     # 4, then 6 twice
    assert value(metrics, "pod_executions_finished_total", **act) == 4
    assert value(metrics, "pod_executions_error_total", **act) == 1
    assert value(metrics, "pod_executions_terminated_total", **act) == 1
    assert value(metrics, "pod_executions_retried_total", **act) == 1
    # Wait: 2 s for four, 0 s for the sixth's first attempt (its second attempt's wait is not observed).
    assert value(metrics, "pod_execution_wait_seconds_count", **act) == 5
    assert value(metrics, "pod_execution_wait_seconds_sum", **act) == 8
    # Run: 3, 3, 10, 10 s and 2 s (the sixth's last attempt); the terminated one never ran.
    assert value(metrics, "pod_execution_run_seconds_count", **act) == 5
    assert value(metrics, "pod_execution_run_seconds_sum", **act) == 28
    assert value(metrics, "pod_execution_run_seconds_bucket", le="5.0", **act) == 3
    assert value(metrics, "pod_execution_run_seconds_bucket", le="10.0", **act) == 5


def test_installs_launches_failures_and_destroys_are_counted():
    metrics = NodeMetrics()
    metrics.start_counting(after_index=0)
    log = observed(metrics, State())
    log.ok(node_up("n1"))
    log.ok(activity_new("good"))
    log.ok(assign(("good", "n1")))
    log.ok(install_done("good", "n1"))
    log.ok(install_done("good", "n1"))              # not installing any more: ignored, not counted
    log.ok(activity_new("bad"))
    log.ok(assign(("bad", "n1")))
    log.ok(install_done("bad", "n1", ok=False, error="exit 3"))
    assert value(metrics, "pod_installs_total", activity="good", result="installed") == 1
    assert value(metrics, "pod_installs_total", activity="good", result="failed") == 0
    assert value(metrics, "pod_installs_total", activity="bad", result="failed") == 1
    log.ok(C.NodeLaunched(node="w1", provider="local", now=NOW))
    log.ok(C.NodeLaunched(node="w2", provider="local", now=NOW))
    assert "error" in log.apply(C.NodeLaunched(node="w3", provider="local", now=NOW, maxNodes=3))  # refused
    log.ok(C.NodeLaunchFailed(node="w2", reason="quota", now=NOW))
    log.ok(node_up("w1"))
    log.ok(C.NodeLeft(node="w1", destroyed=True, now=NOW))
    log.ok(C.NodeLeft(node="w1", destroyed=True, now=NOW))   # again: destroyed once
    assert value(metrics, "pod_scaling_launches_total") == 2
    assert value(metrics, "pod_scaling_launch_failures_total") == 1
    assert value(metrics, "pod_scaling_destroys_total") == 1


def test_nothing_is_counted_before_counting_starts_nor_any_index_twice():
    metrics = NodeMetrics()
    log = observed(metrics, approved_state())
    log.ok(C.ExecNew(name="act", now=NOW))                 # index 1: applied before catching up
    metrics.start_counting(after_index=log.index)
    log.ok(C.ExecNew(name="act", now=NOW))                 # index 2: counted
    # A second replica of the same node (an observer promoted to voter) replays the log from the start.
    replay = observed(metrics, approved_state())
    replay.ok(C.ExecNew(name="act", now=NOW))              # index 1
    replay.ok(C.ExecNew(name="act", now=NOW))              # index 2: counted already
    replay.ok(C.ExecNew(name="act", now=NOW))              # index 3: new
    log.ok(C.ExecNew(name="act", now=NOW))                 # index 3 on the old one: counted already
    assert value(metrics, "pod_executions_submitted_total", activity="act") == 2


def test_gate_counts_each_index_once_after_start():
    gate = Gate()
    assert not gate.claim(1)
    gate.start(5)
    assert [gate.claim(i) for i in (4, 5, 6, 6, 8, 7)] == [False, False, True, False, True, False]
    gate.start(3)                                          # never lowers what was counted
    assert not gate.claim(8) and gate.claim(9)


class Broken(ApplyObserver):
    def __getattribute__(self, name: str):
        if name.startswith("_"):
            return object.__getattribute__(self, name)

        def fail(*args):
            raise RuntimeError(f"observer {name} broke")
        return fail


def run_everything(state: Any) -> list[dict]:
    return [state.apply(cmd) for cmd in (
        C.ExecNew(name="act", now=NOW), C.ExecNew(name="act", now=NOW), C.ExecNew(name="act", now=NOW),
        C.ExecPlace(placements=[[1, "n1"], [2, "n2"]], now=NOW + 1), C.ExecTerminate(id=3, now=NOW + 1),
        C.ExecFinish(reports=[report(1, "n1", 0)], now=NOW + 2), C.NodeLost(node="n2", now=NOW + 3),
        activity_new("x"), assign(("x", "n1")), install_done("x", "n1", ok=False),
        C.NodeLaunched(node="w1", provider="local", now=NOW), C.NodeLaunchFailed(node="w1", now=NOW),
        C.NodeLeft(node="n2", destroyed=True, now=NOW))]


def test_an_observer_never_changes_what_an_entry_does_even_when_it_fails():
    plain, counted, broken = approved_state(), approved_state(), approved_state()
    metrics = NodeMetrics()
    metrics.start_counting(after_index=0)
    counted_results = run_everything(_Indexed(observed(metrics, counted)))
    broken.observer = Broken()
    assert run_everything(plain) == counted_results == run_everything(broken)
    assert snapshot(plain) == snapshot(counted) == snapshot(broken)
    assert all("error" not in r for r in counted_results), counted_results
    assert value(metrics, "pod_executions_submitted_total", activity="act") == 3


class _Indexed:
    """A State whose apply goes through a Log (so that each entry gets its index)."""

    def __init__(self, log: Log):
        self._log = log

    def apply(self, cmd: Any) -> dict:
        return self._log.apply(cmd)


def test_durations():
    assert seconds_between(1.0, 3.5) == 2.5
    assert seconds_between(5, 3) == 0.0                     # clocks a little apart: never negative
    for bad in (None, True, "1", math.nan, math.inf):
        assert seconds_between(bad, 3.0) is None and seconds_between(1.0, bad) is None
    assert wait_s({"attempt": 1, "submitTime": 10.0, "startTime": 12.0}) == 2.0
    assert wait_s({"attempt": 2, "submitTime": 10.0, "startTime": 40.0}) is None
    assert run_s({"startTime": None, "finishTime": 12.0}) is None
    assert run_s({"startTime": 12.0, "finishTime": 19.0}) == 7.0


def parse(registry: CollectorRegistry) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value}, parsed from the text exposition."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_gauges_from_the_state_and_raft_status():
    state = approved_state({"n1": 2, "n2": 3})
    for _ in range(4):
        ok(state, C.ExecNew(name="act", now=NOW))
    ok(state, C.ExecPlace(placements=[[1, "n1"], [2, "n2"]], now=NOW))
    ok(state, C.NodeLaunched(node="w1", provider="local", hourlyPrice=0.5, now=NOW))
    ok(state, activity_new("other"))
    registry = CollectorRegistry()
    status = {"state": 0, "raft_term": 7, "commit_idx": 120, "last_applied": 117, "leader_commit_idx": 121,
              "log_len": 40, "has_quorum": True}
    registry.register(StateCollector(read_cluster=lambda: cluster_view(state, NOW + 3600),
                                     read_raft=lambda: raft_view(status, "follower"), node_id="n1", version="9.9"))
    got = parse(registry)
    assert got["pod_queue_length"] == {(): 2.0}
    assert got["pod_executions_running"] == {(): 2.0}
    assert got["pod_executions"][(("activity", "act"), ("status", "waiting"))] == 2
    assert got["pod_executions"][(("activity", "act"), ("status", "in progress"))] == 2
    assert got["pod_executions"][(("activity", "other"), ("status", "waiting"))] == 0
    assert got["pod_node_slots"] == {(("node", "n1"),): 2.0, (("node", "n2"),): 3.0}
    assert got["pod_node_slots_busy"] == {(("node", "n1"),): 1.0, (("node", "n2"),): 1.0}
    assert got["pod_nodes"] == {(("status", "up"),): 2.0}
    assert got["pod_installations"] == {(("status", "installed"),): 2.0}
    assert got["pod_scaling_launching"] == {(): 1.0}
    assert got["pod_spend_per_hour"] == {(): 0.5}
    assert math.isclose(got["pod_spend_so_far"][()], 0.5)      # the launch, an hour ago; the seeds are free
    assert got["pod_raft_role"] == {(("role", r),): float(r == "follower")
                                    for r in ("leader", "follower", "candidate", "observer")}
    assert got["pod_raft_term"] == {(): 7.0}
    assert got["pod_raft_commit_index"] == {(): 120.0}
    assert got["pod_raft_apply_lag"] == {(): 4.0}            # the leader's 121 - 117
    assert got["pod_raft_has_quorum"] == {(): 1.0}
    assert got["pod_node_info"] == {(("node", "n1"), ("version", "9.9")): 1.0}


def test_raft_view_of_an_unreadable_status():
    view = raft_view({}, "observer")
    assert (view.role, view.term, view.apply_lag, view.has_quorum) == ("observer", 0, 0, False)


def test_the_state_machine_imports_no_metrics_library():
    """The replicated state machine works without prometheus_client (the node plugs its observer in)."""
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from podnode.raft.state import State\n"
            "from podnode.raft import commands as C\n"
            "s = State(); r = s.apply(C.NodeUp(node='n1', raftAddr='a:1', httpUrl='http://a', slots=1, version='1', "
            "now=1.0)); assert 'error' not in r, r\n"
            "assert not [m for m in sys.modules if m.startswith('podnode.metrics')]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
