"""The replicated state machine: the resources it holds, and one apply case per command type.

The state is split by resource, each a small class that owns its data and the apply cases of the commands
that change only it: nodes and their membership (membership.py), activities and their installations
(activities.py), executions (executions.py), scaling policies (scaling_policies.py). Each is given the
resources it reads: activities read the nodes; executions read and update the activities and nodes. The few
commands whose effects cross resources (a node lost or left, an activity deleted, an install that rejects
its activity) are applied here, one step per resource, in a fixed order.

`State.apply(cmd)` is deterministic: everything it needs (time, ids of nodes, outputs) is in the command.
It never raises for a bad command; a refusal is returned as {"error": kind, "message": ...} so that one
bad entry can never wedge the Raft log. Nothing here does I/O or reads a clock; it is tested without a
network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from . import arrays
from . import commands as C
from .activities import ActivityTable
from .executions import ExecutionTable, missing_execution
from .membership import NodeTable
from .observer import NO_OBSERVER, ApplyObserver, notify
from .results import Result, refuse
from .scaling_policies import ScalingPolicyTable
from .tokens import TokenTable

__all__ = ["State", "missing_execution"]  # missing_execution: the API words its 404 with it

log = logging.getLogger(__name__)

# The snapshot's fields, in the order they are written (msgpack keeps it): never reorder, only append.
SNAPSHOT_FIELDS = ("activities", "installations", "executions", "nodes", "request_ids", "policies",
                   "active_policy", "launches", "launch_failures", "next_activity_id", "next_execution_id",
                   "tokens", "admin_revoked")


def _field(table: str, name: str, doc: str) -> property:
    return property(attrgetter(f"{table}.{name}"), doc=doc)


class State:
    """All replicated data, as plain dicts and lists (msgpack-able), in its resources; readers use the
    properties below."""

    def __init__(self) -> None:
        self.node_table = NodeTable()
        self.activity_table = ActivityTable(self.node_table)
        self.execution_table = ExecutionTable(self.activity_table, self.node_table)
        self.policy_table = ScalingPolicyTable()
        self.token_table = TokenTable()
        nodes, activities = self.node_table, self.activity_table
        executions, policies = self.execution_table, self.policy_table
        # One apply case per command type: the command's class (it decodes the logged dict) and its handler.
        cases: dict[type[C.Command], Callable[[Any], Result]] = {
            C.NodeUp: self._node_up,
            C.ActivityNew: activities.activity_new,
            C.ActivityDelete: self._activity_delete,
            C.InstallAssign: activities.install_assign,
            C.InstallDone: self._install_done,
            C.UninstallDone: activities.uninstall_done,
            C.ExecNew: executions.exec_new,
            C.ExecPlace: executions.exec_place,
            C.ExecFinish: executions.exec_finish,
            C.ExecTerminate: executions.exec_terminate,
            C.ExecForget: executions.exec_forget,
            C.ExecExpire: executions.exec_expire,
            C.Sync: lambda cmd: {"ok": True},
            C.NodeLost: self._node_lost,
            C.ExecLost: executions.exec_lost,
            C.Reinstall: activities.reinstall,
            C.PolicyNew: policies.policy_new,
            C.PolicyDelete: policies.policy_delete,
            C.PolicyApply: policies.policy_apply,
            C.PolicyReset: policies.policy_reset,
            C.NodeLaunched: self._node_launched,
            C.NodeLaunchFailed: self._node_launch_failed,
            C.NodeLaunchRef: nodes.node_launch_ref,
            C.NodeDrain: nodes.node_drain,
            C.NodeLeft: self._node_left,
            C.Batch: self._batch,
            C.TokenNew: self.token_table.token_new,
            C.TokenDelete: self.token_table.token_delete,
            C.ExecNewMany: lambda cmd: arrays.exec_new_many(activities, executions, cmd),
            C.ExecForgetMany: lambda cmd: arrays.exec_forget_many(executions, cmd),
            C.ExecSettle: executions.exec_settle,
        }
        assert set(cases) == set(C.TYPES.values()), "a command type without its apply case"
        self._cases: dict[str, tuple[Callable[[dict], Any], Callable[[Any], Result]]] = {
            kind.t: (kind.from_wire, handle) for kind, handle in cases.items()}

    # ---- what the rest of the code reads ---------------------------------------------------------
    nodes = _field("node_table", "nodes", "node id -> record (status, slots, addresses, provider facts)")
    launches = _field("node_table", "launches", "node id -> launch in flight (not registered yet)")
    launch_failures = _field("node_table", "launch_failures", "count, lastAt, lastNode, lastReason")
    activities = _field("activity_table", "activities", "activity name -> record")
    installations = _field("activity_table", "installations", "activity name -> node id -> installation")
    next_activity_id = _field("activity_table", "next_activity_id", "the id of the next new activity")
    executions = _field("execution_table", "executions", "execution id -> record")
    request_ids = _field("execution_table", "request_ids", "newExecution requestId -> (execution id, time)")
    next_execution_id = _field("execution_table", "next_execution_id", "the id of the next new execution")
    policies = _field("policy_table", "policies", "scaling policy name -> record")
    active_policy = _field("policy_table", "active_policy", "the active scaling policy's name, or None")
    tokens = _field("token_table", "tokens", "API token id -> record (name, scope, salt, hash of the key)")
    admin_revoked = _field("token_table", "admin_revoked", "the birth admin token was deleted")

    @property
    def observer(self) -> ApplyObserver:
        """Told of executions submitted, started, ended and retried, installs done, launches and destroys, as
        entries are applied (metrics); not replicated state, and it never changes what an entry does."""
        return self.execution_table.observer

    @observer.setter
    def observer(self, value: ApplyObserver | None) -> None:
        self.execution_table.observer = value if value is not None else NO_OBSERVER

    @property
    def touched(self) -> set[int]:
        """Executions changed since the owner last took this set (not replicated state: a wake-up hint)."""
        return self.execution_table.touched

    @touched.setter
    def touched(self, value: set[int]) -> None:
        self.execution_table.touched = value

    def busy_slots(self) -> dict[str, int]:
        """Slots taken on each node: running executions, and terminated ones still being stopped."""
        return self.execution_table.busy_slots()

    def node_at(self, raft_addr: Any) -> str | None:
        """The id of the node registered at this Raft address (e.g. the leader pysyncobj names), or None."""
        return next((n for n, rec in self.nodes.items() if rec.get("raftAddr") == raft_addr), None)

    def execution(self, exec_id: int) -> dict[str, Any] | None:
        execution = self.executions.get(exec_id)
        return self.execution_table.full_record(execution) if execution is not None else None  # scalars

    def activity(self, name: str) -> dict[str, Any] | None:
        activity = self.activities.get(name)
        if activity is None:
            return None
        view = dict(activity)
        view["installations"] = [
            {"workerId": node, **inst} for node, inst in sorted(self.installations.get(name, {}).items())
        ]
        return view

    # ---- snapshot -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SNAPSHOT_FIELDS}

    def load_dict(self, data: dict[str, Any]) -> None:
        """Take the state from a snapshot (to_dict's, also of an earlier version: a missing field is empty)."""
        for table in (self.node_table, self.activity_table, self.execution_table, self.policy_table,
                      self.token_table):
            table.load(data)

    # ---- entry point ----------------------------------------------------------------------------
    def apply(self, cmd: Any) -> Result:
        """Apply one command: its wire form, as the log holds it (or a typed command, which is applied as its
        wire form would be). Never raises: bad input and internal faults become recorded refusals."""
        if not isinstance(cmd, dict):
            if not isinstance(cmd, C.Command):
                return refuse("bad_request", "malformed command")
            try:
                cmd = cmd.to_wire()
            except Exception as exc:  # a list field holding something else than its records
                return refuse("bad_request", f"malformed command: {exc!r}")
        if not isinstance(cmd.get("t"), str):
            return refuse("bad_request", "malformed command")
        case = self._cases.get(cmd["t"])
        if case is None:
            return refuse("bad_request", f"unknown command type {cmd['t']!r}")
        decode, handle = case
        try:  # decoding is inside: a missing field is a refusal too
            return handle(decode(cmd))
        except Exception as exc:  # a bug must not wedge the log: record it and go on
            log.exception("command %s failed", cmd.get("t"))
            return refuse("internal", f"command {cmd['t']} failed: {exc!r}")

    def _batch(self, cmd: C.Batch) -> Result:
        results = []
        for sub in cmd.cmds or []:
            if isinstance(sub, dict) and sub.get("t") == C.BATCH:
                results.append(refuse("bad_request", "nested batch"))
            else:
                results.append(self.apply(sub))
        return {"ok": True, "results": results}

    # ---- commands whose effects cross resources -------------------------------------------------
    def _node_up(self, cmd: C.NodeUp) -> Result:
        """A node registers; after a restart (a new incarnation) the requests it held are gone: release what it
        collected for them."""
        before = (self.nodes.get(str(cmd.node)) or {}).get("incarnation")
        result = self.node_table.node_up(cmd)
        if "error" not in result and before is not None and before != result["node"].get("incarnation"):
            self.execution_table.release_collected(str(cmd.node))
        return result

    def _node_lost(self, cmd: C.NodeLost) -> Result:
        """The leader has not reached the node for node_lost_after_s: move its work elsewhere, and drop its
        unfinished installs and removals."""
        node, now, reason = cmd.node, cmd.now, str(cmd.reason or f"node {cmd.node} was lost")
        if not self.node_table.mark_lost(node, now, reason):
            return {"ok": True, "ignored": True}
        moved = self.execution_table.release_node(node, now, reason)
        self.execution_table.release_collected(node)
        self.activity_table.drop_unfinished_installs(node)
        return {"ok": True, "moved": moved}

    def _node_left(self, cmd: C.NodeLeft) -> Result:
        """The node is out of the cluster: its work is queued again and its installations forgotten."""
        node, now = cmd.node, cmd.now
        if cmd.destroyed and node in self.nodes and not self.nodes[node].get("destroyedAt"):
            notify(self.observer.destroyed, node)
        if not self.node_table.mark_left(node, now, destroyed=bool(cmd.destroyed)):
            return {"ok": True, "ignored": True}
        self.execution_table.release_node(node, now, f"node {node} left the cluster")
        self.execution_table.release_collected(node)
        self.activity_table.drop_node(node)
        return {"ok": True}

    def _node_launched(self, cmd: C.NodeLaunched) -> Result:
        result = self.node_table.node_launched(cmd)
        if "error" not in result:
            notify(self.observer.launch_recorded, str(cmd.node))
        return result

    def _node_launch_failed(self, cmd: C.NodeLaunchFailed) -> Result:
        result = self.node_table.node_launch_failed(cmd)
        notify(self.observer.launch_failed, str(cmd.node))
        return result

    def _activity_delete(self, cmd: C.ActivityDelete) -> Result:
        """Uninstall the activity everywhere and terminate its executions."""
        activity_id = (self.activities.get(cmd.name) or {}).get("id")   # the record may go with the delete
        result = self.activity_table.activity_delete(cmd)
        if "error" not in result:
            self.execution_table.terminate_activity(cmd.name, activity_id, cmd.now, "activity deleted")
        return result

    def _install_done(self, cmd: C.InstallDone) -> Result:
        """An install ended; a failed verification rejects the activity, and its executions end in error."""
        result, rejected = self.activity_table.install_done(cmd)
        if not result.get("ignored"):
            notify(self.observer.installed, cmd.name, bool(cmd.ok))
        if rejected is not None:
            self.execution_table.fail_activity(cmd.name, cmd.now, f"activity rejected: {rejected}")
        return result
