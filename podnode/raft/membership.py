"""Replicated node life cycle beyond up and lost: launches by a provider, draining, leaving.
A mixin of State (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from .lifecycle import IN_PROGRESS, NODE_DRAINING_STATUS, NODE_LEFT_STATUS, NODE_LOST_STATUS, NODE_UP_STATUS

Result = dict[str, Any]


def is_held(record: dict[str, Any]) -> bool:
    """A server the cluster still has (and pays for): up or draining, or launched and lost but not destroyed
    yet (it may come back). A lost static node is not counted: nobody launched it and it may never return."""
    status = record.get("status", NODE_UP_STATUS)
    return status in (NODE_UP_STATUS, NODE_DRAINING_STATUS) or (status == NODE_LOST_STATUS
                                                                 and bool(record.get("removable")))


def held_nodes(nodes: dict[str, dict[str, Any]], launches: dict[str, dict[str, Any]]) -> int:
    """Every server the cluster has: held nodes plus launches not yet joined (see scaling.policy.held_count)."""
    return sum(is_held(rec) for rec in nodes.values()) + len(launches)


class MembershipCommands:
    nodes: dict[str, dict[str, Any]]
    launches: dict[str, dict[str, Any]]
    launch_failures: dict[str, Any]
    executions: dict[int, dict[str, Any]]
    installations: dict[str, dict[str, dict[str, Any]]]

    def _node_launched(self, cmd: dict) -> Result:
        """A provider is about to be asked for this node (the leader commits this first and calls the provider
        only if it was accepted, so every leader counts launches in flight); it counts as launching until it
        registers. With `maxNodes` it is refused when the cluster already holds that many servers (see
        held_nodes): the log orders racing launches, so two leaders can never launch past the cap together."""
        node = str(cmd["node"])
        if node in self.nodes or node in self.launches:
            return {"error": "conflict", "message": f"node {node} already exists"}
        cap = cmd.get("maxNodes")
        if cap is not None:
            held = held_nodes(self.nodes, self.launches)
            if held >= int(cap):
                return {"error": "conflict", "message": f"the cluster already holds {held} nodes "
                                                        f"(launching included), the most allowed is {int(cap)}"}
        self.launches[node] = {"provider": str(cmd["provider"]), "ref": str(cmd.get("ref") or ""),
                               "hourlyPrice": float(cmd.get("hourlyPrice") or 0.0), "launchedAt": cmd["now"]}
        return {"ok": True}

    def _node_launch_ref(self, cmd: dict) -> Result:
        """The provider started the server: record its handle (and price) on the launch, or on the node if it
        has registered already. Anything else (a launch given up meanwhile) is ignored."""
        node, ref = str(cmd["node"]), str(cmd.get("ref") or "")
        record = self.launches.get(node)
        if record is None:
            adopted = self.nodes.get(node)
            record = adopted if adopted is not None and adopted.get("removable") and not adopted.get("ref") else None
        if record is None:
            return {"ok": True, "ignored": True}
        record["ref"] = ref
        if cmd.get("hourlyPrice") is not None:
            record["hourlyPrice"] = float(cmd["hourlyPrice"])
        return {"ok": True}

    def _node_launch_failed(self, cmd: dict) -> Result:
        node, now = str(cmd["node"]), cmd["now"]
        self.launches.pop(node, None)
        count = int(self.launch_failures.get("count", 0)) + 1
        self.launch_failures.update(count=count, lastAt=now, lastNode=node, lastReason=str(cmd.get("reason") or ""))
        return {"ok": True, "failures": count}

    def _adopt_launch(self, node: str, record: dict[str, Any]) -> None:
        """On registration, a launched node takes over its provider's facts and becomes removable."""
        launch = self.launches.pop(node, None)
        if launch is not None:
            record.update(provider=launch["provider"], ref=launch["ref"], hourlyPrice=launch["hourlyPrice"],
                          removable=True)

    def _node_drain(self, cmd: dict) -> Result:
        node, now = cmd["node"], cmd["now"]
        record = self.nodes.get(node)
        if record is None:
            return {"error": "not_found", "message": f"Worker {node!r} doesn't exist"}
        if record.get("status") != NODE_UP_STATUS:
            return {"error": "conflict", "message": f"Worker {node!r} is {record.get('status')}; only an up "
                                                      "worker can be drained"}
        deadline_s = 300.0 if cmd.get("deadlineS") is None else float(cmd["deadlineS"])  # 0: requeue at once
        record.update(status=NODE_DRAINING_STATUS, drainDeadline=now + deadline_s,
                      drainReason=str(cmd.get("reason") or "asked to leave"))
        return {"ok": True, "node": dict(record)}

    def _node_left(self, cmd: dict) -> Result:
        """The node is out of the cluster: its work is queued again and its installations forgotten.
        `destroyed` (from the autoscaler, once its provider destroyed the server) is recorded as destroyedAt,
        also on a node that had left already, so that no later leader destroys it again."""
        node, now = cmd["node"], cmd["now"]
        record = self.nodes.get(node)
        if record is not None and cmd.get("destroyed"):
            record["destroyedAt"] = now
        if record is None or record.get("status") == NODE_LEFT_STATUS:
            return {"ok": True, "ignored": True}
        reason = f"node {node} left the cluster"
        record.update(status=NODE_LEFT_STATUS, leftAt=now)
        for execution in self.executions.values():
            if execution["workerId"] == node and execution["status"] == IN_PROGRESS:
                self._lose_attempt(execution, now, reason)
            elif execution["workerId"] == node and execution.pop("outputPending", None):
                self._output_lost(execution, reason)
        for name in list(self.installations):
            if self.installations[name].pop(node, None) is not None:
                self._drop_activity_if_uninstalled(name)
        return {"ok": True}
