"""The replicated state: activities, installations, executions and nodes, and the pure transitions on them.

`State.apply(cmd)` is deterministic: everything it needs (time, ids of nodes, outputs) is in the command.
It never raises for a bad command; a refusal is returned as {"error": kind, "message": ...} so that one
bad entry can never wedge the Raft log. The class does no I/O and is tested without a network.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from . import commands as C
from .membership import MembershipCommands
from .policies import PolicyCommands
from .lifecycle import (
    ACTIVITY_TRANSITIONS,
    APPROVED,
    ERROR,
    EXECUTION_TRANSITIONS,
    FAILED,
    FINISHED,
    IN_PROGRESS,
    INSTALLATION_TRANSITIONS,
    INSTALLED,
    INSTALLING,
    NODE_DRAINING_STATUS,
    NODE_LEFT_STATUS,
    NODE_LOST_STATUS,
    NODE_UP_STATUS,
    REJECTED,
    TERMINAL,
    TERMINATED,
    UNINSTALLING,
    VERIFYING,
    WAITING,
    can_move,
)

log = logging.getLogger(__name__)

Result = dict[str, Any]
DEFAULT_MAX_ATTEMPTS = 3


def refuse(kind: str, message: str) -> Result:
    return {"error": kind, "message": message}


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    """Unpack [[a, b], ...] in full before anything changes, so a malformed entry refuses the whole command
    instead of leaving it half applied. Raises for an entry that is not a pair of hashable values."""
    pairs = [(a, b) for a, b in items or []]
    for pair in pairs:
        hash(pair)
    return pairs


def missing_execution(exec_id: Any) -> Result:
    return refuse(
        "not_found",
        f"Execution with id {exec_id} doesn't exist, its result has already been retrieved or it expired",
    )


class State(PolicyCommands, MembershipCommands):
    """All replicated data, as plain dicts and lists (msgpack-able), plus the transitions on it."""

    def __init__(self) -> None:
        self.activities: dict[str, dict[str, Any]] = {}
        self.installations: dict[str, dict[str, dict[str, Any]]] = {}
        self.executions: dict[int, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.request_ids: dict[str, list] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.active_policy: str | None = None
        self.launches: dict[str, dict[str, Any]] = {}
        self.launch_failures: dict[str, Any] = {}
        self.next_activity_id = 1
        self.next_execution_id = 1
        # Executions changed since the owner last took this set (not replicated state: a wake-up hint).
        self.touched: set[int] = set()
        self._handlers: dict[str, Callable[[dict], Result]] = {
            C.NODE_UP: self._node_up,
            C.ACTIVITY_NEW: self._activity_new,
            C.ACTIVITY_DELETE: self._activity_delete,
            C.INSTALL_ASSIGN: self._install_assign,
            C.INSTALL_DONE: self._install_done,
            C.UNINSTALL_DONE: self._uninstall_done,
            C.EXEC_NEW: self._exec_new,
            C.EXEC_PLACE: self._exec_place,
            C.EXEC_FINISH: self._exec_finish,
            C.EXEC_TERMINATE: self._exec_terminate,
            C.EXEC_FORGET: self._exec_forget,
            C.EXEC_EXPIRE: self._exec_expire,
            C.SYNC: lambda cmd: {"ok": True},
            C.NODE_LOST: self._node_lost,
            C.EXEC_LOST: self._exec_lost,
            C.REINSTALL: self._reinstall,
            C.POLICY_NEW: self._policy_new,
            C.POLICY_DELETE: self._policy_delete,
            C.POLICY_APPLY: self._policy_apply,
            C.POLICY_RESET: self._policy_reset,
            C.NODE_LAUNCHED: self._node_launched,
            C.NODE_LAUNCH_FAILED: self._node_launch_failed,
            C.NODE_LAUNCH_REF: self._node_launch_ref,
            C.NODE_DRAIN: self._node_drain,
            C.NODE_LEFT: self._node_left,
            C.BATCH: self._batch,
        }

    # ---- snapshot -------------------------------------------------------------------------------
    _FIELDS = ("activities", "installations", "executions", "nodes", "request_ids", "policies", "active_policy",
               "launches", "launch_failures",
               "next_activity_id", "next_execution_id")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    def load_dict(self, data: dict[str, Any]) -> None:
        fresh = State()
        for name in self._FIELDS:
            setattr(self, name, data.get(name, getattr(fresh, name)))

    # ---- entry point ----------------------------------------------------------------------------
    def apply(self, cmd: Any) -> Result:
        """Apply one command. Never raises: bad input and internal faults become recorded refusals."""
        if not isinstance(cmd, dict) or not isinstance(cmd.get("t"), str):
            return refuse("bad_request", "malformed command")
        handler = self._handlers.get(cmd["t"])
        if handler is None:
            return refuse("bad_request", f"unknown command type {cmd['t']!r}")
        try:
            return handler(cmd)
        except Exception as exc:  # a bug must not wedge the log: record it and go on
            log.exception("command %s failed", cmd.get("t"))
            return refuse("internal", f"command {cmd['t']} failed: {exc!r}")

    def _batch(self, cmd: dict) -> Result:
        results = []
        for sub in cmd.get("cmds") or []:
            if isinstance(sub, dict) and sub.get("t") == C.BATCH:
                results.append(refuse("bad_request", "nested batch"))
            else:
                results.append(self.apply(sub))
        return {"ok": True, "results": results}

    # ---- nodes ----------------------------------------------------------------------------------
    def _node_up(self, cmd: dict) -> Result:
        node = str(cmd["node"])
        fields = dict(  # all read before the node is added, so a malformed command adds nothing
            raftAddr=str(cmd["raftAddr"]),
            httpUrl=str(cmd["httpUrl"]),
            slots=max(0, int(cmd["slots"])),
            version=str(cmd.get("version", "")),
            incarnation=str(cmd.get("incarnation", "")),
            role=str(cmd.get("role") or "voter"),
            seenAt=cmd["now"],
            status=NODE_UP_STATUS,
        )
        record = self.nodes.setdefault(node, {"id": node, "joinedAt": cmd["now"]})
        if record.get("status") == NODE_DRAINING_STATUS:
            fields["status"] = NODE_DRAINING_STATUS  # a restart does not cancel a drain
        record.update(fields)
        record.pop("lostReason", None)
        record.pop("lostAt", None)
        self._adopt_launch(node, record)
        return {"ok": True, "node": dict(record)}

    def _node_lost(self, cmd: dict) -> Result:
        """The leader has not reached the node for node_lost_after_s: move its work elsewhere."""
        node, now, reason = cmd["node"], cmd["now"], str(cmd.get("reason") or f"node {cmd['node']} was lost")
        record = self.nodes.get(node)
        if record is None or record.get("status") in (NODE_LOST_STATUS, NODE_LEFT_STATUS):
            return {"ok": True, "ignored": True}
        record.update(status=NODE_LOST_STATUS, lostAt=now, lostReason=reason)
        moved = []
        for execution in self.executions.values():
            if execution["workerId"] != node:
                continue
            if execution["status"] == IN_PROGRESS:
                self._lose_attempt(execution, now, reason)
                moved.append(execution["id"])
            elif execution.pop("outputPending", None):
                self._output_lost(execution, reason)
        # Installed activities stay listed (the node keeps its files and is usable again when it returns);
        # unfinished installs and removals are dropped so that verifying and deleting can go on without it.
        for name in list(self.installations):
            inst = self.installations[name].get(node)
            if inst is not None and inst["status"] in (INSTALLING, UNINSTALLING, FAILED):
                del self.installations[name][node]
                self._drop_activity_if_uninstalled(name)
        return {"ok": True, "moved": moved}

    def _lose_attempt(self, execution: dict, now: float, reason: str) -> None:
        """An attempt died with its node: queue the execution again, or give up after maxAttempts."""
        activity = self.activities.get(execution["activityName"])
        max_attempts = activity["maxAttempts"] if activity else 1
        if execution["attempt"] < max_attempts:
            self._set_exec_status(execution, WAITING)
            execution.update(workerId=None, startTime=None, lastError=reason)
            execution.pop("workerIncarnation", None)
        else:
            self._end(execution, ERROR, now, f"{reason}; gave up after {execution['attempt']} attempts")

    def _exec_lost(self, cmd: dict) -> Result:
        """A node that restarted reports the attempts it was running and no longer has."""
        now, reports = cmd["now"], list(cmd.get("reports") or [])
        reason = str(cmd.get("reason") or "the node running it restarted")
        for report in reports:
            if not isinstance(report, dict):
                raise TypeError(f"report is not a map: {report!r}")
            hash(report.get("id"))
        lost = []
        for report in reports:
            execution = self.executions.get(report.get("id"))
            if (execution is None or execution["workerId"] != report.get("node")
                    or execution["attempt"] != report.get("attempt")):
                continue
            if execution["status"] == IN_PROGRESS:
                self._lose_attempt(execution, now, reason)
            elif execution.pop("outputPending", None):
                self._output_lost(execution, reason)
            else:
                continue
            lost.append(execution["id"])
        return {"ok": True, "lost": lost}

    def _output_lost(self, execution: dict, reason: str) -> None:
        """A terminated execution's output will never come: free its slot and say why it is empty."""
        execution["errorDescription"] = f"{execution.get('errorDescription')}; its output was lost: {reason}"
        self.touched.add(execution["id"])

    def _reinstall(self, cmd: dict) -> Result:
        """A node found an installed activity's files missing: install it there again."""
        name, node, now = cmd["name"], cmd["node"], cmd["now"]
        inst = self.installations.get(name, {}).get(node)
        if inst is None or inst["status"] != INSTALLED:
            return {"ok": True, "ignored": True}
        self._set_install_status(inst, INSTALLING, now)
        return {"ok": True}

    # ---- activities -----------------------------------------------------------------------------
    def _activity_new(self, cmd: dict) -> Result:
        name = cmd["name"]
        existing = self.activities.get(name)
        if existing is not None:
            return refuse(
                "conflict",
                f"Activity {name!r} already exists (status {existing['status']}); delete it first or pick another name",
            )
        max_attempts = DEFAULT_MAX_ATTEMPTS if cmd.get("maxAttempts") is None else int(cmd["maxAttempts"])
        if not 1 <= max_attempts <= 100:
            return refuse("bad_request", f"maxAttempts must be from 1 to 100, not {max_attempts}")
        activity = {
            "id": self.next_activity_id,
            "name": name,
            "installationScriptLocation": cmd["url"],
            "status": VERIFYING,
            "createdAt": cmd["now"],
            "maxAttempts": max_attempts,
        }
        self.next_activity_id += 1
        self.activities[name] = activity
        self.installations[name] = {}
        return {"ok": True, "activity": dict(activity)}

    def _set_activity_status(self, activity: dict, status: str) -> None:
        if not can_move(ACTIVITY_TRANSITIONS, activity["status"], status):
            raise ValueError(f"activity {activity['name']}: {activity['status']} -> {status} not allowed")
        activity["status"] = status

    @staticmethod
    def _set_install_status(inst: dict, status: str, now: float) -> None:
        if not can_move(INSTALLATION_TRANSITIONS, inst["status"], status):
            raise ValueError(f"installation: {inst['status']} -> {status} not allowed")
        inst.update(status=status, since=now)

    def _activity_delete(self, cmd: dict) -> Result:
        name, now = cmd["name"], cmd["now"]
        activity = self.activities.get(name)
        if activity is None:
            return refuse("not_found", f"Activity {name!r} doesn't exist")
        if activity["status"] == UNINSTALLING:
            return refuse("conflict", f"Activity {name!r} is already being uninstalled")
        self._set_activity_status(activity, UNINSTALLING)
        installs = self.installations.get(name, {})
        for node in list(installs):
            if self.nodes.get(node, {}).get("status") == NODE_LOST_STATUS:
                del installs[node]  # a lost node cleans up its own copy when it comes back
            else:
                self._set_install_status(installs[node], UNINSTALLING, now)
        for execution in self.executions.values():
            if execution["activityName"] == name and execution["status"] not in TERMINAL:
                self._terminate(execution, now, "activity deleted")
        result = {"ok": True, "activity": dict(activity)}
        self._drop_activity_if_uninstalled(name)
        return result

    def _drop_activity_if_uninstalled(self, name: str) -> None:
        activity = self.activities.get(name)
        if activity is not None and activity["status"] == UNINSTALLING and not self.installations.get(name):
            del self.activities[name]
            self.installations.pop(name, None)

    # ---- installations --------------------------------------------------------------------------
    def _install_assign(self, cmd: dict) -> Result:
        assigned, refused = [], []
        now, assignments = cmd["now"], _pairs(cmd.get("assignments"))
        for name, node in assignments:
            why = self._why_not_install(name, node)
            if why:
                refused.append([name, node, why])
                continue
            self.installations[name][node] = {"status": INSTALLING, "since": now}
            assigned.append([name, node])
        return {"ok": True, "assigned": assigned, "refused": refused}

    def _why_not_install(self, name: str, node: str) -> str | None:
        activity = self.activities.get(name)
        if activity is None:
            return "no such activity"
        if node not in self.nodes:
            return "no such node"
        if self.nodes[node].get("status", NODE_UP_STATUS) != NODE_UP_STATUS:
            return f"node is {self.nodes[node]['status']}"
        installs = self.installations[name]
        if node in installs:
            return "already assigned"
        if activity["status"] == VERIFYING and installs:
            return "already being verified on another node"
        if activity["status"] not in (VERIFYING, APPROVED):
            return f"activity is {activity['status']}"
        return None

    def _install_done(self, cmd: dict) -> Result:
        name, node = cmd["name"], cmd["node"]
        inst = self.installations.get(name, {}).get(node)
        if inst is None or inst["status"] != INSTALLING:
            return {"ok": True, "ignored": True}
        activity = self.activities[name]
        if cmd.get("ok"):
            self._set_install_status(inst, INSTALLED, cmd["now"])
            if activity["status"] == VERIFYING:
                self._set_activity_status(activity, APPROVED)
            return {"ok": True}
        reason = str(cmd.get("error") or "installation failed")
        self._set_install_status(inst, FAILED, cmd["now"])
        inst["errorDescription"] = reason
        if activity["status"] == VERIFYING:
            self._set_activity_status(activity, REJECTED)
            activity["errorDescription"] = reason
            for execution in self.executions.values():
                if execution["activityName"] == name and execution["status"] not in TERMINAL:
                    self._end(execution, ERROR, cmd["now"], f"activity rejected: {reason}")
        return {"ok": True}

    def _uninstall_done(self, cmd: dict) -> Result:
        name, node = cmd["name"], cmd["node"]
        installs = self.installations.get(name, {})
        inst = installs.get(node)
        if inst is None or inst["status"] != UNINSTALLING:
            return {"ok": True, "ignored": True}
        del installs[node]
        self._drop_activity_if_uninstalled(name)
        return {"ok": True}

    # ---- executions -----------------------------------------------------------------------------
    def _exec_new(self, cmd: dict) -> Result:
        name, now = cmd["name"], cmd["now"]
        request_id = cmd.get("requestId")
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
                return {"ok": True, "execution": dict(execution), "duplicate": True}
        activity = self.activities.get(name)
        if activity is None:
            return refuse("not_found", f"Activity {name!r} doesn't exist")
        if activity["status"] not in (VERIFYING, APPROVED):
            return refuse("conflict", f"Activity {name!r} is {activity['status']}; it cannot run executions")
        exec_id = self.next_execution_id
        self.next_execution_id += 1
        execution = {
            "id": exec_id,
            "activityId": activity["id"],
            "activityName": name,
            "stdin": cmd.get("input") or "",
            "status": WAITING,
            "submitTime": now,
            "startTime": None,
            "finishTime": None,
            "workerId": None,
            "attempt": 0,
            "exitCode": None,
            "stdout": "",
            "stderr": "",
        }
        if request_id:
            execution["requestId"] = request_id
            self.request_ids[request_id] = [exec_id, now]
        self.executions[exec_id] = execution
        node = cmd.get("node")
        if node is not None and not any(e["status"] == WAITING for i, e in self.executions.items() if i != exec_id):
            # The proposer's placement, checked like any other; never ahead of executions already queued.
            self._place(execution, node, self.busy_slots(), now)
        return {"ok": True, "execution": dict(execution)}

    def _set_exec_status(self, execution: dict, status: str) -> None:
        self.touched.add(execution["id"])
        if not can_move(EXECUTION_TRANSITIONS, execution["status"], status):
            raise ValueError(f"execution {execution['id']}: {execution['status']} -> {status} not allowed")
        execution["status"] = status

    def _end(self, execution: dict, status: str, now: float, reason: str | None = None) -> None:
        self._set_exec_status(execution, status)
        execution["finishTime"] = now
        if reason:
            execution["errorDescription"] = reason

    def _terminate(self, execution: dict, now: float, reason: str) -> None:
        was_running = execution["status"] == IN_PROGRESS
        self._end(execution, TERMINATED, now, reason)
        if was_running:
            execution["outputPending"] = True

    def busy_slots(self) -> dict[str, int]:
        """Slots taken on each node: running executions, and terminated ones still being stopped."""
        busy: dict[str, int] = {node: 0 for node in self.nodes}
        for execution in self.executions.values():
            node = execution["workerId"]
            if node in busy and (execution["status"] == IN_PROGRESS or execution.get("outputPending")):
                busy[node] += 1
        return busy

    def _exec_place(self, cmd: dict) -> Result:
        busy = self.busy_slots()
        placed, refused = [], []
        now, placements = cmd["now"], _pairs(cmd.get("placements"))
        for exec_id, node in placements:
            why = self._place(self.executions.get(exec_id), node, busy, now)
            if why:
                refused.append([exec_id, why])
            else:
                placed.append(exec_id)
        return {"ok": True, "placed": placed, "refused": refused}

    def _place(self, execution: dict | None, node: str, busy: dict[str, int], now: float) -> str | None:
        """Put a waiting execution on a node if the state allows it; return why not otherwise."""
        why = self._why_not_place(execution, node, busy)
        if why is None:
            self._set_exec_status(execution, IN_PROGRESS)
            execution.update(workerId=node, attempt=execution["attempt"] + 1, startTime=now,
                             workerIncarnation=self.nodes[node].get("incarnation", ""))
            self.nodes[node]["lastWorkAt"] = now
            busy[node] += 1
        return why

    def _why_not_place(self, execution: dict | None, node: str, busy: dict[str, int]) -> str | None:
        if execution is None:
            return "no such execution"
        if execution["status"] != WAITING:
            return f"execution is {execution['status']}"
        if node not in self.nodes:
            return "no such node"
        if self.nodes[node].get("status", NODE_UP_STATUS) != NODE_UP_STATUS:
            return f"node is {self.nodes[node]['status']}"
        inst = self.installations.get(execution["activityName"], {}).get(node)
        if inst is None or inst["status"] != INSTALLED:
            return "activity not installed on node"
        if busy[node] >= self.nodes[node]["slots"]:
            return "node has no free slot"
        return None

    def _exec_finish(self, cmd: dict) -> Result:
        accepted, ignored = [], []
        now, reports = cmd["now"], list(cmd.get("reports") or [])
        for report in reports:  # check them all before the first changes anything
            if not isinstance(report, dict):
                raise TypeError(f"report is not a map: {report!r}")
            hash(report.get("id"))
        for report in reports:
            execution = self.executions.get(report.get("id"))
            if (execution is None or execution["workerId"] != report.get("node")
                    or execution["attempt"] != report.get("attempt")):
                ignored.append(report.get("id"))
                continue
            if execution["status"] == IN_PROGRESS:
                code = report.get("exitCode")
                status = FINISHED if code == 0 else ERROR
                self._end(execution, status, now, report.get("error"))
                self._note_runtime(execution, now)
            elif not execution.get("outputPending"):
                ignored.append(report["id"])
                continue
            execution.pop("outputPending", None)
            execution.update(
                exitCode=report.get("exitCode"),
                stdout=report.get("stdout") or "",
                stderr=report.get("stderr") or "",
                stdoutTruncated=bool(report.get("stdoutTruncated")),
                stderrTruncated=bool(report.get("stderrTruncated")),
            )
            accepted.append(report["id"])
            self.touched.add(report["id"])
        pulled = self._pull(cmd["pull"], now) if cmd.get("pull") is not None else []
        return {"ok": True, "accepted": accepted, "ignored": ignored, "pulled": pulled}

    def _pull(self, node: str, now: float) -> list[int]:
        """The reporting node asks to refill the slots it just freed: give it the oldest waiting executions
        it can run, first in first out, so a busy queue drains without a placement entry per slot."""
        if node not in self.nodes or self.nodes[node].get("status", NODE_UP_STATUS) != NODE_UP_STATUS:
            return []
        busy, pulled = self.busy_slots(), []
        for exec_id in sorted(i for i, e in self.executions.items() if e["status"] == WAITING):
            if busy[node] >= self.nodes[node]["slots"]:
                break
            if self._place(self.executions[exec_id], node, busy, now) is None:
                pulled.append(exec_id)
        return pulled

    def _note_runtime(self, execution: dict, now: float) -> None:
        """Keep each activity's mean run time (moving average) and each node's last work time, for scaling."""
        activity = self.activities.get(execution["activityName"])
        if activity is not None and execution["startTime"] is not None:
            took = max(0.0, now - execution["startTime"])
            mean = activity.get("meanRuntimeS")
            activity["meanRuntimeS"] = took if mean is None else 0.8 * mean + 0.2 * took
        if execution["workerId"] in self.nodes:
            self.nodes[execution["workerId"]]["lastWorkAt"] = now

    def _exec_terminate(self, cmd: dict) -> Result:
        execution = self.executions.get(cmd["id"])
        if execution is None:
            return missing_execution(cmd["id"])
        if execution["status"] in TERMINAL:
            return refuse("conflict", f"Execution {cmd['id']} has already ended ({execution['status']})")
        self._terminate(execution, cmd["now"], "terminated by request")
        return {"ok": True, "execution": dict(execution)}

    def _exec_forget(self, cmd: dict) -> Result:
        execution = self.executions.get(cmd["id"])
        if execution is None:
            return missing_execution(cmd["id"])
        if execution["status"] not in TERMINAL:
            return refuse("conflict", f"Execution {cmd['id']} has not ended yet")
        del self.executions[cmd["id"]]
        self.touched.add(cmd["id"])
        return {"ok": True, "execution": execution}

    def _exec_expire(self, cmd: dict) -> Result:
        expired = []
        ids = list(cmd.get("ids") or [])
        for exec_id in ids:  # check them all before the first changes anything
            hash(exec_id)
        horizon = cmd.get("requestIdsBefore")
        old_rids = [] if horizon is None else [rid for rid, (_, t) in self.request_ids.items() if t < horizon]
        for exec_id in ids:
            execution = self.executions.get(exec_id)
            if execution is not None and execution["status"] in TERMINAL:
                del self.executions[exec_id]
                self.touched.add(exec_id)
                expired.append(exec_id)
        for rid in old_rids:
            del self.request_ids[rid]
        return {"ok": True, "expired": expired}

    # ---- views ----------------------------------------------------------------------------------
    def execution(self, exec_id: int) -> dict[str, Any] | None:
        execution = self.executions.get(exec_id)
        return dict(execution) if execution is not None else None  # values are scalars

    def activity(self, name: str) -> dict[str, Any] | None:
        activity = self.activities.get(name)
        if activity is None:
            return None
        view = dict(activity)
        view["installations"] = [
            {"workerId": node, **inst} for node, inst in sorted(self.installations.get(name, {}).items())
        ]
        return view
