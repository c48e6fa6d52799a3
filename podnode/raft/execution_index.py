"""Indexes over the executions, kept by the state machine so that no entry, plan or page costs work in proportion
to the number of executions (Nomad's memdb indexes, by hand).

Derived data: never in the snapshot, rebuilt once when one is loaded, updated in the few places an execution's
status, node or pending output changes (ExecutionTable._set_status, _set_pending, exec_new, _delete). Every order
is a function of the records alone (ids, finish times), never of the history that built it, so a node that
loaded a snapshot orders exactly like one that applied every entry.

- ids by (activity or None, status): sorted lists, for pages and counts; the (activity, waiting) lists are the
  queues, first in first out (by id, as placement orders). Pages and counts of any status merge the few lists
  of each status (O(statuses · log n + limit)) rather than keep two more lists of every id: an execution costs
  two sorted-list entries, not four, in memory and in work per transition;
- ids holding a slot on each node (running, or terminated and still being stopped);
- ended executions whose result is ready and unread, by age (finish time, then id), per activity and in all:
  for expiry and bulk reads (not those a node collects for the request that submitted them);
- ids collected by each node (newExecution&wait: that node hands the result to its request), released when the
  node is lost, leaves or restarts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from itertools import islice
from typing import Any

from sortedcontainers import SortedList

from ..placement import holds_slot
from .lifecycle import EXECUTION_TRANSITIONS, TERMINAL, WAITING

Key = tuple[Any, str]   # (activity name or None, status)
STATUSES = tuple(EXECUTION_TRANSITIONS)


def result_ready(execution: dict[str, Any]) -> bool:
    """Ended, with its output recorded (not still coming from a terminated run), and for anyone to read (not
    collected by a node for the request that submitted it)."""
    return execution["status"] in TERMINAL and not execution.get("outputPending") and "collector" not in execution


def age(execution: dict[str, Any]) -> tuple[float, int]:
    """Sort key of an ended execution: its finish time (a malformed one counts as the oldest), then its id."""
    t = execution.get("finishTime")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or t != t:
        t = 0.0
    return (float(t), execution["id"])


class ExecutionIndex:
    def __init__(self) -> None:
        self.ids: dict[Key, SortedList] = {}               # (activity|None, status|None) -> ids, increasing
        self.on_node: dict[Any, dict[int, None]] = {}      # node -> ids holding a slot there
        self.ready: dict[Any, SortedList] = {}             # activity|None -> (finish time, id) of unread results
        self.collected: dict[Any, dict[int, None]] = {}    # node -> ids it collects (newExecution&wait)

    def rebuild(self, executions: Iterable[dict[str, Any]]) -> None:
        self.__init__()
        for execution in executions:
            self.add(execution)

    def add(self, execution: dict[str, Any]) -> None:
        exec_id, activity, status = execution["id"], execution["activityName"], execution["status"]
        for key in ((activity, status), (None, status)):
            ids = self.ids.get(key)
            if ids is None:
                ids = self.ids[key] = SortedList()
            ids.add(exec_id)
        if holds_slot(execution):
            self.on_node.setdefault(execution["workerId"], {})[exec_id] = None
        collector = execution.get("collector")
        if collector is not None:
            self.collected.setdefault(collector, {})[exec_id] = None
        if result_ready(execution):
            key = age(execution)
            for name in (activity, None):
                ready = self.ready.get(name)
                if ready is None:
                    ready = self.ready[name] = SortedList()
                ready.add(key)

    def remove(self, execution: dict[str, Any]) -> None:
        """Take the execution out, as indexed by its current fields (call before changing them)."""
        exec_id, activity, status = execution["id"], execution["activityName"], execution["status"]
        for key in ((activity, status), (None, status)):
            ids = self.ids[key]
            ids.remove(exec_id)
            if not ids and key[0] is not None:
                del self.ids[key]   # an activity's empty lists go: names come and go
        if holds_slot(execution):
            mine = self.on_node[execution["workerId"]]
            del mine[exec_id]
            if not mine:
                del self.on_node[execution["workerId"]]
        collector = execution.get("collector")
        if collector is not None:
            mine = self.collected[collector]
            del mine[exec_id]
            if not mine:
                del self.collected[collector]
        if result_ready(execution):
            key = age(execution)
            for name in (activity, None):
                ready = self.ready[name]
                ready.remove(key)
                if not ready and name is not None:
                    del self.ready[name]

    # ---- reads ------------------------------------------------------------------------------------
    def count(self, activity: str | None, status: str | None) -> int:
        if status is None:
            return sum(len(ids) for (name, _), ids in self._lists_of(activity))
        ids = self.ids.get((activity, status))
        return len(ids) if ids is not None else 0

    def _lists_of(self, activity: str | None) -> list[tuple[Key, SortedList]]:
        """The lists of the activity (or of all), one per status it has: at most len(EXECUTION_STATUSES)."""
        return [(key, ids) for key, ids in ((key, self.ids.get(key)) for key in self._keys(activity))
                if ids is not None]

    @staticmethod
    def _keys(activity: str | None) -> list[Key]:
        return [(activity, status) for status in STATUSES]

    def before(self, activity: str | None, status: str | None, exec_id: int) -> int:
        """How many ids of the activity and status (None: any) are below `exec_id`: O(log n). For the waiting
        status, the executions queued ahead of `exec_id` (the queues are first in first out by id)."""
        if status is None:
            return sum(ids.bisect_left(exec_id) for _, ids in self._lists_of(activity))
        ids = self.ids.get((activity, status))
        return ids.bisect_left(exec_id) if ids is not None else 0

    def queues(self) -> dict[str, SortedList]:
        """activity -> ids of its waiting executions, first in first out (non-empty lists only)."""
        return {key[0]: ids for key, ids in self.ids.items() if key[0] is not None and key[1] == WAITING and ids}

    def page(self, activity: str | None, status: str | None, after: int, limit: int) -> list[int]:
        """Up to `limit` ids greater than `after`, increasing: O(log n + limit), of any status: O(statuses · log n
        + limit · log statuses)."""
        if status is None:
            lists = [ids for _, ids in self._lists_of(activity)]
        else:
            ids = self.ids.get((activity, status))
            lists = [ids] if ids is not None else []
        above = [ids.irange(minimum=after, inclusive=(False, True)) for ids in lists]
        return list(islice(above[0] if len(above) == 1 else heapq.merge(*above), limit))

    def ended(self, activity: str | None, limit: int) -> list[int]:
        """Ids of unread results (of the activity, or of all), oldest first: O(limit)."""
        ready = self.ready.get(activity)
        if ready is None or limit <= 0:
            return []
        return [exec_id for _, exec_id in islice(ready, limit)]

    def oldest_ready(self, before: float, limit: int) -> list[int]:
        """Ids of unread results that finished before `before`, oldest first, at most `limit`."""
        ready = self.ready.get(None)
        if ready is None:
            return []
        out = []
        for t, exec_id in ready:
            if t >= before or len(out) >= limit:
                break
            out.append(exec_id)
        return out
