"""Why a waiting execution waits, and how many waiting executions the scheduler places before it: the
`waitingReason` and `queuePosition` of getExecutionStatus and getAllExecutions.

Pure: the replicated state and the few facts the answering node holds (Facts) in, plain words out; no I/O,
no clock. The words come from the rules the leader decides with, read from the same places:
- placement.py: a node takes work while it is up; an execution runs where its activity is installed, in a
  free slot; waiting executions start first in, first out by id across the activities that can run
  (placement.oldest_first), an activity that no node can run holding back none of the others;
- the install plan (placement.plan_installs): a verifying activity is installed on one node first, an
  approved one then on every node that takes work; a failed install stays failed on its node;
- the node and launch records: launches in flight (replicated before the provider is called, with
  launchedAt), and the servers the cluster holds as the state machine counts them for the launch cap
  (membership.held_nodes);
- the scaling policy's caps, with its own cost rule (policy.launches_within_cap).

What the state does not hold, and how it is taken instead:
- whether there is a leader: only the answering node knows (its Raft view); without one nothing is placed;
- which nodes the leader reaches: on the leader, the set it plans with (Facts.live); on any other node the
  nodes the state says are up (the leader declares one it cannot reach lost within node_lost_after_s);
- the autoscaler's last decision: it lives on the leader and is made again every few seconds, so it is not
  replicated (a log entry every evaluation, written by every node, for a read-only hint). What can hold an
  execution back on the scaling side is computed from replicated facts instead: launches in flight, the
  active policy's maxWorkers / fixedWorkers against the servers held, its maxCostPerHour against their
  prices. Only the price of one more node is local: each node with a provider asks it at start, and a node
  that does not know it claims the spend cap only when the nodes held already reach it.

Cost: per activity O(nodes), once per answer (cached); per execution O(log n) to count those ahead, plus
O(log n) per activity that no node can run (Waiting.position). Never a loop over the executions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import placement
from .raft.lifecycle import (
    APPROVED,
    FAILED,
    INSTALLING,
    NODE_DRAINING_STATUS,
    NODE_LEFT_STATUS,
    NODE_LOST_STATUS,
    NODE_UP_STATUS,
    VERIFYING,
    WAITING,
)
from .raft.membership import held_nodes, is_held
from .scaling.policy import launches_within_cap

NO_QUORUM = "no leader: the cluster has no quorum"


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What the answering node knows beyond the replicated state."""
    now: float                            # seconds since the epoch, like the replicated times
    has_leader: bool = True               # this node knows a leader (Raft): else nothing is placed
    leader: str | None = None             # its node id: the plan prefers it on a tie (placement.rank)
    live: frozenset[str] | None = None    # on the leader: the nodes it reaches (it plans with them); None: the up ones
    scaling: bool = False                 # this node has a provider: the active policy launches nodes
    new_node_price: float | None = None   # per hour, of one more node from that provider; None: not known (yet)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _names(nodes: list[str], most: int = 3) -> str:
    shown = ", ".join(nodes[:most])
    return shown + (f" and {len(nodes) - most} more" if len(nodes) > most else "")


def _age(now: float, since: Any) -> str:
    if not isinstance(since, (int, float)) or isinstance(since, bool):
        return ""
    return f" for {max(0.0, now - since):.0f} s"


def _number(value: float) -> str:
    return f"{value:g}"


class Waiting:
    """Explains the waiting executions of one state, as the facts see it. Build one per answer (a page shares
    it: what is known about an activity is computed once), read under the replica's lock."""

    def __init__(self, state: Any, facts: Facts) -> None:
        self.state, self.facts = state, facts
        reachable = state.nodes if facts.live is None else facts.live
        self.live = placement.up_nodes(state.nodes, reachable)   # the nodes the plan places on
        self._busy: dict[str, int] | None = None
        self._blocked: list[str] | None = None
        self._scaling: str | None = None
        self._activities: dict[str, Any] = {}   # activity -> what _about found

    # ---- the two fields -----------------------------------------------------------------------------
    def explain(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """{"waitingReason", "queuePosition"} of a waiting execution; None for any other."""
        if record.get("status") != WAITING:
            return None
        position = self.position(record["id"], record["activityName"])
        return {"waitingReason": self.reason(record["activityName"], position), "queuePosition": position}

    def position(self, exec_id: int, activity: str) -> int:
        """Waiting executions the scheduler places before this one (0: next): those with a smaller id, of its
        own activity and of every activity some live node can run (placement.oldest_first's merge skips the
        others). Exact while every node able to run one can run all (the usual case: an approved activity is
        installed on every node); O(log n) per activity that no live node can run, plus O(log n)."""
        index = self.state.execution_table.index
        ahead = index.before(None, WAITING, exec_id)
        for name in self.blocked():
            if name != activity:
                ahead -= index.before(name, WAITING, exec_id)
        return ahead

    def reason(self, activity: str, position: int) -> str:
        if not self.facts.has_leader:
            return NO_QUORUM
        known = self._activities.get(activity)
        if known is None:
            known = self._activities[activity] = self._about(activity)
        if isinstance(known, str):
            return known
        room, total, free_node, rest = known
        if position < room:
            return f"about to start: a slot is free on {free_node}"
        slots = f"all {_plural(total, 'slot')} busy" if not room else f"{total - room} of {total} slots busy"
        return "; ".join([f"{slots}, {position} ahead of it", *rest])

    def _about(self, activity: str) -> str | tuple[int, int, str | None, list[str]]:
        """What holds the activity's executions back, the same for all of them (once per answer): the reason
        itself, or (free slots where it is installed, their total, the best node with one, what follows the
        slots' count)."""
        record = self.state.activities.get(activity)
        if record is None or record["status"] not in (VERIFYING, APPROVED):
            status = "gone" if record is None else record["status"]
            return f"activity {activity} is {status}: its executions will not run"   # ended with it, in the state
        scaling = self.scaling()
        have = placement.installed_on(self.state.installations, activity, self.live)
        if not have:
            return "; ".join(self._not_runnable(activity, record) + ([scaling] if scaling else []))
        free = placement.free_slots(self.state.nodes, have, self.busy)
        best = min(free, key=lambda n: placement.rank(n, free[n], self.facts.leader)) if free else None
        total = sum(self.state.nodes[n]["slots"] for n in have)
        installing = self._installing_elsewhere(activity, have)
        if not total:   # nodes started with --slots 0 run nothing
            return "; ".join(part for part in (f"every node that has it installed has no slots ({_names(have)})",
                                               installing, scaling) if part)
        return sum(free.values()), total, best, [part for part in (installing, scaling) if part]

    # ---- what is known about the cluster ----------------------------------------------------------------
    @property
    def busy(self) -> dict[str, int]:
        if self._busy is None:
            self._busy = self.state.busy_slots()
        return self._busy

    def blocked(self) -> list[str]:
        """Activities with waiting executions that no live node can run (not installed on any)."""
        if self._blocked is None:
            installations = self.state.installations
            self._blocked = [name for name in self.state.execution_table.queues()
                             if not placement.installed_on(installations, name, self.live)]
        return self._blocked

    def _install_status(self, activity: str, node: str) -> str | None:
        return self.state.installations.get(activity, {}).get(node, {}).get("status")

    def _installing(self, activity: str, nodes: list[str]) -> str:
        """'n2 for 4 s, n3 for 3 s' (how long each install has run)."""
        installs = self.state.installations.get(activity, {})
        return _names([f"{n}{_age(self.facts.now, installs[n].get('since'))}" for n in nodes])

    def _installing_elsewhere(self, activity: str, have: list[str]) -> str:
        """While the nodes that have it are full: the live nodes with free slots still installing it."""
        free = [n for n in placement.free_slots(self.state.nodes, self.live, self.busy) if n not in have]
        installing = [n for n in free if self._install_status(activity, n) == INSTALLING]
        if not installing:
            return ""
        where = "every free node" if len(installing) == len(free) else "free nodes"
        return f"activity still installing on {where} ({self._installing(activity, installing)})"

    def _not_runnable(self, activity: str, record: dict[str, Any]) -> list[str]:
        """Why no live node can run the activity: its installs on the live nodes, or the nodes' states."""
        if not self.live:
            return [self._no_live_node(activity)]
        live = self.live
        installing = [n for n in live if self._install_status(activity, n) == INSTALLING]
        if record["status"] == VERIFYING:
            if installing:
                return [f"activity being verified: installing on {self._installing(activity, installing)}"]
            first = min(live, key=lambda n: placement.rank(n, self.state.nodes[n]["slots"] - self.busy.get(n, 0),
                                                           self.facts.leader))   # as plan_installs chooses
            return [f"activity not installed on any node yet: its verification is about to start on {first}"]
        parts = []
        if installing:
            free = placement.free_slots(self.state.nodes, live, self.busy)
            nodes = self._installing(activity, installing)
            parts.append(f"activity still installing on every free node ({nodes})"
                         if free and set(free) <= set(installing) else f"activity still installing on {nodes}")
        unassigned = [n for n in live if self._install_status(activity, n) is None]
        if unassigned:
            parts.append(f"activity not installed yet on {_names(unassigned)}: its install is about to start")
        failed = [n for n in live if self._install_status(activity, n) == FAILED]
        if failed:
            installs = self.state.installations[activity]
            errors = _names([f"{n}: {installs[n].get('errorDescription') or 'no reason given'}" for n in failed], 2)
            where = "every node that takes work" if len(failed) == len(live) else _plural(len(failed), "node")
            parts.append(f"installation failed on {where} ({errors})")
        if not parts:   # uninstalling on every live node: cannot happen while the activity is not deleted
            parts.append("activity not installed on any node that takes work")
        away = self._installed_away(activity)
        if away:
            parts.append(away)
        return parts

    def _node_word(self, node: str) -> str:
        status = self.state.nodes[node].get("status", NODE_UP_STATUS)
        return "unreachable from the leader" if status == NODE_UP_STATUS else status

    def _installed_away(self, activity: str) -> str:
        """The nodes where it is installed that take no work (draining, lost or unreachable), if any."""
        away = [n for n in sorted(self.state.nodes)
                if n not in self.live and placement.is_installed(self.state.installations, activity, n)
                and self.state.nodes[n].get("status") != NODE_LEFT_STATUS]
        if not away:
            return ""
        words = {self._node_word(n) for n in away}
        if len(words) == 1:
            return f"every node able to run it is {words.pop()} ({_names(away)})"
        return "every node able to run it takes no work (" + _names([f"{n} {self._node_word(n)}" for n in away]) + ")"

    def _no_live_node(self, activity: str) -> str:
        away = self._installed_away(activity)
        if away:
            return away
        others = [n for n, rec in sorted(self.state.nodes.items())
                  if rec.get("status") in (NODE_UP_STATUS, NODE_DRAINING_STATUS, NODE_LOST_STATUS)]
        if not others:
            return "no node in the cluster"
        return "no node takes work (" + _names([f"{n} {self._node_word(n)}" for n in others]) + ")"

    def scaling(self) -> str:
        """What the scaling side does about it: launches in flight, or the active policy's caps reached."""
        if self._scaling is None:
            self._scaling = self._launching() or self._capped()
        return self._scaling

    def _launching(self) -> str:
        launches = self.state.launches
        if not launches:
            return ""
        order = sorted(launches, key=lambda n: (launches[n].get("launchedAt") or 0.0, n))
        return f"scaling out: {_names(order)} launching{_age(self.facts.now, launches[order[0]].get('launchedAt'))}"

    def _capped(self) -> str:
        """'at maxWorkers=4 and the spend cap (...)' when the active policy may launch no more nodes."""
        state = self.state
        if not self.facts.scaling or not state.active_policy or state.active_policy not in state.policies:
            return ""
        rules = state.policies[state.active_policy]["rules"]
        caps = []
        if "fixedWorkers" in rules:
            up = sum(1 for rec in state.nodes.values() if rec.get("status", NODE_UP_STATUS) == NODE_UP_STATUS)
            if up + len(state.launches) >= rules["fixedWorkers"]:
                caps.append(f"fixedWorkers={_number(rules['fixedWorkers'])}")
        elif "maxWorkers" in rules and held_nodes(state.nodes, state.launches) >= rules["maxWorkers"]:
            caps.append(f"maxWorkers={_number(rules['maxWorkers'])}")
        cap = rules.get("maxCostPerHour")
        if cap is not None:
            price = self.facts.new_node_price or 0.0
            spend = (sum(float(rec.get("hourlyPrice") or 0.0) for rec in state.nodes.values() if is_held(rec))
                     + len(state.launches) * price)
            if launches_within_cap(cap, spend, price, 1) == 0:
                caps.append(f"the spend cap (maxCostPerHour={_number(cap)}, spending {spend:.2f}/h)")
        return ("at " + " and ".join(caps)) if caps else ""


def explain(state: Any, record: dict[str, Any], facts: Facts) -> dict[str, Any] | None:
    """waitingReason and queuePosition of one execution (None unless it waits)."""
    return Waiting(state, facts).explain(record)
