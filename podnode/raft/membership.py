"""The nodes of the cluster and their membership (replicated): registration, draining, loss and leaving, and
the servers a provider is launching for the cluster. Node status changes follow NODE_TRANSITIONS.

What a node's loss or departure does to its executions and installations is wired in state.py; here is
only the node's own record.
"""

from __future__ import annotations

from typing import Any

from . import commands as C
from .lifecycle import (
    NODE_DRAINING_STATUS,
    NODE_LEFT_STATUS,
    NODE_LOST_STATUS,
    NODE_TRANSITIONS,
    NODE_UP_STATUS,
    can_move,
)
from .results import Result, refuse

DEFAULT_DRAIN_DEADLINE_S = 300.0


def is_held(record: dict[str, Any]) -> bool:
    """A server the cluster still has (and pays for): up or draining, or launched and lost but not destroyed
    yet (it may come back). A lost static node is not counted: nobody launched it and it may never return."""
    status = record.get("status", NODE_UP_STATUS)
    return status in (NODE_UP_STATUS, NODE_DRAINING_STATUS) or (status == NODE_LOST_STATUS
                                                                 and bool(record.get("removable")))


def held_nodes(nodes: dict[str, dict[str, Any]], launches: dict[str, dict[str, Any]]) -> int:
    """Every server the cluster has: held nodes plus launches not yet joined (see scaling.policy.held_count)."""
    return sum(is_held(rec) for rec in nodes.values()) + len(launches)


class NodeTable:
    """Node records by id, launches in flight by node id, and the count of failed launches. Pure: no I/O."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.launches: dict[str, dict[str, Any]] = {}
        self.launch_failures: dict[str, Any] = {}

    def load(self, data: dict[str, Any]) -> None:
        self.nodes = data.get("nodes", {})
        self.launches = data.get("launches", {})
        self.launch_failures = data.get("launch_failures", {})

    @staticmethod
    def _move(record: dict[str, Any], status: str) -> None:
        if not can_move(NODE_TRANSITIONS, record["status"], status):
            raise ValueError(f"node {record['id']}: {record['status']} -> {status} not allowed")
        record["status"] = status

    # ---- apply cases ----------------------------------------------------------------------------
    def node_up(self, cmd: C.NodeUp) -> Result:
        """A node registers (at start, and again after a restart or a loss): it is up, or stays draining."""
        node = str(cmd.node)
        fields = dict(  # all read before the node is added, so a malformed command adds nothing
            raftAddr=str(cmd.raftAddr),
            httpUrl=str(cmd.httpUrl),
            slots=max(0, int(cmd.slots)),
            version=str(cmd.version),
            incarnation=str(cmd.incarnation),
            role=str(cmd.role or "voter"),
            seenAt=cmd.now,
        )
        record = self.nodes.setdefault(node, {"id": node, "joinedAt": cmd.now})
        status = record.get("status")
        record.update(fields)
        if status is None:
            record["status"] = NODE_UP_STATUS  # a new node
        elif status not in (NODE_UP_STATUS, NODE_DRAINING_STATUS):  # a restart does not cancel a drain
            self._move(record, NODE_UP_STATUS)
        record.pop("lostReason", None)
        record.pop("lostAt", None)
        self._adopt_launch(node, record)
        return {"ok": True, "node": dict(record)}

    def node_drain(self, cmd: C.NodeDrain) -> Result:
        node, now = cmd.node, cmd.now
        record = self.nodes.get(node)
        if record is None:
            return refuse("not_found", f"Worker {node!r} doesn't exist")
        if not can_move(NODE_TRANSITIONS, record.get("status"), NODE_DRAINING_STATUS):
            return refuse("conflict", f"Worker {node!r} is {record.get('status')}; only an up worker can be drained")
        deadline_s = DEFAULT_DRAIN_DEADLINE_S if cmd.deadlineS is None else float(cmd.deadlineS)  # 0: at once
        deadline, reason = now + deadline_s, str(cmd.reason or "asked to leave")
        self._move(record, NODE_DRAINING_STATUS)
        record.update(drainDeadline=deadline, drainReason=reason)
        return {"ok": True, "node": dict(record)}

    def node_launched(self, cmd: C.NodeLaunched) -> Result:
        """A provider is about to be asked for this node (the leader commits this first and calls the provider
        only if it was accepted, so every leader counts launches in flight); it counts as launching until it
        registers. With `maxNodes` it is refused when the cluster already holds that many servers (see
        held_nodes): the log orders racing launches, so two leaders can never launch past the cap together."""
        node = str(cmd.node)
        if node in self.nodes or node in self.launches:
            return refuse("conflict", f"node {node} already exists")
        cap = cmd.maxNodes
        if cap is not None:
            held = held_nodes(self.nodes, self.launches)
            if held >= int(cap):
                return refuse("conflict", f"the cluster already holds {held} nodes "
                                          f"(launching included), the most allowed is {int(cap)}")
        self.launches[node] = {"provider": str(cmd.provider), "ref": str(cmd.ref or ""),
                               "hourlyPrice": float(cmd.hourlyPrice or 0.0), "launchedAt": cmd.now}
        return {"ok": True}

    def node_launch_ref(self, cmd: C.NodeLaunchRef) -> Result:
        """The provider started the server: record its handle (and price) on the launch, or on the node if it
        has registered already. Anything else (a launch given up meanwhile) is ignored."""
        node, ref = str(cmd.node), str(cmd.ref or "")
        record = self.launches.get(node)
        if record is None:
            adopted = self.nodes.get(node)
            record = adopted if adopted is not None and adopted.get("removable") and not adopted.get("ref") else None
        if record is None:
            return {"ok": True, "ignored": True}
        record["ref"] = ref
        if cmd.hourlyPrice is not None:
            record["hourlyPrice"] = float(cmd.hourlyPrice)
        return {"ok": True}

    def node_launch_failed(self, cmd: C.NodeLaunchFailed) -> Result:
        node, now = str(cmd.node), cmd.now
        self.launches.pop(node, None)
        count = int(self.launch_failures.get("count", 0)) + 1
        self.launch_failures.update(count=count, lastAt=now, lastNode=node, lastReason=str(cmd.reason or ""))
        return {"ok": True, "failures": count}

    # ---- steps of the commands state.py wires across resources ----------------------------------
    def mark_lost(self, node: Any, now: float, reason: str) -> bool:
        """An up or draining node is lost; False (nothing changed) for any other."""
        record = self.nodes.get(node)
        if record is None or not can_move(NODE_TRANSITIONS, record.get("status"), NODE_LOST_STATUS):
            return False
        self._move(record, NODE_LOST_STATUS)
        record.update(lostAt=now, lostReason=reason)
        return True

    def mark_left(self, node: Any, now: float, *, destroyed: bool) -> bool:
        """The node is out of the cluster; False (nothing else changed) if it had left already or is unknown.
        `destroyed` (its provider destroyed the server) is recorded as destroyedAt, also on a node that had
        left already, so that no later leader destroys it again."""
        record = self.nodes.get(node)
        if record is not None and destroyed:
            record["destroyedAt"] = now
        if record is None or not can_move(NODE_TRANSITIONS, record.get("status"), NODE_LEFT_STATUS):
            return False
        self._move(record, NODE_LEFT_STATUS)
        record["leftAt"] = now
        return True

    def note_work(self, node: Any, now: float) -> None:
        """The node started or finished work now (the autoscaler's idle time)."""
        if node in self.nodes:
            self.nodes[node]["lastWorkAt"] = now

    def _adopt_launch(self, node: str, record: dict[str, Any]) -> None:
        """On registration, a launched node takes over its provider's facts and becomes removable."""
        launch = self.launches.pop(node, None)
        if launch is not None:
            record.update(provider=launch["provider"], ref=launch["ref"], hourlyPrice=launch["hourlyPrice"],
                          removable=True)
