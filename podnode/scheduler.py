"""The leader's decisions, as a pure function: state and time in, the commands to propose out.

Like Nomad's scheduler, `plan` does no I/O; the state machine re-checks every decision when it applies
it, so a plan made on slightly stale state can at worst be partly refused, never applied wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable

from .raft import commands as C
from .raft.lifecycle import (APPROVED, IN_PROGRESS, INSTALLED, NODE_DRAINING_STATUS, NODE_LEFT_STATUS,
                             NODE_LOST_STATUS, NODE_UP_STATUS, TERMINAL, VERIFYING, WAITING)
from .raft.state import State


@dataclass(frozen=True, kw_only=True)
class Policy:
    result_ttl_s: float = 24 * 3600.0       # a finished result nobody read is dropped after this long
    request_id_ttl_s: float = 24 * 3600.0   # how long a newExecution requestId is remembered
    expiry_interval_s: float = 5.0          # the leader looks for expired records this often
    departed_grace_s: float = 2.0           # a static node that left goes out of Raft when it disconnects, or
                                            # this long after it left (it must learn it left first); below the
                                            # leader's fallback time, so a 2-voter cluster keeps its leader


def plan(state: State, now: float, *, live_nodes: Iterable[str], prefer: str | None = None,
         policy: Policy = Policy(), expire: bool = True) -> list[dict[str, Any]]:
    """Commands that move the cluster towards what the state asks for, in the order to propose them.
    expire=False leaves out the expiry scan (it reads every record; the leader runs it on an interval)."""
    live = up_nodes(state, live_nodes)
    busy = state.busy_slots()
    cmds: list[dict[str, Any]] = []
    installs = plan_installs(state, live, busy, prefer)
    if installs:
        cmds.append({"t": C.INSTALL_ASSIGN, "assignments": installs, "now": now})
    placements = plan_placements(state, live, busy, prefer)
    if placements:
        cmds.append({"t": C.EXEC_PLACE, "placements": placements, "now": now})
    expiry = plan_expiry(state, now, policy) if expire else None
    if expiry:
        cmds.append(expiry)
    return cmds


def up_nodes(state: State, reachable: Iterable[str]) -> list[str]:
    """Nodes that can take work: reachable now and not declared lost."""
    return sorted(n for n in reachable
                  if n in state.nodes and state.nodes[n].get("status", NODE_UP_STATUS) == NODE_UP_STATUS)


def plan_lost(state: State, now: float, *, silent_s: dict[str, float], lost_after_s: float) -> list[dict[str, Any]]:
    """Declare lost every node that has been unreachable longer than lost_after_s (silent_s: node -> seconds
    since the leader last reached it; the leader itself is never in it)."""
    return [{"t": C.NODE_LOST, "node": node, "now": now,
             "reason": f"node {node} was lost (unreachable for {silent:.1f} s)"}
            for node, silent in sorted(silent_s.items())
            if silent > lost_after_s and state.nodes.get(node, {}).get("status") in (NODE_UP_STATUS,
                                                                                        NODE_DRAINING_STATUS)]


def voter_target(state: State, *, max_voters: int) -> int:
    """How many Raft voters the cluster keeps: one per static node it has (up, draining or lost; the nodes it
    was seeded with or that joined by hand), at most max_voters, at least one. Launched nodes come and go:
    they join as observers and vote only in place of a lost voter, so scaling in never touches the quorum."""
    seeds = sum(1 for rec in state.nodes.values()
                if not rec.get("removable") and rec.get("status") != NODE_LEFT_STATUS)
    return max(1, min(max_voters, seeds))


def join_role(state: State, node: str, raft_addr: str, members: list[str], *, max_voters: int) -> str:
    """'voter' or 'observer' for a node asking to join: a member already is a voter; a launched node (a launch
    is recorded before its provider is called) is an observer; any other a voter while there is room."""
    if raft_addr in members:
        return "voter"
    if node in state.launches or state.nodes.get(node, {}).get("removable"):
        return "observer"
    return "voter" if len(members) < max_voters else "observer"


def plan_promotion(state: State, members: list[str], *, max_voters: int) -> tuple[str | None, list[str]]:
    """Keep the voters up to strength while observers can stand in: (observer to promote or None, Raft
    addresses of lost voters to take out of Raft first). A lost voter stays a member while nobody can replace
    it (it may come back); one change at a time. Static observers are promoted up to max_voters; a launched
    one only while the voters are fewer than voter_target (in place of a lost voter)."""
    by_addr = {rec["raftAddr"]: rec for rec in state.nodes.values()}
    gone = [a for a in members if by_addr.get(a, {}).get("status") in (NODE_LOST_STATUS, NODE_LEFT_STATUS)]
    busy = state.busy_slots()
    observers = sorted((bool(rec.get("removable")), busy.get(n, 0), n) for n, rec in state.nodes.items()
                       if rec.get("role") == "observer" and rec.get("status") == NODE_UP_STATUS)
    if not observers:
        return None, []
    if gone:
        return None, gone[:1]
    launched, _, first = observers[0]
    if len(members) >= max_voters or (launched and len(members) >= voter_target(state, max_voters=max_voters)):
        return None, []
    return first, []


def _ready_to_leave(state: State, now: float) -> list[str]:
    """Draining nodes with nothing running (or past their deadline: their work then moves)."""
    ready = []
    for node, rec in sorted(state.nodes.items()):
        if rec.get("status") != NODE_DRAINING_STATUS:
            continue
        busy = any(e["workerId"] == node and (e["status"] == IN_PROGRESS or e.get("outputPending"))
                   for e in state.executions.values())
        if not busy or now >= rec.get("drainDeadline", now):
            ready.append(node)
    return ready


def plan_drains(state: State, now: float, *, members: Collection[str]) -> list[dict[str, Any]]:
    """A draining node leaves once nothing runs on it any more, or at its deadline (its work then moves).
    A launched node that is still a Raft voter (members: the Raft addresses) waits: plan_raft_exits takes it
    out of Raft first, and it leaves on the next plan."""
    return [{"t": C.NODE_LEFT, "node": node, "now": now} for node in _ready_to_leave(state, now)
            if not (state.nodes[node].get("removable") and state.nodes[node]["raftAddr"] in members)]


def plan_raft_exits(state: State, now: float, *, members: Collection[str], connected: Collection[str],
                    policy: "Policy | None" = None) -> list[str]:
    """Raft addresses to take out of the Raft cluster now (before the plan is committed), in order:
    - a launched voter ready to leave, while it still answers: then the voters that stay are a majority of
      the new, smaller cluster whatever happens to the node afterwards (pysyncobj uses a new membership as
      soon as the leader appends it). A 2-voter cluster that lost its second voter first could never
      commit again; this way it shrinks to 1 voter with both alive. The node leaves on the next plan, and
      its provider destroys it;
    - nodes that left (plan_departed)."""
    ready = set(_ready_to_leave(state, now))
    first = [rec["raftAddr"] for n, rec in sorted(state.nodes.items())
             if n in ready and rec.get("removable") and rec["raftAddr"] in members]
    return first + plan_departed(state, now, members=members, connected=connected, policy=policy or Policy())


def plan_departed(state: State, now: float, *, members: Collection[str], connected: Collection[str],
                  policy: "Policy") -> list[str]:
    """Raft addresses of nodes that left and are still members. A static node is let go before it goes out
    of Raft, so that it learns it left (from the log) and stops by itself: it is taken out once it has
    disconnected (stopped), or departed_grace_s after it left. A launched one goes at once (its provider
    destroys it)."""
    return [rec["raftAddr"] for _, rec in sorted(state.nodes.items())
            if rec.get("status") == NODE_LEFT_STATUS and rec["raftAddr"] in members
            and (rec.get("removable") or rec["raftAddr"] not in connected
                 or now - rec.get("leftAt", now) >= policy.departed_grace_s)]


def _rank(node: str, free: int, prefer: str | None) -> tuple:
    """Most free slots first; on a tie the preferred node (the leader: it learns of commits first)."""
    return (-free, node != prefer, node)


def plan_installs(state: State, live: list[str], busy: dict[str, int], prefer: str | None) -> list[list[str]]:
    """Verify a new activity on ONE node; once approved, install it on every other live node."""
    assignments: list[list[str]] = []
    for name, activity in state.activities.items():
        installs = state.installations.get(name, {})
        if activity["status"] == VERIFYING and not installs and live:
            node = min(live, key=lambda n: _rank(n, state.nodes[n]["slots"] - busy.get(n, 0), prefer))
            assignments.append([name, node])
        elif activity["status"] == APPROVED:
            assignments.extend([name, node] for node in live if node not in installs)
    return assignments


def plan_placements(state: State, live: list[str], busy: dict[str, int],
                    prefer: str | None) -> list[list[Any]]:
    """Place waiting executions first-in first-out on live nodes with a free slot and a finished install."""
    free = {n: state.nodes[n]["slots"] - busy.get(n, 0) for n in live}
    free = {n: f for n, f in free.items() if f > 0}
    placements: list[list[Any]] = []
    if not free:
        return placements
    waiting = sorted(i for i, e in state.executions.items() if e["status"] == WAITING)
    for exec_id in waiting:
        node = _best_node(state, state.executions[exec_id]["activityName"], free, prefer)
        if node is None:
            continue
        placements.append([exec_id, node])
        free[node] -= 1
        if free[node] == 0:
            del free[node]
            if not free:
                break
    return placements


def _best_node(state: State, activity: str, free: dict[str, int], prefer: str | None) -> str | None:
    installs = state.installations.get(activity, {})
    candidates = [n for n in free if installs.get(n, {}).get("status") == INSTALLED]
    return min(candidates, key=lambda n: _rank(n, free[n], prefer)) if candidates else None


def place_new(state: State, activity: str, *, live_nodes: Iterable[str], prefer: str | None = None) -> str | None:
    """Where a new execution should start at once, proposed with newExecution itself so that an idle
    cluster needs no separate placement entry; None when it must queue (the state re-checks either way)."""
    if any(e["status"] == WAITING for e in state.executions.values()):
        return None  # first in, first out: the queue goes first
    busy = state.busy_slots()
    free = {n: state.nodes[n]["slots"] - busy.get(n, 0) for n in up_nodes(state, live_nodes)}
    return _best_node(state, activity, {n: f for n, f in free.items() if f > 0}, prefer)


def plan_expiry(state: State, now: float, policy: Policy) -> dict[str, Any] | None:
    """Drop results nobody read within the time-to-live, and forget old request ids."""
    horizon = now - policy.result_ttl_s
    ids = [i for i, e in state.executions.items()
           if e["status"] in TERMINAL and (e["finishTime"] or now) < horizon and not e.get("outputPending")]
    rid_horizon = now - policy.request_id_ttl_s
    old_rids = any(t < rid_horizon for _, t in state.request_ids.values())
    if not ids and not old_rids:
        return None
    return {"t": C.EXEC_EXPIRE, "ids": ids, "requestIdsBefore": rid_horizon if old_rids else None, "now": now}
