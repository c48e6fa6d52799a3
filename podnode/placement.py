"""Placement rules: which node may take which installation or execution, and which one should.

Pure functions of plain data (the replicated dicts of nodes, activities, installations and executions, and
the slots taken on each node), without the State class, I/O or a clock. The scheduler plans with them
(podnode/scheduler.py); the state machine re-checks every proposed placement with the same rules when it
applies it (Nomad's plan_apply), and refills a reporting node's freed slots with them (`pull`), so the two
can never disagree about what is allowed.

The rules: a node takes new work only while it is up (not draining, lost or left); an execution runs only
where its activity is installed, and only in a free slot (a running execution holds one, and so does a
terminated one until its node has stopped it); waiting executions start first in, first out, and a new one
never starts ahead of those already queued; a new activity is verified on one node and, once approved,
installed on every other; of the nodes allowed, the one with the most free slots is chosen, and on a tie the
preferred one (the leader: it learns of commits first), then the first by name.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

from .raft.lifecycle import APPROVED, IN_PROGRESS, INSTALLED, NODE_UP_STATUS, VERIFYING, WAITING

Records = Mapping[Any, dict[str, Any]]                      # id -> record (nodes, activities, executions)
Installations = Mapping[str, Mapping[str, dict[str, Any]]]   # activity name -> node -> installation
Queues = Mapping[str, Sequence[int]]   # activity name -> ids of its waiting executions, increasing (first in first out)


def takes_work(record: dict[str, Any]) -> bool:
    """A node takes new installs and executions only while it is up: not draining, lost or left."""
    return record.get("status", NODE_UP_STATUS) == NODE_UP_STATUS


def holds_slot(execution: dict[str, Any]) -> bool:
    """An execution holds its node's slot while it runs, and once terminated until the node has stopped it."""
    return execution["status"] == IN_PROGRESS or bool(execution.get("outputPending"))


def busy_slots(nodes: Records, executions: Records) -> dict[str, int]:
    """Slots taken on each node (every node has an entry)."""
    busy: dict[str, int] = {node: 0 for node in nodes}
    for execution in executions.values():
        node = execution.get("workerId")
        if node in busy and holds_slot(execution):
            busy[node] += 1
    return busy


def up_nodes(nodes: Records, reachable: Iterable[str]) -> list[str]:
    """Of the reachable nodes, those that take work, sorted."""
    return sorted(n for n in reachable if n in nodes and takes_work(nodes[n]))


def free_slots(nodes: Records, candidates: Iterable[str], busy: Mapping[str, int]) -> dict[str, int]:
    """Free slots on each candidate node that has any."""
    free = {n: nodes[n]["slots"] - busy.get(n, 0) for n in candidates}
    return {n: f for n, f in free.items() if f > 0}


def rank(node: str, free: int, prefer: str | None) -> tuple:
    """Sort key: most free slots first; on a tie the preferred node; then by name."""
    return (-free, node != prefer, node)


def is_installed(installations: Installations, activity: str, node: str) -> bool:
    return installations.get(activity, {}).get(node, {}).get("status") == INSTALLED


def installed_on(installations: Installations, activity: str, nodes: Iterable[str]) -> list[str]:
    """Of `nodes`, those where the activity is installed (in their order): where it may run."""
    installs = installations.get(activity, {})
    return [n for n in nodes if installs.get(n, {}).get("status") == INSTALLED]


def waiting_in_order(executions: Records) -> list[int]:
    """Ids of the waiting executions, first in first out (a scan: the state keeps the queues, see `queues`)."""
    return sorted(i for i, e in executions.items() if e["status"] == WAITING)


def queues(executions: Records) -> dict[str, list[int]]:
    """The queues recomputed from the records by a scan (the state machine keeps them in its index)."""
    out: dict[str, list[int]] = {}
    for exec_id in waiting_in_order(executions):
        out.setdefault(executions[exec_id]["activityName"], []).append(exec_id)
    return out


def oldest_first(queues: Queues, runnable: Callable[[str], bool]) -> Iterator[tuple[int, str]]:
    """(id, activity) of waiting executions, first in first out across the activities' queues, skipping the
    activities that are not `runnable` (asked again before each one: the caller uses up free slots as it goes).
    The order is the ids' (a merge of the queues): what is placed before an execution are the waiting ones
    with a smaller id of the activities that can run (podnode/waiting.py counts them for queuePosition).
    An activity found not runnable is dropped for the rest of the walk, so its queue is never walked: the cost
    is O((taken + activities) log activities), whatever the queues' lengths."""
    heap = [(ids[0], name, 0) for name, ids in queues.items() if len(ids)]
    heapq.heapify(heap)
    while heap:
        exec_id, name, pos = heap[0]
        if not runnable(name):
            heapq.heappop(heap)
            continue
        yield exec_id, name
        ids = queues[name]
        if pos + 1 < len(ids):
            heapq.heapreplace(heap, (ids[pos + 1], name, pos + 1))
        else:
            heapq.heappop(heap)


# ---- the state machine's checks: why a proposed placement is refused, None when it is allowed ----------
def why_not_install(name: str, node: str, *, activities: Records, installations: Installations,
                    nodes: Records) -> str | None:
    activity = activities.get(name)
    if activity is None:
        return "no such activity"
    if node not in nodes:
        return "no such node"
    if not takes_work(nodes[node]):
        return f"node is {nodes[node]['status']}"
    installs = installations[name]
    if node in installs:
        return "already assigned"
    if activity["status"] == VERIFYING and installs:
        return "already being verified on another node"
    if activity["status"] not in (VERIFYING, APPROVED):
        return f"activity is {activity['status']}"
    return None


def why_not_place(execution: dict[str, Any] | None, node: str, *, nodes: Records, installations: Installations,
                  busy: Mapping[str, int]) -> str | None:
    if execution is None:
        return "no such execution"
    if execution["status"] != WAITING:
        return f"execution is {execution['status']}"
    if node not in nodes:
        return "no such node"
    if not takes_work(nodes[node]):
        return f"node is {nodes[node]['status']}"
    if not is_installed(installations, execution["activityName"], node):
        return "activity not installed on node"
    if busy[node] >= nodes[node]["slots"]:
        return "node has no free slot"
    return None


# ---- choices: where work should go ----------------------------------------------------------------------
def best_node(installations: Installations, activity: str, free: Mapping[str, int],
              prefer: str | None) -> str | None:
    """Of the nodes with free slots (free: node -> free slots), the best one where the activity is installed."""
    candidates = installed_on(installations, activity, free)
    return min(candidates, key=lambda n: rank(n, free[n], prefer)) if candidates else None


def plan_installs(*, activities: Records, installations: Installations, nodes: Records, live: list[str],
                  busy: Mapping[str, int], prefer: str | None) -> list[list[str]]:
    """[activity, node] pairs to install: a new activity on ONE live node (to verify it); an approved one on
    every other live node (live: nodes that take work)."""
    assignments: list[list[str]] = []
    for name, activity in activities.items():
        installs = installations.get(name, {})
        if activity["status"] == VERIFYING and not installs and live:
            node = min(live, key=lambda n: rank(n, nodes[n]["slots"] - busy.get(n, 0), prefer))
            assignments.append([name, node])
        elif activity["status"] == APPROVED:
            assignments.extend([name, node] for node in live if node not in installs)
    return assignments


def plan_placements(*, queues: Queues, installations: Installations, nodes: Records, live: list[str],
                    busy: Mapping[str, int], prefer: str | None) -> list[list[Any]]:
    """[execution id, node] pairs: waiting executions first in first out, each on the best live node with a
    free slot and a finished install; one whose activity is installed on no such node keeps waiting without
    holding back those behind it. O((free slots + activities) log activities), not O(queue)."""
    free = free_slots(nodes, live, busy)
    placements: list[list[Any]] = []
    if not free:
        return placements
    choice: dict[str, str | None] = {}

    def runnable(activity: str) -> bool:
        choice[activity] = best_node(installations, activity, free, prefer)
        return choice[activity] is not None

    for exec_id, activity in oldest_first(queues, runnable):
        node = choice[activity]
        placements.append([exec_id, node])
        free[node] -= 1
        if free[node] == 0:
            del free[node]
            if not free:
                break
    return placements


def place_new(activity: str, *, queued: int, installations: Installations, nodes: Records,
              live: list[str], busy: Mapping[str, int], prefer: str | None) -> str | None:
    """The node a new execution of `activity` should start on at once, or None when it must queue (queued:
    how many executions wait)."""
    if queued:
        return None  # first in, first out: the queue goes first
    return best_node(installations, activity, free_slots(nodes, live, busy), prefer)


def pull(node: str, *, queues: Queues, installations: Installations, nodes: Records,
         busy: Mapping[str, int]) -> list[int]:
    """The waiting executions `node` should start in the slots it just freed: the oldest it can run, first in
    first out, as many as it has free slots (none if it does not take work). O(room log activities)."""
    record = nodes.get(node)
    if record is None or not takes_work(record):
        return []
    room = record["slots"] - busy[node]
    if room <= 0:
        return []
    mine = {name: ids for name, ids in queues.items() if is_installed(installations, name, node)}
    return [exec_id for exec_id, _ in islice(oldest_first(mine, lambda name: True), room)]
