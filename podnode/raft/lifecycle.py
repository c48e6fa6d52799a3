"""Lifecycles of activities, installations, executions and nodes: the only transitions the state machine allows."""

from __future__ import annotations

# Activity status words are the original POD's.
VERIFYING, APPROVED, REJECTED, UNINSTALLING = "verifying", "approved", "rejected", "uninstalling"
ACTIVITY_TRANSITIONS: dict[str, frozenset[str]] = {
    VERIFYING: frozenset({APPROVED, REJECTED, UNINSTALLING}),
    APPROVED: frozenset({UNINSTALLING}),
    REJECTED: frozenset({UNINSTALLING}),
    UNINSTALLING: frozenset(),
}

# A node (a cluster member) is up: it takes work; draining: no new work, it leaves when its running work is
# done (or at its deadline); lost: unreachable past node_lost_after_s, or it said it restarted without its
# work (it may come back); left: out of the cluster and out of Raft.
NODE_UP_STATUS, NODE_LOST_STATUS = "up", "lost"
NODE_DRAINING_STATUS, NODE_LEFT_STATUS = "draining", "left"
NODE_TRANSITIONS: dict[str, frozenset[str]] = {
    NODE_UP_STATUS: frozenset({NODE_DRAINING_STATUS, NODE_LOST_STATUS, NODE_LEFT_STATUS}),
    NODE_DRAINING_STATUS: frozenset({NODE_LOST_STATUS, NODE_LEFT_STATUS}),
    NODE_LOST_STATUS: frozenset({NODE_UP_STATUS, NODE_LEFT_STATUS}),   # it registered again
    NODE_LEFT_STATUS: frozenset({NODE_UP_STATUS}),                     # its id registered again, afresh
}  # a node that registers while up or draining keeps its status: its record is refreshed

# Installation of one activity on one node.
INSTALLING, INSTALLED, FAILED = "installing", "installed", "failed"
INSTALLATION_TRANSITIONS: dict[str, frozenset[str]] = {
    INSTALLING: frozenset({INSTALLED, FAILED, UNINSTALLING}),
    INSTALLED: frozenset({UNINSTALLING, INSTALLING}),   # reinstall: a restarted node lost its files
    FAILED: frozenset({UNINSTALLING}),
    UNINSTALLING: frozenset(),
}

# Execution status words are the original POD's.
WAITING, IN_PROGRESS = "waiting", "in progress"
FINISHED, ERROR, TERMINATED = "finished", "error", "terminated"
TERMINAL = frozenset({FINISHED, ERROR, TERMINATED})
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    WAITING: frozenset({IN_PROGRESS, TERMINATED, ERROR}),
    IN_PROGRESS: frozenset({FINISHED, ERROR, TERMINATED, WAITING}),
    FINISHED: frozenset(),
    ERROR: frozenset(),
    TERMINATED: frozenset(),
}


def can_move(table: dict[str, frozenset[str]], current: str, new: str) -> bool:
    return new in table.get(current, frozenset())
