"""What the status page shows, as plain data: pure functions of the replicated state and of the node's own views,
and the two small histories a node keeps for it (throughput samples, the leader's scaling decisions).

Every read costs O(nodes + activities + shown items): the queue's head and the running executions are pages of
the state's execution index (at most `head` of each), counts come from the index, and the number of executions
that ever ended is derived from three O(1) figures (see ended_total). Nothing here loops over the executions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from .api import views
from .raft.lifecycle import IN_PROGRESS, NODE_LEFT_STATUS, WAITING
from .waiting import Facts, Waiting

HEAD = 20                  # executions shown of the queue's head, and of the running ones
ENDED = 10                 # recently ended executions shown
OUTPUT_TAIL_CHARS = 1500   # of a running execution's stdout and stderr, the last this many characters
ENDED_TAIL_CHARS = 200     # of a recently ended one's
INPUT_CHARS = 200          # of any execution's input
HISTORY = 300              # throughput samples kept: five minutes at one a second
DECISIONS = 10             # scaling decisions kept (distinct ones; a repeated decision only updates its time)


def ended_total(state: Any) -> int:
    """How many executions have ended since the cluster began, in O(1): every id handed out belongs to one that
    is waiting, running, ended and still held, or ended and deleted (only an ended execution is ever deleted)."""
    table = state.execution_table
    return (state.next_execution_id - 1) - table.index.count(None, WAITING) - table.index.count(None, IN_PROGRESS)


def counters(state: Any) -> tuple[int, int, int]:
    """(ended so far, waiting, running): what a throughput sample holds, in O(1)."""
    index = state.execution_table.index
    return ended_total(state), index.count(None, WAITING), index.count(None, IN_PROGRESS)


class Throughput:
    """A ring buffer of (time, ended so far, waiting, running), sampled once a second; series() turns it into
    executions finished per second and the queue's length over the last minutes."""

    def __init__(self, size: int = HISTORY):
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=size)

    def sample(self, now: float, ended: int, waiting: int, running: int) -> None:
        self.samples.append((now, ended, waiting, running))

    def series(self) -> list[dict[str, Any]]:
        points, previous = [], None
        for t, ended, waiting, running in self.samples:
            rate = None
            if previous is not None and t > previous[0]:
                # max: a node that loads a snapshot may count fewer ended ones than it did a moment ago
                rate = round(max(0, ended - previous[1]) / (t - previous[0]), 3)
            points.append({"t": views.ms(t), "finishedPerS": rate, "waiting": waiting, "running": running})
            previous = (t, ended)
        return points


class DecisionLog:
    """The leader's last distinct scaling decisions, newest first. The autoscaler decides every few seconds and
    mostly the same thing: a decision equal to the last one (launch, destroy, reason) only moves its lastAt."""

    def __init__(self, size: int = DECISIONS):
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def note(self, decision: dict[str, Any] | None) -> None:
        if not decision or "reason" not in decision:
            return
        at = views.ms(decision.get("at"))
        key = (decision.get("launch") or 0, tuple(decision.get("destroy") or ()), decision["reason"])
        if self.entries and self.entries[0]["key"] == key:
            self.entries[0]["lastAt"] = at
            return
        self.entries.appendleft({"key": key, "firstAt": at, "lastAt": at, "launch": key[0], "destroy": list(key[1]),
                                 "reason": decision["reason"]})

    def view(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in entry.items() if k != "key"} for entry in self.entries]


def read_cluster(state: Any, *, head: int = HEAD, ended: int = ENDED, facts: Facts | None = None) -> dict[str, Any]:
    """From the replicated state (read under the replica's lock): the queue's count and head (with facts, each
    with its waitingReason and queuePosition, as getExecutionStatus gives them), the running executions' count and
    records (the first `head` of each, oldest first), the `ended` newest ended executions whose result is unread,
    the activities with their installations and their own counts, and the active scaling policy."""
    table = state.execution_table
    counts = table.counts()
    queue = []
    waiting = Waiting(state, facts) if facts is not None else None
    for position, exec_id in enumerate(table.page(None, WAITING, 0, head), start=1):
        record = state.execution(exec_id)   # every field (a waiting record is kept compact)
        view = _without_output(views.execution(record, waiting=waiting.explain(record) if waiting else None))
        view["position"] = position   # its place in the cluster's queue (oldest first)
        queue.append(view)
    running = [state.execution(i) for i in table.page(None, IN_PROGRESS, 0, head)]
    # The newest ended executions whose result is unread: the tail of the index's list by finish time (a
    # SortedList: slicing its end is O(log n + ended)). Read results are gone from the state, so from here too.
    ready = table.index.ready.get(None)
    recent = [ended_view(state.executions[i]) for _, i in reversed(ready[-ended:])] if ready and ended > 0 else []
    activities = []
    for name in sorted(state.activities):
        view = views.activity(state.activity(name))
        mine = table.counts(name)
        view["waiting"], view["running"] = mine[WAITING], mine[IN_PROGRESS]
        activities.append(view)
    active = state.active_policy
    policy = {"name": active, "rules": dict(state.policies.get(active, {}).get("rules") or {})} if active else None
    return {"counts": counts, "queue": queue, "running": running, "ended": recent, "activities": activities,
            "policy": policy}


def _without_output(view: dict[str, Any]) -> dict[str, Any]:
    """An execution's view without its output, and its input cut to INPUT_CHARS (an input may be megabytes)."""
    view.pop("stdout", None)
    view.pop("stderr", None)
    if len(view["stdin"]) > INPUT_CHARS:
        view["stdin"], view["stdinTruncated"] = view["stdin"][:INPUT_CHARS], True
    return view


OUTPUT_KEYS = ("stdoutTail", "stderrTail")


def without_output(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary for a token that may not read results: the same, without any execution's output (the running
    ones' and the ended ones' tails), and saying so. The shared summary is not changed."""
    def strip(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in view.items() if k not in OUTPUT_KEYS} for view in views]
    running = summary.get("running")
    return {**summary, "outputHidden": True,
            "running": {**running, "shown": strip(running.get("shown", []))} if isinstance(running, dict) else running,
            "ended": strip(summary.get("ended") or [])}


def ended_view(record: dict[str, Any]) -> dict[str, Any]:
    """One ended execution: how it ended, where, how long it ran, and its output's tail."""
    view = views.execution(record)
    stdout, stderr = view["stdout"], view["stderr"]
    view = _without_output(view)
    start, end = record.get("startTime"), record.get("finishTime")
    view["runS"] = round(end - start, 1) if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
    view["stdoutTail"], view["stderrTail"] = stdout[-ENDED_TAIL_CHARS:], stderr[-ENDED_TAIL_CHARS:]
    return view


def running_view(record: dict[str, Any], output: tuple[str, str], now: float) -> dict[str, Any]:
    """One running execution as the page shows it: where, for how long, and the tail of its output."""
    view = _without_output(views.execution(record))
    start = record.get("startTime")
    view["elapsedS"] = round(max(0.0, now - start), 1) if isinstance(start, (int, float)) else None
    view["stdoutTail"], view["stderrTail"] = output[0][-OUTPUT_TAIL_CHARS:], output[1][-OUTPUT_TAIL_CHARS:]
    return view


def nodes_view(workers: Iterable[dict[str, Any]], *, leader: str | None, members: Iterable[str],
               this_node: str) -> list[dict[str, Any]]:
    """getWorkers' nodes with each one's role (leader, voter or observer: a node whose Raft address is not a
    member's), which one answers the page; those that left come last."""
    voters = set(members)
    out = []
    for worker in workers:
        role = "leader" if worker["id"] == leader else "voter" if worker["raftAddress"] in voters else "observer"
        out.append({**worker, "role": role, "self": worker["id"] == this_node})
    out.sort(key=lambda n: (n["status"] == NODE_LEFT_STATUS, str(n["id"])))
    return out


def summary(*, now: float, this_node: str, status: dict[str, Any], workers: dict[str, Any], members: Iterable[str],
            cluster: dict[str, Any], outputs: list[tuple[str, str]], leader_view: dict[str, Any],
            throughput: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole page's data. `status` is this node's /status, `workers` getWorkers', `cluster` read_cluster's,
    `outputs` the output so far of cluster["running"] (in order), `leader_view` what only the leader knows
    (its scaling decisions: leader_part's, or {"unknown": why})."""
    counts = cluster["counts"]
    return {
        "generatedAt": views.ms(now),
        "node": this_node,
        "role": status.get("role"),
        "leader": status.get("leader"),
        "hasQuorum": status.get("hasQuorum"),
        "term": status.get("term"),
        "nodes": nodes_view(workers["workers"], leader=status.get("leader"), members=members, this_node=this_node),
        "launching": workers.get("launching", []),
        "counts": counts,
        "queue": {"count": counts[WAITING], "head": cluster["queue"]},
        "running": {"count": counts[IN_PROGRESS],
                    "shown": [running_view(r, o, now) for r, o in zip(cluster["running"], outputs)]},
        "ended": cluster["ended"],
        "activities": cluster["activities"],
        "scaling": {"policy": cluster["policy"], **leader_view},
        "spend": {"perHour": workers.get("spendPerHour"), "soFar": workers.get("spentSoFar")},
        "throughput": throughput,
    }


def leader_part(status: dict[str, Any], decisions: DecisionLog) -> dict[str, Any]:
    """What only the leader knows, from its /status and its decision log: its last scaling decision (or why it
    makes none), the last distinct ones, and its last scheduling plan."""
    return {"lastDecision": _decision(status.get("scaling")), "decisions": decisions.view(),
            "lastPlan": status.get("lastPlan") or None, "from": status.get("node")}


def _decision(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    if not decision:
        return None
    view = dict(decision)
    if "at" in view:
        view["at"] = views.ms(view["at"])
    return view
