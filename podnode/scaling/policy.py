"""Scaling policy: parse a policy's rules and decide what to launch or destroy. Pure: no I/O, no clock.

A policy is text ``k=v,k=v`` (the original POD API's format), e.g. ``minWorkers=3,maxWorkers=10,maxWait=60000``.
`parse_rules` turns it into a dict or raises `PolicyError` with a message a person can act on (an HTTP 400);
`format_rules` writes the canonical text back. The known keys, their types, ranges and units are in `RULES`.

The Raft leader calls `decide(rules, situation)` on an interval and carries out the returned `Decision`
(launch that many nodes, destroy those ids), then passes `Decision.idle_readings` back in the next
`Situation`. The rules, applied in this order:

1. Idle counters are updated on every call, whatever is decided: a node idle (busy == 0) for at least
   ``terminationTime`` gets +1, every other node goes back to 0, and nodes no longer present are dropped.
   Without ``terminationTime`` all counters stay at 0.
2. Cooldown: if ``last_action_s`` is set and ``now_s - last_action_s < cooldown/1000``, nothing is done; the
   reason says how many seconds are left.
3. ``count`` = nodes up + launches not yet joined; ``held`` = ``count`` + the nodes that still exist but are
   not up (draining, or launched and lost but not destroyed yet): every server the cluster still has.
   With ``fixedWorkers=N`` that rule governs alone: below N, launch ``N - count`` (never letting ``held``
   pass N); above N, destroy one surplus node per call (removable, not the leader, busy == 0, the longest
   idle first).
4. Otherwise the launch wanted is the larger of:
   - below ``minWorkers``: ``minWorkers - count``;
   - scale out: the predicted wait ``sum(queue_runtime_s) / max(1, slots up + launching * new_node_slots)``
     exceeds ``maxWait/1000``: the smallest k whose predicted wait (k more nodes' slots added) is within
     ``maxWait/1000``. Without ``maxWait`` the queue never triggers a launch.
   and it is capped at ``maxWorkers - held``: nothing is launched while the cluster holds ``maxWorkers``
   servers, draining and lost ones included (they still exist, and a lost one may come back).
5. Cost: a launch of k never lets ``prices held + (launching + k) * new_node_price`` exceed ``maxCostPerHour``;
   k is reduced, and the reason says when the cap cut or blocked a wanted launch. This holds for
   ``fixedWorkers`` too.
6. Scale in, only when nothing is wanted and the queue is empty: one node per call, among those removable,
   not the leader, busy == 0 and idle for ``IDLE_READINGS_TO_SCALE_IN`` consecutive readings (non-voters
   before Raft voters, then the longest idle), and only while ``count > max(minWorkers, seed_nodes)``: the
   floor is what the user set, and never below the nodes the cluster was seeded with. Quorum is not the
   policy's business: launched nodes join as Raft observers, and a launched voter is taken out of Raft
   before it leaves (see scheduler.plan_drains). A node busy for a single reading starts counting again
   from 0, so a short burst of work prevents flapping.
7. The leader and busy nodes are never destroyed; static seed nodes (not removable) neither.
8. When no rule asks for action the reason is ``"no rule asks for a change"``; every Decision has a reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

IDLE_READINGS_TO_SCALE_IN = 3
COST_TOLERANCE = 1e-9  # prices are floats: 0.1 + 0.1 + 0.1 must still fit a cap of 0.3
NO_CHANGE = "no rule asks for a change"


class PolicyError(ValueError):
    """str(e) is a message a person can act on (becomes an HTTP 400)."""


@dataclass(frozen=True, kw_only=True)
class RuleSpec:
    """One known rule: its value type, inclusive range, unit and a one-line meaning."""

    type: type
    min: int | float
    max: int | float
    unit: str
    meaning: str

    def describe_range(self) -> str:
        """'a whole number from 0 to 1000 nodes' -- for error messages."""
        kind = "a whole number" if self.type is int else "a number"
        return f"{kind} from {_fmt_number(self.min)} to {_fmt_number(self.max)} {self.unit}"


_DAY_MS = 86_400_000

RULES: dict[str, RuleSpec] = {
    "fixedWorkers": RuleSpec(type=int, min=1, max=1000, unit="nodes",
                             meaning="keep exactly this many nodes (the other rules are ignored)"),
    "minWorkers": RuleSpec(type=int, min=0, max=1000, unit="nodes",
                           meaning="never fewer nodes than this"),
    "maxWorkers": RuleSpec(type=int, min=1, max=1000, unit="nodes",
                           meaning="never more nodes than this"),
    "maxWait": RuleSpec(type=int, min=0, max=_DAY_MS, unit="ms",
                        meaning="scale out when the predicted wait of the queue exceeds it"),
    "terminationTime": RuleSpec(type=int, min=0, max=_DAY_MS, unit="ms",
                                meaning="scale in a node idle that long"),
    "cooldown": RuleSpec(type=int, min=0, max=_DAY_MS, unit="ms",
                         meaning="at least this long between two scaling actions"),
    "maxCostPerHour": RuleSpec(type=float, min=0.0, max=1e6, unit="per hour",
                               meaning="never exceed this spend rate"),
}

_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# ---------------------------------------------------------------------------------------------- parsing


def _fmt_number(value: int | float) -> str:
    """Integers without a decimal point, other floats in their shortest exact form."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _known_keys() -> str:
    return ", ".join(RULES)


def _check_key(key: str, item: str, seen: dict[str, int | float]) -> RuleSpec:
    """The spec of a known, not yet given key, or PolicyError."""
    if not key:
        raise PolicyError(f"{item!r} has no rule name before '='; known rules: {_known_keys()}")
    if key not in RULES:
        close = [k for k in RULES if k.lower() == key.lower()]
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PolicyError(f"unknown rule {key!r}; {hint}known rules: {_known_keys()}")
    if key in seen:
        raise PolicyError(f"rule {key!r} is given twice; keep one")
    return RULES[key]


def _parse_value(key: str, raw: str, spec: RuleSpec) -> int | float:
    """The value of `key` in its type and range, or PolicyError naming the range and unit."""
    problem = f"{key} must be {spec.describe_range()} ({spec.meaning}); got {raw!r}"
    pattern = _INT_RE if spec.type is int else _FLOAT_RE
    if not pattern.fullmatch(raw):
        raise PolicyError(problem)
    value = spec.type(raw)
    if not spec.min <= value <= spec.max:
        raise PolicyError(problem)
    return value


def _check_combination(rules: dict[str, int | float]) -> None:
    """Rules that are fine alone but contradict each other."""
    if "fixedWorkers" in rules and ("minWorkers" in rules or "maxWorkers" in rules):
        raise PolicyError("fixedWorkers can't be combined with minWorkers or maxWorkers; "
                          "use either fixedWorkers alone or a minWorkers/maxWorkers range")
    low, high = rules.get("minWorkers"), rules.get("maxWorkers")
    if low is not None and high is not None and low > high:
        raise PolicyError(f"minWorkers ({low}) is greater than maxWorkers ({high}); "
                          "lower minWorkers or raise maxWorkers")


def parse_rules(text: str) -> dict[str, int | float]:
    """'k=v,k=v' -> dict, keys in the order given. Whitespace around items, keys and values is allowed.

    PolicyError for: empty text, an empty item or one without '=', an unknown key (the message names the
    known keys), a duplicate key, a non-number or out-of-range value (the message says the range and unit),
    minWorkers > maxWorkers, fixedWorkers together with minWorkers or maxWorkers.
    """
    if not text or not text.strip():
        raise PolicyError("no rules given; write them as name=value separated by commas, "
                          f"e.g. minWorkers=3,maxWorkers=10; known rules: {_known_keys()}")
    rules: dict[str, int | float] = {}
    for position, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            raise PolicyError(f"item {position} is empty; remove the extra comma")
        if "=" not in item:
            raise PolicyError(f"{item!r} has no '='; write each rule as name=value, e.g. minWorkers=3")
        key, raw = (part.strip() for part in item.split("=", 1))
        spec = _check_key(key, item, rules)
        rules[key] = _parse_value(key, raw, spec)
    _check_combination(rules)
    return rules


def format_rules(rules: dict) -> str:
    """Canonical 'k=v,...' in RULES order; parse_rules(format_rules(r)) == r for parsed rules."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise PolicyError(f"unknown rules {unknown}; known rules: {_known_keys()}")
    return ",".join(f"{key}={_fmt_number(rules[key])}" for key in RULES if key in rules)


# ---------------------------------------------------------------------------------------------- deciding


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """What the policy needs to know about one node that is up."""

    id: str
    slots: int
    busy: int                 # running executions now
    idle_for_s: float | None  # seconds since it last ran anything; None while busy
    is_leader: bool
    removable: bool           # launched by a provider (static seed nodes are never destroyed)
    hourly_price: float
    voter: bool = False       # a Raft voter (taking it away changes the Raft membership): destroyed last


@dataclass(frozen=True, kw_only=True)
class Situation:
    """The cluster as the leader sees it at one evaluation."""

    now_s: float
    nodes: tuple[NodeView, ...]           # nodes that are up (lost ones are not here)
    launching: int                        # launches asked for and not yet joined
    queue_runtime_s: tuple[float, ...]    # predicted run time of each waiting execution
    last_action_s: float | None           # when the last launch/destroy was decided
    idle_readings: dict[str, int]         # consecutive evaluations each node has been idle past terminationTime
    new_node_price: float                 # hourly price of one more node from the provider
    new_node_slots: int                   # slots of one more node
    seed_nodes: int = 0                   # static (not removable) nodes the cluster has, up or lost: the least
    absent: int = 0                       # nodes not up that still exist: draining, or launched and lost
    absent_price: float = 0.0             # their hourly price together (still billed)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do now. `idle_readings` must be passed back in the next Situation."""

    launch: int = 0
    destroy: tuple[str, ...] = ()
    reason: str = ""                      # always set: why this action, or why none
    idle_readings: dict[str, int]         # the updated counters to pass back next time


def node_count(s: Situation) -> int:
    """Nodes up plus launches not yet joined."""
    return len(s.nodes) + s.launching


def held_count(s: Situation) -> int:
    """Every server the cluster has: up, launching, draining, or launched, lost and not destroyed yet."""
    return node_count(s) + s.absent


def scale_in_floor(rules: dict, s: Situation) -> int:
    """Scale in stops at this many nodes: minWorkers, and never below the seed nodes."""
    return max(rules.get("minWorkers", 0), s.seed_nodes)


def predicted_wait_s(s: Situation, extra_nodes: int = 0) -> float:
    """Queue run time spread over the slots up, launching and `extra_nodes` more."""
    slots = sum(node.slots for node in s.nodes) + (s.launching + extra_nodes) * s.new_node_slots
    return sum(s.queue_runtime_s) / max(1, slots)


def update_idle_readings(rules: dict, s: Situation) -> dict[str, int]:
    """+1 for a node idle at least terminationTime, 0 for any other; absent nodes are dropped."""
    limit_ms = rules.get("terminationTime")
    readings: dict[str, int] = {}
    for node in s.nodes:
        idle = (limit_ms is not None and node.busy == 0 and node.idle_for_s is not None
                and node.idle_for_s >= limit_ms / 1000)
        readings[node.id] = s.idle_readings.get(node.id, 0) + 1 if idle else 0
    return readings


def cooldown_left_s(rules: dict, s: Situation) -> float:
    """Seconds before another action is allowed; 0 when free to act."""
    cooldown_ms = rules.get("cooldown")
    if cooldown_ms is None or s.last_action_s is None:
        return 0.0
    return max(0.0, cooldown_ms / 1000 - (s.now_s - s.last_action_s))


def _destroyable(s: Situation) -> list[NodeView]:
    """Nodes that may be destroyed (removable, not the leader, not busy): non-voters first (their leaving
    does not change the Raft membership), then the longest idle."""
    free = [node for node in s.nodes if node.removable and not node.is_leader and node.busy == 0]
    return sorted(free, key=lambda node: (node.voter, -(node.idle_for_s or 0.0), node.id))


def launches_within_cap(cap: float, spend: float, new_node_price: float, want: int) -> int:
    """How many of `want` launches keep the spend rate within `cap` (maxCostPerHour), spending `spend` per hour
    now (launches in flight included) and `new_node_price` per new node. The autoscaler cuts its launches with
    it; podnode/waiting.py says a waiting execution is held at the spend cap when it allows none."""
    limit = cap + COST_TOLERANCE
    if new_node_price <= 0:
        return want if spend <= limit else 0
    fits = max(0, math.floor((limit - spend) / new_node_price))
    while fits > 0 and spend + fits * new_node_price > limit:
        fits -= 1
    return min(want, fits)


def _affordable(rules: dict, s: Situation, want: int) -> tuple[int, str]:
    """The part of `want` launches that keeps spend within maxCostPerHour, and a note when it was cut."""
    cap = rules.get("maxCostPerHour")
    if cap is None or want <= 0:
        return want, ""
    spend = sum(node.hourly_price for node in s.nodes) + s.absent_price + s.launching * s.new_node_price
    k = launches_within_cap(cap, spend, s.new_node_price, want)
    if k == want:
        return k, ""
    return k, (f"maxCostPerHour={_fmt_number(cap)} allows {k} of {want} wanted launches "
               f"(spending {spend:.2f}/h now, {s.new_node_price:.2f}/h per new node)")


def _launch_decision(rules: dict, s: Situation, want: int, why: str, readings: dict[str, int]) -> Decision:
    """Launch `want` nodes for `why`, reduced by the cost cap."""
    k, cost_note = _affordable(rules, s, want)
    if k == 0:
        return Decision(reason=f"{why}, but {cost_note}", idle_readings=readings)
    reason = f"{why}: launching {k}" + (f"; {cost_note}" if cost_note else "")
    return Decision(launch=k, reason=reason, idle_readings=readings)


def _decide_fixed(rules: dict, s: Situation, readings: dict[str, int]) -> Decision:
    """fixedWorkers=N alone: launch up to N, or destroy one surplus idle node per call."""
    target, count, held = rules["fixedWorkers"], node_count(s), held_count(s)
    counted = f"{count} nodes ({len(s.nodes)} up, {s.launching} launching)"
    if count < target:
        if held >= target:
            return Decision(reason=f"fixedWorkers={target}, {counted}, but {s.absent} more not up (draining "
                                   f"or lost) make {held}: {NO_CHANGE}", idle_readings=readings)
        return _launch_decision(rules, s, min(target - count, target - held),
                                f"fixedWorkers={target}, {counted}", readings)
    if count == target:
        return Decision(reason=f"fixedWorkers={target} reached: {NO_CHANGE}", idle_readings=readings)
    candidates = _destroyable(s)
    if not candidates:
        return Decision(reason=f"fixedWorkers={target}, {counted}, but no removable, idle, non-leader "
                               f"node to destroy", idle_readings=readings)
    victim = candidates[0]
    return Decision(destroy=(victim.id,), idle_readings=readings,
                    reason=f"fixedWorkers={target}, {counted}: destroying {victim.id}, "
                           f"idle {victim.idle_for_s or 0:.0f} s")


def _scale_out_k(rules: dict, s: Situation, room: int) -> tuple[int, str]:
    """Nodes (at most `room`) that bring the predicted wait within maxWait, and why; (0, '') if none."""
    max_wait_ms = rules.get("maxWait")
    if max_wait_ms is None or not s.queue_runtime_s:
        return 0, ""
    limit_s, wait_s = max_wait_ms / 1000, predicted_wait_s(s)
    if wait_s <= limit_s:
        return 0, ""
    why = f"predicted wait {wait_s:.1f} s > maxWait {limit_s:g} s"
    if room <= 0:
        return 0, why
    if s.new_node_slots <= 0:
        return 0, f"{why}, but a new node has no slots"
    k = next((k for k in range(1, room + 1) if predicted_wait_s(s, k) <= limit_s), room)
    return k, f"{why} (with {k} more: {predicted_wait_s(s, k):.1f} s)"


def _wanted_launch(rules: dict, s: Situation) -> tuple[int, str]:
    """Launches wanted by minWorkers and maxWait, capped by maxWorkers, and why."""
    count, held = node_count(s), held_count(s)
    room = rules.get("maxWorkers", RULES["maxWorkers"].max) - held
    low = rules.get("minWorkers", 0)
    below = max(0, low - count)
    out, out_why = _scale_out_k(rules, s, room)
    whys = ([f"{count} nodes below minWorkers={low}"] if below else []) + ([out_why] if out_why else [])
    want = min(max(below, out), max(0, room))
    if whys and want == 0 and room <= 0:
        held_note = f" (with {s.absent} draining or lost)" if s.absent else ""
        return 0, f"{'; '.join(whys)}, but {held} nodes{held_note} already reach maxWorkers={held + room}"
    return want, "; ".join(whys)


def _decide_scale_in(rules: dict, s: Situation, readings: dict[str, int]) -> Decision:
    """Destroy the longest idle node idle long enough, while above max(minWorkers, seed nodes)."""
    ripe = [node for node in _destroyable(s) if readings.get(node.id, 0) >= IDLE_READINGS_TO_SCALE_IN]
    if not ripe:
        return Decision(reason=NO_CHANGE, idle_readings=readings)
    count, floor = node_count(s), scale_in_floor(rules, s)
    victim = ripe[0]
    if count <= floor:
        return Decision(idle_readings=readings,
                        reason=f"{victim.id} is idle past terminationTime, but {count} nodes is the floor "
                               f"max(minWorkers={rules.get('minWorkers', 0)}, {s.seed_nodes} seed nodes)="
                               f"{floor}: {NO_CHANGE}")
    return Decision(destroy=(victim.id,), idle_readings=readings,
                    reason=f"{victim.id} idle {victim.idle_for_s or 0:.0f} s for {readings[victim.id]} "
                           f"readings past terminationTime={rules['terminationTime']} ms: destroying it")


def decide(rules: dict, s: Situation) -> Decision:
    """What to launch or destroy now under `rules` (as parse_rules returns them); see the module docstring."""
    readings = update_idle_readings(rules, s)
    left_s = cooldown_left_s(rules, s)
    if left_s > 0:
        return Decision(reason=f"cooldown: {left_s:.1f} s left of {rules['cooldown'] / 1000:g} s "
                               f"before the next scaling action", idle_readings=readings)
    if "fixedWorkers" in rules:
        return _decide_fixed(rules, s, readings)
    want, why = _wanted_launch(rules, s)
    if want > 0:
        return _launch_decision(rules, s, want, why, readings)
    if why:
        return Decision(reason=why, idle_readings=readings)
    if s.queue_runtime_s:
        return Decision(reason=f"{len(s.queue_runtime_s)} executions queued: {NO_CHANGE}",
                        idle_readings=readings)
    return _decide_scale_in(rules, s, readings)
