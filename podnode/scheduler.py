"""The leader's decisions, as pure functions: state and time in, the commands to propose out.

Like Nomad's scheduler, `plan` does no I/O. Where work goes is decided by the placement rules
(podnode/placement.py), and the state machine re-checks every placement with the same rules when it applies
it, so a plan made on slightly stale state can at worst be partly refused, never applied wrongly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from . import placement
from .raft import commands as C
from .raft.lifecycle import (
    NODE_DRAINING_STATUS,
    NODE_LEFT_STATUS,
    NODE_LOST_STATUS,
    NODE_TRANSITIONS,
    NODE_UP_STATUS,
    can_move,
)
from .raft.state import State


@dataclass(frozen=True, kw_only=True)
class Retention:
    """How long the cluster keeps what nobody asks for any more: results, request ids, departed members."""
    result_ttl_s: float = 24 * 3600.0       # a finished result nobody read is dropped after this long
    request_id_ttl_s: float = 24 * 3600.0   # how long a newExecution requestId is remembered
    expiry_interval_s: float = 5.0          # the leader looks for expired records this often
    expire_batch: int = 5000                # at most this many results expire per command (the rest next time)
    departed_grace_s: float = 2.0           # a static node that left goes out of Raft when it disconnects, or
                                            # this long after it left (it must learn it left first); below the
                                            # leader's fallback time, so a 2-voter cluster keeps its leader


def plan(state: State, now: float, *, live_nodes: Iterable[str], prefer: str | None = None,
         retention: Retention = Retention(), expire: bool = True) -> list[C.Command]:
    """Commands that move the cluster towards what the state asks for, in the order to propose them.
    expire=False leaves out the expiry scan (it reads every record; the leader runs it on an interval)."""
    live = up_nodes(state, live_nodes)
    busy = state.busy_slots()
    cmds: list[C.Command] = []
    installs = placement.plan_installs(activities=state.activities, installations=state.installations,
                                       nodes=state.nodes, live=live, busy=busy, prefer=prefer)
    if installs:
        cmds.append(C.InstallAssign(assignments=installs, now=now))
    placements = placement.plan_placements(queues=state.execution_table.queues(), installations=state.installations,
                                           nodes=state.nodes, live=live, busy=busy, prefer=prefer)
    if placements:
        cmds.append(C.ExecPlace(placements=placements, now=now))
    expiry = plan_expiry(state, now, retention) if expire else None
    if expiry:
        cmds.append(expiry)
    return cmds


def up_nodes(state: State, reachable: Iterable[str]) -> list[str]:
    """Nodes that can take work: reachable now and up (not draining, lost or left)."""
    return placement.up_nodes(state.nodes, reachable)


def plan_lost(state: State, now: float, *, silent_s: dict[str, float], lost_after_s: float) -> list[C.NodeLost]:
    """Declare lost every node that has been unreachable longer than lost_after_s (silent_s: node -> seconds
    since the leader last reached it; the leader itself is never in it)."""
    return [C.NodeLost(node=node, now=now, reason=f"node {node} was lost (unreachable for {silent:.1f} s)")
            for node, silent in sorted(silent_s.items())
            if silent > lost_after_s and can_move(NODE_TRANSITIONS, state.nodes.get(node, {}).get("status"),
                                                  NODE_LOST_STATUS)]


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
    draining = [(node, rec) for node, rec in sorted(state.nodes.items()) if rec.get("status") == NODE_DRAINING_STATUS]
    busy = state.busy_slots() if draining else {}
    return [node for node, rec in draining if not busy[node] or now >= rec.get("drainDeadline", now)]


def plan_drains(state: State, now: float, *, members: Collection[str]) -> list[C.NodeLeft]:
    """A draining node leaves once nothing runs on it any more, or at its deadline (its work then moves).
    A launched node that is still a Raft voter (members: the Raft addresses) waits: plan_raft_exits takes it
    out of Raft first, and it leaves on the next plan."""
    return [C.NodeLeft(node=node, now=now) for node in _ready_to_leave(state, now)
            if not (state.nodes[node].get("removable") and state.nodes[node]["raftAddr"] in members)]


def plan_raft_exits(state: State, now: float, *, members: Collection[str], connected: Collection[str],
                    retention: Retention | None = None) -> list[str]:
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
    return first + plan_departed(state, now, members=members, connected=connected,
                                 retention=retention or Retention())


def plan_departed(state: State, now: float, *, members: Collection[str], connected: Collection[str],
                  retention: Retention) -> list[str]:
    """Raft addresses of nodes that left and are still members. A static node is let go before it goes out
    of Raft, so that it learns it left (from the log) and stops by itself: it is taken out once it has
    disconnected (stopped), or departed_grace_s after it left. A launched one goes at once (its provider
    destroys it)."""
    return [rec["raftAddr"] for _, rec in sorted(state.nodes.items())
            if rec.get("status") == NODE_LEFT_STATUS and rec["raftAddr"] in members
            and (rec.get("removable") or rec["raftAddr"] not in connected
                 or now - rec.get("leftAt", now) >= retention.departed_grace_s)]


def place_new(state: State, activity: str, *, live_nodes: Iterable[str], prefer: str | None = None) -> str | None:
    """Where a new execution should start at once, proposed with newExecution itself so that an idle
    cluster needs no separate placement entry; None when it must queue (the state re-checks either way)."""
    table = state.execution_table
    return placement.place_new(activity, queued=table.waiting, installations=state.installations,
                               nodes=state.nodes, live=up_nodes(state, live_nodes),
                               busy=table.busy_slots() if not table.waiting else {}, prefer=prefer)


def plan_expiry(state: State, now: float, retention: Retention) -> C.ExecExpire | None:
    """Drop results nobody read within the time-to-live (the oldest, at most retention.expire_batch per
    command), and forget old request ids. Reads the index of unread results by age and the oldest request id:
    O(batch), whatever the number of executions."""
    horizon = now - retention.result_ttl_s
    ids = state.execution_table.index.oldest_ready(horizon, retention.expire_batch)
    rid_horizon = now - retention.request_id_ttl_s
    oldest_rid = next(iter(state.request_ids.values()), None)
    old_rids = oldest_rid is not None and oldest_rid[1] < rid_horizon
    if not ids and not old_rids:
        return None
    return C.ExecExpire(ids=ids, requestIdsBefore=rid_horizon if old_rids else None, now=now)
