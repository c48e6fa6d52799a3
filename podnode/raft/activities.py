"""Activities and their installations on nodes (replicated). An activity is verified by installing it on one
node, then installed on every other; deleting it uninstalls it everywhere, and it is gone once no node
holds it. Status changes follow ACTIVITY_TRANSITIONS and INSTALLATION_TRANSITIONS.

What an activity's deletion or rejection does to its executions is wired in state.py.
"""

from __future__ import annotations

from typing import Any

from .. import placement
from . import commands as C
from .lifecycle import (
    ACTIVITY_TRANSITIONS,
    APPROVED,
    FAILED,
    INSTALLATION_TRANSITIONS,
    INSTALLED,
    INSTALLING,
    NODE_LOST_STATUS,
    REJECTED,
    UNINSTALLING,
    VERIFYING,
    can_move,
)
from .membership import NodeTable
from .quotas import activities_full
from .results import Result, pairs, refuse

DEFAULT_MAX_ATTEMPTS = 3
# An activity's own limits for its executions (ActivityNew fields): the largest value each may take, and its type.
# 0: no limit; missing: each node's default (--exec-timeout-s, ...) applies. newActivity needs an admin token.
LIMIT_CAPS: dict[str, tuple[type, float]] = {
    "timeoutS": (float, 30 * 24 * 3600.0),   # seconds: 30 days
    "memoryMB": (int, 1024 * 1024),          # 1 TiB
    "maxProcesses": (int, 4 * 1024 * 1024),  # the kernel's highest pid_max
}


def activity_limits(cmd: C.ActivityNew) -> dict[str, Any] | str:
    """The activity's own limits from the command (those it sets; 0: none), or why they are refused."""
    limits: dict[str, Any] = {}
    for key, (kind, cap) in LIMIT_CAPS.items():
        value = getattr(cmd, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= cap:
            return f"{key} must be a number from 0 (no limit) to {cap:.0f}, not {value!r}"
        if kind is int and value != int(value):
            return f"{key} must be a whole number, not {value!r}"
        limits[key] = kind(value)
    return limits


class ActivityTable:
    """Activities by name, installations by activity name and node. Reads the nodes it installs on."""

    def __init__(self, nodes: NodeTable) -> None:
        self._nodes = nodes
        self.activities: dict[str, dict[str, Any]] = {}
        self.installations: dict[str, dict[str, dict[str, Any]]] = {}
        self.next_activity_id = 1

    def load(self, data: dict[str, Any]) -> None:
        self.activities = data.get("activities", {})
        self.installations = data.get("installations", {})
        self.next_activity_id = data.get("next_activity_id", 1)

    def get(self, name: Any) -> dict[str, Any] | None:
        return self.activities.get(name)

    def _move(self, activity: dict, status: str) -> None:
        if not can_move(ACTIVITY_TRANSITIONS, activity["status"], status):
            raise ValueError(f"activity {activity['name']}: {activity['status']} -> {status} not allowed")
        activity["status"] = status

    @staticmethod
    def _move_install(inst: dict, status: str, now: float) -> None:
        if not can_move(INSTALLATION_TRANSITIONS, inst["status"], status):
            raise ValueError(f"installation: {inst['status']} -> {status} not allowed")
        inst.update(status=status, since=now)

    # ---- apply cases ----------------------------------------------------------------------------
    def activity_new(self, cmd: C.ActivityNew) -> Result:
        name = cmd.name
        existing = self.activities.get(name)
        if existing is not None:
            return refuse(
                "conflict",
                f"Activity {name!r} already exists (status {existing['status']}); delete it first or pick another name",
            )
        max_attempts = DEFAULT_MAX_ATTEMPTS if cmd.maxAttempts is None else int(cmd.maxAttempts)
        if not 1 <= max_attempts <= 100:
            return refuse("bad_request", f"maxAttempts must be from 1 to 100, not {max_attempts}")
        limits = activity_limits(cmd)
        if isinstance(limits, str):
            return refuse("bad_request", limits)
        full = activities_full(len(self.activities), cmd.maxActivities)
        if full:
            return full
        activity = {
            "id": self.next_activity_id,
            "name": name,
            "installationScriptLocation": cmd.url,
            "status": VERIFYING,
            "createdAt": cmd.now,
            "maxAttempts": max_attempts,
        }
        if limits:
            activity["limits"] = limits
        self.next_activity_id += 1
        self.activities[name] = activity
        self.installations[name] = {}
        return {"ok": True, "activity": dict(activity)}

    def install_assign(self, cmd: C.InstallAssign) -> Result:
        """The leader's install plan, re-checked pair by pair with the placement rules."""
        assigned, refused = [], []
        now, assignments = cmd.now, pairs(cmd.assignments)
        for name, node in assignments:
            why = placement.why_not_install(name, node, activities=self.activities,
                                            installations=self.installations, nodes=self._nodes.nodes)
            if why:
                refused.append([name, node, why])
                continue
            self.installations[name][node] = {"status": INSTALLING, "since": now}
            assigned.append([name, node])
        return {"ok": True, "assigned": assigned, "refused": refused}

    def uninstall_done(self, cmd: C.UninstallDone) -> Result:
        name, node = cmd.name, cmd.node
        installs = self.installations.get(name, {})
        inst = installs.get(node)
        if inst is None or inst["status"] != UNINSTALLING:
            return {"ok": True, "ignored": True}
        del installs[node]
        self._drop_if_uninstalled(name)
        return {"ok": True}

    def reinstall(self, cmd: C.Reinstall) -> Result:
        """A node found an installed activity's files missing: install it there again."""
        name, node, now = cmd.name, cmd.node, cmd.now
        inst = self.installations.get(name, {}).get(node)
        if inst is None or inst["status"] != INSTALLED:
            return {"ok": True, "ignored": True}
        self._move_install(inst, INSTALLING, now)
        return {"ok": True}

    # ---- steps of the commands state.py wires across resources ----------------------------------
    def install_done(self, cmd: C.InstallDone) -> tuple[Result, str | None]:
        """An install ended: the result, and the reason if its failure rejected the activity it verified."""
        name, node = cmd.name, cmd.node
        inst = self.installations.get(name, {}).get(node)
        if inst is None or inst["status"] != INSTALLING:
            return {"ok": True, "ignored": True}, None
        activity = self.activities[name]
        if cmd.ok:
            self._move_install(inst, INSTALLED, cmd.now)
            if activity["status"] == VERIFYING:
                self._move(activity, APPROVED)
            return {"ok": True}, None
        reason = str(cmd.error or "installation failed")
        self._move_install(inst, FAILED, cmd.now)
        inst["errorDescription"] = reason
        if activity["status"] != VERIFYING:
            return {"ok": True}, None
        self._move(activity, REJECTED)
        activity["errorDescription"] = reason
        return {"ok": True}, reason

    def activity_delete(self, cmd: C.ActivityDelete) -> Result:
        """Uninstall the activity everywhere (a lost node cleans up its own copy when it comes back); it is
        dropped at once if no node holds it."""
        name, now = cmd.name, cmd.now
        activity = self.activities.get(name)
        if activity is None:
            return refuse("not_found", f"Activity {name!r} doesn't exist")
        if activity["status"] == UNINSTALLING:
            return refuse("conflict", f"Activity {name!r} is already being uninstalled")
        self._move(activity, UNINSTALLING)
        installs = self.installations.get(name, {})
        for node in list(installs):
            if self._nodes.nodes.get(node, {}).get("status") == NODE_LOST_STATUS:
                del installs[node]
            else:
                self._move_install(installs[node], UNINSTALLING, now)
        result = {"ok": True, "activity": dict(activity)}
        self._drop_if_uninstalled(name)
        return result

    def drop_unfinished_installs(self, node: Any) -> None:
        """A node was lost: its installed activities stay listed (it keeps its files and is usable again when
        it returns); its unfinished installs and removals are dropped so that verifying and deleting can go
        on without it."""
        for name in list(self.installations):
            inst = self.installations[name].get(node)
            if inst is not None and inst["status"] in (INSTALLING, UNINSTALLING, FAILED):
                del self.installations[name][node]
                self._drop_if_uninstalled(name)

    def drop_node(self, node: Any) -> None:
        """A node left the cluster: forget every installation on it."""
        for name in list(self.installations):
            if self.installations[name].pop(node, None) is not None:
                self._drop_if_uninstalled(name)

    def note_runtime(self, name: Any, started: float | None, now: float) -> None:
        """One more execution of the activity ended: keep its mean run time (moving average), for scaling."""
        activity = self.activities.get(name)
        if activity is not None and started is not None:
            took = max(0.0, now - started)
            mean = activity.get("meanRuntimeS")
            activity["meanRuntimeS"] = took if mean is None else 0.8 * mean + 0.2 * took

    def _drop_if_uninstalled(self, name: str) -> None:
        activity = self.activities.get(name)
        if activity is not None and activity["status"] == UNINSTALLING and not self.installations.get(name):
            del self.activities[name]
            self.installations.pop(name, None)
