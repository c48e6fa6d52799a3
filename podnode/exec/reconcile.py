"""What this node must do, as a pure function of the replicated state and what it is doing now.

Events in (the applied state), instructions out; the agent carries them out. Tested without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..raft.lifecycle import IN_PROGRESS, INSTALLING, UNINSTALLING
from ..raft.state import State


@dataclass
class Instructions:
    start: list[dict[str, Any]] = field(default_factory=list)    # execution records to run here
    stop: list[int] = field(default_factory=list)                # local runs the state no longer wants
    install: list[dict[str, Any]] = field(default_factory=list)  # activities to install here
    uninstall: list[str] = field(default_factory=list)           # activities to remove from here
    lost: list[dict[str, Any]] = field(default_factory=list)     # attempts placed on an earlier run of this node

    def __bool__(self) -> bool:
        return bool(self.start or self.stop or self.install or self.uninstall or self.lost)


def wanted_here(record: dict[str, Any] | None, node: str, attempt: int) -> bool:
    """Does the state still want this attempt of the execution to run on this node?"""
    return (record is not None and record["status"] == IN_PROGRESS and record["workerId"] == node
            and record["attempt"] == attempt)


def reconcile(state: State, node: str, *, running: dict[int, int], done: set[tuple[int, int]],
              installing: set[str], uninstalling: set[str], incarnation: str = "") -> Instructions:
    """Compare the state's wishes for `node` with what runs here.

    running: execution id -> attempt of each local run; done: (id, attempt) that ended here and whose
    report is on its way, so they are not started again. incarnation: this run of the node; an attempt
    placed on an earlier run (before a crash or restart) is not started again but reported lost, so that
    it is retried under the activity's maxAttempts like any other lost attempt.

    Reads only this node's executions (the state's index of slots by node), never all of them: its cost is
    O(slots + running + activities), however long the queue.
    """
    out = Instructions()
    for exec_id, attempt in running.items():
        if not wanted_here(state.executions.get(exec_id), node, attempt):
            out.stop.append(exec_id)
    for exec_id in sorted(state.execution_table.on_node(node)):
        record = state.executions[exec_id]
        if (record["status"] == IN_PROGRESS and record["workerId"] == node and exec_id not in running
                and (exec_id, record["attempt"]) not in done):
            if record.get("workerIncarnation", "") == incarnation:
                out.start.append(dict(record))
            else:
                out.lost.append(dict(record))
        elif (record.get("outputPending") and record["workerId"] == node and exec_id not in running
                and (exec_id, record["attempt"]) not in done and record.get("workerIncarnation", "") != incarnation):
            out.lost.append(dict(record))  # terminated while this node was down: its output is gone
    for name, installs in state.installations.items():
        inst = installs.get(node)
        if inst is None:
            continue
        if inst["status"] == INSTALLING and name not in installing:
            out.install.append(dict(state.activities[name]))
        elif inst["status"] == UNINSTALLING and name not in uninstalling:
            out.uninstall.append(name)
    return out
