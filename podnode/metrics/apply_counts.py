"""Counters and histograms counted as this node applies the replicated log (raft/observer.ApplyObserver).

Where the counts come from: every node counts the entries it applies, so every node reports the cluster's totals
(executions submitted, ended, retried, installs, launches, all of them, whichever node ran them), the same on
every node up to what each has applied: a scraper may ask any node, and a leader change changes nothing. Each
count is O(1) work in the apply path (a dict lookup and an addition under prometheus_client's lock), and the
observer's failure is never raised there (raft/observer.notify).

A counter starts from zero when the node starts (Prometheus's rate() and increase() take counter resets in their
stride). What a node applies before it has caught up with the cluster (its journal replayed at start, the entries
it missed while down) was counted in its previous life or by the others: it is not counted again. So counting
starts after the log index the node had applied when it caught up (Gate.start), and each log index is counted
once, also when an observer promoted to voter replays its journal into a new replica (Gate.claim).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..raft.lifecycle import ERROR, FINISHED, TERMINATED
from ..raft.observer import ApplyObserver

# Seconds, from a 5 ms start to an hour: executions range from `echo` to long batch jobs.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                      600.0, 1800.0, 3600.0, math.inf)


def seconds_between(start: Any, end: Any) -> float | None:
    """end - start in seconds, 0 at the least (the proposers' clocks differ a little); None unless both are
    finite numbers."""
    for t in (start, end):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            return None
    return max(0.0, float(end) - float(start))


def wait_s(execution: dict[str, Any]) -> float | None:
    """How long the execution waited before its first attempt started (None for a later attempt: a retry's
    wait has no recorded start)."""
    if execution.get("attempt") != 1:
        return None
    return seconds_between(execution.get("submitTime"), execution.get("startTime"))


def run_s(execution: dict[str, Any]) -> float | None:
    """How long its last attempt ran, for an ended execution (None if it never started)."""
    return seconds_between(execution.get("startTime"), execution.get("finishTime"))


class Gate:
    """Which applied log entries are counted: none until start(), then each index above the one given, once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()   # two replicas apply at once for a moment while one replaces the other
        self.counting = False
        self.high_water = 0             # the highest log index counted (or skipped as counted elsewhere)

    def start(self, after_index: int) -> None:
        """Count the entries after this log index (the node has caught up with the cluster)."""
        with self._lock:
            self.high_water = max(self.high_water, int(after_index))
            self.counting = True

    def claim(self, index: int) -> bool:
        """Should the entry at this log index be counted? True once per index, while counting."""
        with self._lock:
            if not self.counting or index <= self.high_water:
                return False
            self.high_water = index
            return True


class ApplyCounts:
    """The counters and histograms, registered in the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("activity",)) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.submitted = counter("pod_executions_submitted", "Executions submitted (cluster-wide), by activity")
        self.started = counter("pod_executions_started", "Attempts started (cluster-wide), by activity")
        self.ended = {
            FINISHED: counter("pod_executions_finished", "Executions that ended with exit code 0, by activity"),
            ERROR: counter("pod_executions_error", "Executions that ended in error (a non-zero exit, a lost node "
                                                   "after maxAttempts, a rejected activity), by activity"),
            TERMINATED: counter("pod_executions_terminated", "Executions terminated (by request or because their "
                                                             "activity was deleted), by activity"),
        }
        self.retried = counter("pod_executions_retried", "Attempts lost with their node and queued again, by activity")
        self.installs = counter("pod_installs", "Installs of an activity on a node that ended, by activity and "
                                                "result (installed, failed)", ("activity", "result"))
        self.launches = counter("pod_scaling_launches", "Nodes the scaling policy launched (launches recorded)", ())
        self.launch_failures = counter("pod_scaling_launch_failures", "Launches that failed or did not join in time",
                                       ())
        self.destroys = counter("pod_scaling_destroys", "Launched nodes destroyed by their provider", ())
        self.wait = Histogram("pod_execution_wait_seconds", "Time from submission to the first attempt's start, "
                              "by activity", ("activity",), buckets=DURATION_BUCKETS_S, registry=registry)
        self.run = Histogram("pod_execution_run_seconds", "Run time of ended executions (their last attempt's start "
                             "to the end), by activity", ("activity",), buckets=DURATION_BUCKETS_S, registry=registry)
        self._of: dict[str, ActivityCounts] = {}

    def of(self, activity: str) -> ActivityCounts:
        """The activity's own counters (prometheus_client's labels() looked up once per activity, not per event)."""
        mine = self._of.get(activity)
        if mine is None:
            mine = self._of[activity] = ActivityCounts(self, activity)
        return mine


class ActivityCounts:
    """One activity's children of the labelled counters and histograms."""

    def __init__(self, counts: ApplyCounts, activity: str) -> None:
        self.submitted = counts.submitted.labels(activity)
        self.started = counts.started.labels(activity)
        self.ended = {status: counter.labels(activity) for status, counter in counts.ended.items()}
        self.retried = counts.retried.labels(activity)
        self.wait = counts.wait.labels(activity)
        self.run = counts.run.labels(activity)


class ReplicaObserver(ApplyObserver):
    """The observer of one replica's state: counts its events when the gate lets the entry being applied count.

    `entry_index` gives the log index of the entry being applied (called on the Raft thread, in the apply)."""

    def __init__(self, counts: ApplyCounts, gate: Gate, entry_index: Callable[[], int]) -> None:
        self._counts = counts
        self._gate = gate
        self._entry_index = entry_index
        self._entry: int | None = None   # the index of the entry whose events come now...
        self._count = False              # ...and whether they are counted

    def _counting(self) -> bool:
        index = self._entry_index()
        if index != self._entry:
            self._entry, self._count = index, self._gate.claim(index)
        return self._count

    def submitted(self, execution: dict[str, Any]) -> None:
        if self._counting():
            self._counts.of(execution["activityName"]).submitted.inc()

    def started(self, execution: dict[str, Any]) -> None:
        if self._counting():
            mine = self._counts.of(execution["activityName"])
            mine.started.inc()
            waited = wait_s(execution)
            if waited is not None:
                mine.wait.observe(waited)

    def ended(self, execution: dict[str, Any]) -> None:
        if self._counting():
            mine = self._counts.of(execution["activityName"])
            mine.ended[execution["status"]].inc()
            ran = run_s(execution)
            if ran is not None:
                mine.run.observe(ran)

    def retried(self, execution: dict[str, Any]) -> None:
        if self._counting():
            self._counts.of(execution["activityName"]).retried.inc()

    def installed(self, activity: str, ok: bool) -> None:
        if self._counting():
            self._counts.installs.labels(activity, "installed" if ok else "failed").inc()

    def launch_recorded(self, node: str) -> None:
        if self._counting():
            self._counts.launches.inc()

    def launch_failed(self, node: str) -> None:
        if self._counting():
            self._counts.launch_failures.inc()

    def destroyed(self, node: str) -> None:
        if self._counting():
            self._counts.destroys.inc()
