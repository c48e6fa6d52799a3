"""Executions (replicated): submitted, placed on a node, reported finished, terminated, read and forgotten,
expired; requeued when the node running them is lost. Status changes follow EXECUTION_TRANSITIONS, and
every placement is checked with the placement rules (podnode/placement.py).
"""

from __future__ import annotations

from typing import Any

from .. import placement
from . import commands as C
from .activities import ActivityTable
from .execution_index import ExecutionIndex
from .lifecycle import (
    APPROVED,
    ERROR,
    EXECUTION_TRANSITIONS,
    FINISHED,
    IN_PROGRESS,
    TERMINAL,
    TERMINATED,
    VERIFYING,
    WAITING,
    can_move,
)
from .membership import NodeTable
from .observer import NO_OBSERVER, ApplyObserver, notify
from .quotas import output_bytes, unread_full, waiting_full
from .results import Result, maps_with_hashable_ids, pairs, refuse

EXECUTION_STATUSES = tuple(EXECUTION_TRANSITIONS)   # the five status words, in lifecycle order


def _reports(wire: Any) -> list[C.Report]:
    """A command's reports, all checked (maps with hashable ids) before the first changes anything."""
    return [C.Report.from_wire(report) for report in maps_with_hashable_ids(wire)]


def missing_execution(exec_id: Any) -> Result:
    return refuse(
        "not_found",
        f"Execution with id {exec_id} doesn't exist, its result has already been retrieved or it expired",
    )


# The fields an execution gains when it first leaves the queue, with their values until then. A waiting execution
# that never ran is kept without them, and without its activityId (its activity's, found by name: deleting an
# activity ends its waiting executions, so while one waits its activity is there): id, activityName, stdin,
# status, submitTime and maybe requestId, a dict of 5 keys (184 bytes; 272 with a requestId) against 14 keys
# (464 bytes) with them all. A queue of 100,000 is 28 MB smaller on every node. Readers of a record that may be
# waiting use .get; State.execution and the apply cases' results give every field (ExecutionTable.full_record).
RUN_FIELDS: dict[str, Any] = {"startTime": None, "finishTime": None, "workerId": None, "attempt": 0,
                              "exitCode": None, "stdout": "", "stderr": ""}


class ExecutionTable:
    """Executions by id, the request ids that created them, and the next id. Checks and updates the
    activities (maxAttempts, run times) and nodes (placement, incarnation, last work) it is given."""

    def __init__(self, activities: ActivityTable, nodes: NodeTable) -> None:
        self._activities = activities
        self._nodes = nodes
        self.executions: dict[int, dict[str, Any]] = {}
        # requestId -> (execution id, time): tuples of numbers, which the garbage collector stops tracking, so a
        # million remembered request ids add nothing to its full collections (lists would: one object each).
        self.request_ids: dict[str, tuple] = {}
        self.next_execution_id = 1
        # Counters for the quotas, kept by every transition (_set_status, _set_output, _delete), recomputed on load:
        self.waiting = 0        # executions waiting
        self.unread_bytes = 0   # output bytes of ended executions not yet read (forgotten) or expired
        # Executions changed since the owner last took this set (not replicated state: a wake-up hint).
        self.touched: set[int] = set()
        # Queues, slots by node, unread results by age, ids by activity and status: derived, rebuilt on load.
        self.index = ExecutionIndex()
        # Told of each submission, start, end and retry (metrics); not replicated state, never decides anything.
        self.observer: ApplyObserver = NO_OBSERVER

    def load(self, data: dict[str, Any]) -> None:
        self.executions = data.get("executions", {})
        self.request_ids = {rid: tuple(seen) for rid, seen in data.get("request_ids", {}).items()}
        self.next_execution_id = data.get("next_execution_id", 1)
        self.waiting, self.unread_bytes = self.count()
        self.index.rebuild(self.executions.values())

    def count(self) -> tuple[int, int]:
        """The quota counters recomputed from the records (at load; the tests compare them with the kept ones)."""
        waiting = sum(1 for e in self.executions.values() if e["status"] == WAITING)
        unread = sum(output_bytes(e) for e in self.executions.values() if e["status"] in TERMINAL)
        return waiting, unread

    def busy_slots(self) -> dict[str, int]:
        """Slots taken on each node: running executions, and terminated ones still being stopped."""
        on_node = self.index.on_node
        return {node: len(on_node.get(node, ())) for node in self._nodes.nodes}

    def on_node(self, node: Any) -> list[int]:
        """Ids of the executions holding a slot on the node (running there, or terminated and being stopped)."""
        return list(self.index.on_node.get(node, ()))

    def queues(self) -> dict[str, Any]:
        """activity -> ids of its waiting executions, first in first out (sorted lists; non-empty only)."""
        return self.index.queues()

    def ended_ids(self, activity: str | None, limit: int) -> list[int]:
        """Ids of ended executions whose result is ready and not yet read (of the activity, or of all), oldest
        first (by finish time, then id), at most `limit`: O(limit)."""
        return self.index.ended(activity, limit)

    def counts(self, activity: str | None = None) -> dict[str, int]:
        """Executions per status (of the activity, or of all), from the index: O(statuses)."""
        return {status: self.index.count(activity, status) for status in EXECUTION_STATUSES}

    def page(self, activity: str | None, status: str | None, after: int, limit: int) -> list[int]:
        """Up to `limit` ids above `after`, increasing, of the activity and status given (None: any)."""
        return self.index.page(activity, status, after, limit)

    def full_record(self, execution: dict[str, Any]) -> dict[str, Any]:
        """A copy of the record with every field: a waiting one that never ran gets RUN_FIELDS' values and its
        activity's id (None if it is gone, which the apply cases never let happen)."""
        if "attempt" in execution and "activityId" in execution:
            return dict(execution)
        activity = self._activities.get(execution["activityName"])
        return {**RUN_FIELDS, "activityId": activity["id"] if activity else None, **execution}

    # ---- apply cases ----------------------------------------------------------------------------
    def exec_new(self, cmd: C.ExecNew) -> Result:
        name, now = cmd.name, cmd.now
        request_id = cmd.requestId
        if request_id:
            seen = self.request_ids.get(request_id)
            if seen is not None:
                execution = self.executions.get(seen[0])
                if execution is None:
                    return refuse("conflict", f"requestId {request_id!r} already created execution {seen[0]}, "
                                              "whose result has already been retrieved")
                if execution["activityName"] != name:
                    return refuse("conflict", f"requestId {request_id!r} was used for activity "
                                              f"{execution['activityName']!r}")
                return {"ok": True, "execution": self.full_record(execution), "duplicate": True}
        activity = self._activities.get(name)
        if activity is None:
            return refuse("not_found", f"Activity {name!r} doesn't exist")
        if activity["status"] not in (VERIFYING, APPROVED):
            return refuse("conflict", f"Activity {name!r} is {activity['status']}; it cannot run executions")
        full = waiting_full(self.waiting, cmd.maxWaiting) or unread_full(self.unread_bytes, cmd.maxUnreadBytes)
        if full:
            return full
        exec_id = self.next_execution_id
        self.next_execution_id += 1
        execution = {
            "id": exec_id,
            "activityName": activity.get("name", name),   # the activity's own string: one object for all
            "stdin": cmd.input or "",
            "status": WAITING,
            "submitTime": now,
        }   # compact while it waits: the RUN_FIELDS come with its first move (_set_status)
        if request_id:
            execution["requestId"] = request_id
            self.request_ids[request_id] = (exec_id, now)
        if cmd.collector is not None:   # newExecution&wait: that node hands the result over (exec_settle)
            execution["collector"] = str(cmd.collector)
        self.executions[exec_id] = execution
        self.index.add(execution)
        self.waiting += 1
        notify(self.observer.submitted, execution)
        node = cmd.node
        if node is not None and self.waiting == 1:  # none queued before it (placement.is_queued, counted)
            # The proposer's placement, checked like any other; never ahead of executions already queued.
            self._place(execution, node, self.busy_slots(), now)
        return {"ok": True, "execution": self.full_record(execution)}

    def exec_place(self, cmd: C.ExecPlace) -> Result:
        """The leader's placement plan, re-checked placement by placement."""
        busy = self.busy_slots()
        placed, refused = [], []
        now, placements = cmd.now, pairs(cmd.placements)
        for exec_id, node in placements:
            why = self._place(self.executions.get(exec_id), node, busy, now)
            if why:
                refused.append([exec_id, why])
            else:
                placed.append(exec_id)
        return {"ok": True, "placed": placed, "refused": refused}

    def exec_finish(self, cmd: C.ExecFinish) -> Result:
        """A node reports ended attempts (exit code and output); with `pull`, it refills its freed slots."""
        accepted, ignored = [], []
        now, reports = cmd.now, _reports(cmd.reports)
        for report in reports:
            execution = self._current_attempt(report)
            if execution is None:
                ignored.append(report.id)
                continue
            if execution["status"] == IN_PROGRESS:
                code = report.exitCode
                status = FINISHED if code == 0 else ERROR
                self._end(execution, status, now, report.error)
                self._note_runtime(execution, now)
            elif not execution.get("outputPending"):
                ignored.append(report.id)
                continue
            self._set_pending(execution, False)
            self._set_output(
                execution,
                exitCode=report.exitCode,
                stdout=report.stdout or "",
                stderr=report.stderr or "",
                stdoutTruncated=bool(report.stdoutTruncated),
                stderrTruncated=bool(report.stderrTruncated),
            )
            accepted.append(report.id)
            self.touched.add(report.id)
        pulled = self._pull(cmd.pull, now) if cmd.pull is not None else []
        return {"ok": True, "accepted": accepted, "ignored": ignored, "pulled": pulled}

    def exec_lost(self, cmd: C.ExecLost) -> Result:
        """A node that restarted reports the attempts it was running and no longer has."""
        now, reports = cmd.now, _reports(cmd.reports)
        reason = str(cmd.reason or "the node running it restarted")
        lost = []
        for report in reports:
            execution = self._current_attempt(report)
            if execution is None:
                continue
            if execution["status"] == IN_PROGRESS:
                self._lose_attempt(execution, now, reason)
            elif self._set_pending(execution, False):
                self._output_lost(execution, reason)
            else:
                continue
            lost.append(execution["id"])
        return {"ok": True, "lost": lost}

    def exec_terminate(self, cmd: C.ExecTerminate) -> Result:
        execution = self.executions.get(cmd.id)
        if execution is None:
            return missing_execution(cmd.id)
        if execution["status"] in TERMINAL:
            return refuse("conflict", f"Execution {cmd.id} has already ended ({execution['status']})")
        self._terminate(execution, cmd.now, "terminated by request")
        return {"ok": True, "execution": self.full_record(execution)}

    def exec_forget(self, cmd: C.ExecForget) -> Result:
        execution = self.executions.get(cmd.id)
        if execution is None:
            return missing_execution(cmd.id)
        if execution["status"] not in TERMINAL:
            return refuse("conflict", f"Execution {cmd.id} has not ended yet")
        if "collector" in execution:
            return refuse("conflict", f"Execution {cmd.id}'s result is being handed to the request that submitted "
                                      f"it, through node {execution['collector']}")
        self._delete(execution)
        return {"ok": True, "execution": execution}

    def exec_settle(self, cmd: C.ExecSettle) -> Result:
        """The collector's batch: delete the ended executions it handed to their requests, release the ones whose
        request left (anyone may read them now). Ids it does not collect (any more) are left alone."""
        node = str(cmd.node)
        if not all(ids is None or isinstance(ids, list) for ids in (cmd.forget, cmd.release)):
            return refuse("bad_request", "forget and release must be lists of execution ids")
        forget, release = list(cmd.forget or []), list(cmd.release or [])
        for exec_id in forget + release:  # all checked before the first changes anything
            if not isinstance(exec_id, int) or isinstance(exec_id, bool):
                return refuse("bad_request", f"execution id {exec_id!r} is not a whole number")
        forgotten, released = [], []
        for exec_id in forget:
            execution = self.executions.get(exec_id)
            if (execution is not None and execution.get("collector") == node and execution["status"] in TERMINAL
                    and not execution.get("outputPending")):
                self._delete(execution)
                forgotten.append(exec_id)
        for exec_id in release:
            execution = self.executions.get(exec_id)
            if execution is not None and execution.get("collector") == node:
                self._uncollect(execution)
                released.append(exec_id)
        return {"ok": True, "forgotten": forgotten, "released": released}

    def exec_expire(self, cmd: C.ExecExpire) -> Result:
        expired = []
        ids = list(cmd.ids or [])
        for exec_id in ids:  # check them all before the first changes anything
            hash(exec_id)
        horizon = cmd.requestIdsBefore
        old_rids = [] if horizon is None else self._old_request_ids(horizon)
        for exec_id in ids:
            execution = self.executions.get(exec_id)
            if execution is not None and execution["status"] in TERMINAL and "collector" not in execution:
                self._delete(execution)
                expired.append(exec_id)
        for rid in old_rids:
            del self.request_ids[rid]
        return {"ok": True, "expired": expired}

    # ---- steps of the commands state.py wires across resources ----------------------------------
    def release_node(self, node: Any, now: float, reason: str) -> list[int]:
        """The node is gone (lost or left): its running attempts go back to the queue (or give up after
        maxAttempts), and the output of the terminated ones it was stopping will never come. The ids of the
        executions that were running there."""
        moved = []
        for exec_id in sorted(self.index.on_node.get(node, ())):   # the slots it held
            execution = self.executions[exec_id]
            if execution["status"] == IN_PROGRESS:
                self._lose_attempt(execution, now, reason)
                moved.append(exec_id)
            elif self._set_pending(execution, False):
                self._output_lost(execution, reason)
        return moved

    def release_collected(self, node: Any) -> list[int]:
        """The node is gone or restarted: the requests it held for newExecution&wait are gone with it, so the
        executions it collected are for anyone to read again (one it had handed over just before may be read
        twice: at least once, never lost). Their ids."""
        ids = sorted(self.index.collected.get(node, ()))
        for exec_id in ids:
            self._uncollect(self.executions[exec_id])
        return ids

    def terminate_activity(self, name: str, activity_id: Any, now: float, reason: str) -> None:
        """The activity is being deleted (its record may be gone already: its id is given): terminate its
        executions that have not ended."""
        for execution in self._unended(name):
            execution.setdefault("activityId", activity_id)
            self._terminate(execution, now, reason)

    def fail_activity(self, name: str, now: float, reason: str) -> None:
        """The activity was rejected: its executions that have not ended end in error."""
        for execution in self._unended(name):
            self._end(execution, ERROR, now, reason)

    # ---- transitions ----------------------------------------------------------------------------
    def _unended(self, activity: str) -> list[dict[str, Any]]:
        """The activity's executions that have not ended (waiting or running), by id."""
        ids = sorted([*self.index.page(activity, WAITING, 0, self.index.count(activity, WAITING)),
                      *self.index.page(activity, IN_PROGRESS, 0, self.index.count(activity, IN_PROGRESS))])
        return [self.executions[i] for i in ids]

    def _old_request_ids(self, horizon: Any) -> list[str]:
        """Request ids remembered since before `horizon`, from the oldest (they are kept in the order they came,
        which is the order of their times up to the proposers' clock differences: one a little out of order
        is dropped with the next expiry)."""
        old = []
        for rid, (_, t) in self.request_ids.items():
            if not t < horizon:
                break
            old.append(rid)
        return old

    def _current_attempt(self, report: C.Report) -> dict[str, Any] | None:
        """The execution a node's report is about, if the report is from its current attempt on that node
        (a report from a superseded attempt is ignored)."""
        execution = self.executions.get(report.id)
        if (execution is None or execution.get("workerId") != report.node
                or execution.get("attempt", 0) != report.attempt):
            return None
        return execution

    def _set_status(self, execution: dict, status: str) -> None:
        self.touched.add(execution["id"])
        if not can_move(EXECUTION_TRANSITIONS, execution["status"], status):
            raise ValueError(f"execution {execution['id']}: {execution['status']} -> {status} not allowed")
        if "attempt" not in execution:   # leaving its first wait: from now on it has every field
            execution.update(self.full_record(execution))
        self.index.remove(execution)
        before, execution["status"] = execution["status"], status
        self.index.add(execution)
        self.waiting += (status == WAITING) - (before == WAITING)
        if (status in TERMINAL) != (before in TERMINAL):
            self.unread_bytes += output_bytes(execution) if status in TERMINAL else -output_bytes(execution)

    def _set_output(self, execution: dict, **fields: Any) -> None:
        """Record an attempt's result (exit code, output) and count the output while the execution has ended."""
        before = output_bytes(execution)
        execution.update(fields)
        if execution["status"] in TERMINAL:
            self.unread_bytes += output_bytes(execution) - before

    def _delete(self, execution: dict) -> None:
        """An ended execution's record goes: its result was read, or it expired."""
        del self.executions[execution["id"]]
        self.index.remove(execution)
        self.unread_bytes -= output_bytes(execution)
        self.touched.add(execution["id"])

    def _uncollect(self, execution: dict) -> None:
        """No node collects the execution any more: its result, once ready, is for anyone to read."""
        self.index.remove(execution)
        del execution["collector"]
        self.index.add(execution)
        self.touched.add(execution["id"])

    def _set_pending(self, execution: dict, pending: bool) -> bool:
        """Mark a terminated execution's output as still coming from its node (it holds the slot meanwhile), or
        no longer; whether it was."""
        was = bool(execution.get("outputPending"))
        self.index.remove(execution)
        if pending:
            execution["outputPending"] = True
        else:
            execution.pop("outputPending", None)
        self.index.add(execution)
        return was

    def _end(self, execution: dict, status: str, now: float, reason: str | None = None) -> None:
        finished_before = execution.get("finishTime")
        execution["finishTime"] = now   # first: the index orders ended executions by it
        try:
            self._set_status(execution, status)
        except ValueError:
            execution["finishTime"] = finished_before
            raise
        if reason:
            execution["errorDescription"] = reason
        notify(self.observer.ended, execution)

    def _terminate(self, execution: dict, now: float, reason: str) -> None:
        was_running = execution["status"] == IN_PROGRESS
        self._end(execution, TERMINATED, now, reason)
        if was_running:
            self._set_pending(execution, True)

    def _lose_attempt(self, execution: dict, now: float, reason: str) -> None:
        """An attempt died with its node: queue the execution again, or give up after maxAttempts."""
        activity = self._activities.get(execution["activityName"])
        max_attempts = activity["maxAttempts"] if activity else 1
        if execution["attempt"] < max_attempts:
            self._set_status(execution, WAITING)
            execution.update(workerId=None, startTime=None, lastError=reason)
            execution.pop("workerIncarnation", None)
            notify(self.observer.retried, execution)
        else:
            self._end(execution, ERROR, now, f"{reason}; gave up after {execution['attempt']} attempts")

    def _output_lost(self, execution: dict, reason: str) -> None:
        """A terminated execution's output will never come: free its slot and say why it is empty."""
        execution["errorDescription"] = f"{execution.get('errorDescription')}; its output was lost: {reason}"
        self.touched.add(execution["id"])

    def _place(self, execution: dict | None, node: Any, busy: dict[str, int], now: float) -> str | None:
        """Put a waiting execution on a node if the placement rules allow it; return why not otherwise."""
        why = placement.why_not_place(execution, node, nodes=self._nodes.nodes,
                                      installations=self._activities.installations, busy=busy)
        if why is None:
            self._start(execution, node, busy, now)
        return why

    def _start(self, execution: dict, node: Any, busy: dict[str, int], now: float) -> None:
        """A new attempt of the execution on the node, which the placement rules allowed."""
        incarnation = self._nodes.nodes[node].get("incarnation", "")
        worker_before, execution["workerId"] = execution.get("workerId"), node   # first: the index reads it
        try:
            self._set_status(execution, IN_PROGRESS)
        except ValueError:
            execution["workerId"] = worker_before
            raise
        execution.update(attempt=execution["attempt"] + 1, startTime=now, workerIncarnation=incarnation)
        self._nodes.note_work(node, now)
        busy[node] += 1
        notify(self.observer.started, execution)

    def _pull(self, node: Any, now: float) -> list[int]:
        """The reporting node refills the slots it just freed with the oldest waiting executions it can run
        (placement.pull), so a busy queue drains without a placement entry per slot."""
        busy = self.busy_slots()
        chosen = placement.pull(node, queues=self.index.queues(), installations=self._activities.installations,
                                nodes=self._nodes.nodes, busy=busy)
        for exec_id in chosen:
            self._start(self.executions[exec_id], node, busy, now)
        return chosen

    def _note_runtime(self, execution: dict, now: float) -> None:
        """Keep each activity's mean run time and each node's last work time, for scaling."""
        self._activities.note_runtime(execution["activityName"], execution["startTime"], now)
        self._nodes.note_work(execution["workerId"], now)

