"""The leader's scaling loop: evaluate the active policy (pure, policy.decide) and carry the decision
out through a provider, keeping launches, joins and departures in the replicated state.

The loop never waits on a provider: it only reads the state (briefly, under the replica lock) and commits
Raft commands; every provider call (launch, destroy, the price lookup) runs in a task of its own with a
timeout, so a slow or failing cloud delays neither this loop nor the manager's scheduling.

Launch: node_launched (committed first: counted as launching by every leader, and refused by the state
machine past maxWorkers) -> provider.launch -> node_launch_ref (the provider's handle) -> the node joins
as a Raft observer and registers. A launch that fails, or a node that has not registered within
join_timeout_s, is destroyed and recorded as a failed launch; after a failure the loop backs off
(backoff_first_s, doubling with each failure after a back-off up to backoff_max_s; launches that fail
together count once; a launched node that registers resets it).
Scale-in: node_drain -> the manager lets it leave once idle (a launched voter is taken out of Raft first)
-> provider.destroy. A launched node lost for destroy_lost_after_s is destroyed and marked left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import Unavailable
from ..raft import commands as C
from ..raft.bridge import CommandBridge
from ..raft.lifecycle import IN_PROGRESS, NODE_LEFT_STATUS, NODE_LOST_STATUS, NODE_UP_STATUS
from ..raft.membership import is_held
from ..raft.replica import Replica
from .policy import Decision, NodeView, Situation, decide
from .providers import Provider

log = logging.getLogger(__name__)


def runtime_estimate_s(state, activity: str, now: float) -> float:
    """How long one execution of the activity is expected to run: its mean so far; before any has finished,
    at least as long as its running ones have already run (and one second at the least)."""
    mean = state.activities.get(activity, {}).get("meanRuntimeS")
    if mean is not None:
        return float(mean)
    table = state.execution_table
    mine = (table.executions[i] for node in list(table.index.on_node) for i in table.on_node(node))  # slots held
    running = [now - e["startTime"] for e in mine
               if e["activityName"] == activity and e["status"] == IN_PROGRESS and e["startTime"] is not None]
    return max([1.0, *running])


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "the provider did not answer in time"
    return str(exc) or type(exc).__name__


class Autoscaler:
    """Every timing is a parameter, in seconds; `clock` gives the time (seconds since the epoch) that is
    compared with the replicated times (launchedAt, lostAt) and used for the back-off."""

    def __init__(self, *, node_id: str, replica: Replica, bridge: CommandBridge, provider: Provider,
                 interval_s: float = 2.0, join_timeout_s: float = 90.0, destroy_lost_after_s: float = 30.0,
                 backoff_first_s: float = 10.0, backoff_max_s: float = 300.0, drain_deadline_s: float = 60.0,
                 provider_timeout_s: float = 120.0, clock: Callable[[], float] = time.time):
        self.node_id = node_id
        self.replica = replica
        self.bridge = bridge
        self.provider = provider
        self.interval_s = interval_s                    # the policy is evaluated this often
        self.join_timeout_s = join_timeout_s            # a launch must have registered by then (launch included)
        self.destroy_lost_after_s = destroy_lost_after_s  # a launched node lost this long is destroyed
        self.backoff_first_s = backoff_first_s          # no launch for this long after a failed one...
        self.backoff_max_s = backoff_max_s              # ...doubling with each failure up to this
        self.drain_deadline_s = drain_deadline_s        # a node scaled in may finish its work this long
        self.provider_timeout_s = provider_timeout_s    # a destroy or the price lookup gives up after this
        self.clock = clock
        self.price: float | None = None                 # hourly price of a new node; None until prepare() did it
        self.slots = 1                                  # slots of a new node (known with the price)
        self.provider_problem = "not asked yet"         # why the price is not known, while it is not
        self.idle_readings: dict[str, int] = {}
        self.last_action_s: float | None = None
        self.backoff_until_s = 0.0
        self.backoff_s = 0.0
        self.destroyed: set[str] = set()                # nodes this node has destroyed
        self.last_decision: dict[str, Any] = {}
        self._in_hand: set[str] = set()                 # nodes with a provider call of ours in flight
        self._ours: set[str] = set()                    # launched by us and not seen registering yet
        self._tasks: set[asyncio.Task] = set()

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Learn the price (in the background), then evaluate the policy every interval_s while leading."""
        self._spawn(self.prepare())
        while True:
            if self.replica.is_leader():
                try:
                    await self.tick()
                except Unavailable as exc:
                    log.info("scaling not committed: %s", exc)
                except Exception:
                    log.exception("scaling failed")
            else:
                self.idle_readings = {}  # a leader counts idle readings from its own evaluations only
            await asyncio.sleep(self.interval_s)

    async def prepare(self) -> None:
        """Ask the provider once what a new node costs and offers (provider.prepare() does its lookups, which
        may be network calls); a failure is logged and retried with back-off. Until it succeeds the policy
        launches nothing (a price is needed to keep maxCostPerHour), while scale-in goes on."""
        delay = self.backoff_first_s
        while True:
            self.provider_problem = "no answer from the provider yet"
            try:
                prepare = getattr(self.provider, "prepare", None)
                if prepare is not None:
                    await asyncio.wait_for(prepare(), self.provider_timeout_s)
                price, slots = await asyncio.wait_for(asyncio.to_thread(
                    lambda: (float(self.provider.hourly_price()), int(self.provider.slots_per_node()))),
                    self.provider_timeout_s)
            except Exception as exc:  # noqa: BLE001 - any provider trouble: log it and try again later
                self.provider_problem = _why(exc)
                log.warning("provider %s cannot describe a new node: %s; retrying in %g s",
                            self.provider.name, self.provider_problem, delay)
                await asyncio.sleep(delay)
                delay = min(self.backoff_max_s, delay * 2)
                continue
            self.price, self.slots = price, slots
            log.info("provider %s: a new node costs %g/h and has %d slots", self.provider.name, price, slots)
            return

    # ---- one evaluation (leader only): reads and Raft commits, never a provider call ------------------
    async def tick(self) -> None:
        now = self.clock()
        with self.replica.lock:
            state = self.replica.state
            members = set(self.replica.members())
            rules = state.policies[state.active_policy]["rules"] if state.active_policy else None
            situation = self._situation(state, now, members) if rules else None
            stale, gone = self._to_clean_up(state, now, members)
            joined = {n for n in self._ours if n in state.nodes}
        if joined:
            self._ours -= joined
            self.backoff_s = 0.0  # a launch worked: the next failure backs off from the start again
        for node, ref in stale:
            self._hand(node, self._give_up(node, f"did not join within {self.join_timeout_s:g} s", ref))
        for node, ref, lost in gone:
            self._hand(node, self._destroy(node, ref, lost=lost))
        if rules is None:
            self.last_decision = {"at": now, "reason": "no active policy"}
            return
        decision = self._hold_back(decide(rules, situation), now)
        self.idle_readings = dict(decision.idle_readings)
        self.last_decision = {"at": now, "launch": decision.launch, "destroy": list(decision.destroy),
                              "reason": decision.reason}
        if decision.launch or decision.destroy:
            log.info("scaling: %s", self.last_decision,
                     extra={"launch": decision.launch, "destroy": list(decision.destroy), "reason": decision.reason})
            self.last_action_s = now
        if decision.launch:
            await self._launch(decision.launch, rules.get("maxWorkers", rules.get("fixedWorkers")), now)
        for node in decision.destroy:
            await self.bridge.submit(C.NodeDrain(node=node, deadlineS=self.drain_deadline_s, reason=decision.reason,
                                                 now=now))

    def _hold_back(self, decision: Decision, now: float) -> Decision:
        """No launch while the provider's price is unknown or after a failed launch (back-off)."""
        if not decision.launch:
            return decision
        if self.price is None:
            why = f"waiting for the provider's price ({self.provider_problem})"
        elif now < self.backoff_until_s:
            why = f"backing off for {self.backoff_until_s - now:.0f} s after a failed launch"
        else:
            return decision
        wanted = decision.reason.rsplit(": launching", 1)[0]
        return Decision(reason=f"{why} (wanted {decision.launch}: {wanted})", idle_readings=decision.idle_readings)

    def _situation(self, state, now: float, members: set[str]) -> Situation:
        busy = state.busy_slots()
        up, absent, absent_price, seeds = [], 0, 0.0, 0
        for node, rec in state.nodes.items():
            status, price = rec.get("status", NODE_UP_STATUS), float(rec.get("hourlyPrice") or 0.0)
            if not rec.get("removable") and status in (NODE_UP_STATUS, NODE_LOST_STATUS):
                seeds += 1
            if status != NODE_UP_STATUS:
                if is_held(rec):
                    absent, absent_price = absent + 1, absent_price + price
                continue
            idle = None if busy.get(node) else now - max(rec.get("lastWorkAt") or 0.0, rec.get("joinedAt", now))
            up.append(NodeView(id=node, slots=rec["slots"], busy=busy.get(node, 0), idle_for_s=idle,
                               is_leader=node == self.node_id, removable=bool(rec.get("removable")),
                               hourly_price=price, voter=rec["raftAddr"] in members))
        queue: tuple[float, ...] = ()   # one estimate per waiting execution, from the queues' lengths (no scan)
        for activity, ids in sorted(state.execution_table.queues().items()):
            queue += (runtime_estimate_s(state, activity, now),) * len(ids)
        return Situation(now_s=now, nodes=tuple(up), launching=len(state.launches), queue_runtime_s=queue,
                         last_action_s=self.last_action_s, idle_readings=dict(self.idle_readings),
                         new_node_price=self.price or 0.0, new_node_slots=self.slots, seed_nodes=seeds,
                         absent=absent, absent_price=absent_price)

    def _to_clean_up(self, state, now: float, members: set[str]):
        """(launches past the join timeout, [(node, ref, lost)] launched nodes to destroy): those that left
        and are out of Raft, and those lost for destroy_lost_after_s. Nodes already in hand are skipped."""
        stale = [(n, rec.get("ref")) for n, rec in state.launches.items()
                 if now - rec["launchedAt"] > self.join_timeout_s and n not in self._in_hand]
        gone = []
        for n, rec in state.nodes.items():
            if not rec.get("removable") or rec.get("destroyedAt") or n in self.destroyed or n in self._in_hand:
                continue
            status = rec.get("status")
            if status == NODE_LEFT_STATUS and rec["raftAddr"] not in members:
                gone.append((n, rec.get("ref"), False))
            elif status == NODE_LOST_STATUS and now - rec.get("lostAt", now) > self.destroy_lost_after_s:
                gone.append((n, rec.get("ref"), True))
        return stale, gone

    # ---- carrying it out: provider calls in tasks of their own ----------------------------------------
    async def _launch(self, count: int, max_nodes: int | None, now: float) -> None:
        """Record `count` launches (the state refuses any past max_nodes), then start a provider call for each
        one recorded. Submitted together, they are one log entry, applied in order."""
        ids = [f"w{uuid.uuid4().hex[:8]}" for _ in range(count)]
        cmds = [C.NodeLaunched(node=node, provider=self.provider.name, ref="", hourlyPrice=self.price or 0.0,
                               maxNodes=max_nodes, now=now) for node in ids]
        results = await asyncio.gather(*(self.bridge.submit(c) for c in cmds), return_exceptions=True)
        for node, result in zip(ids, results):
            if isinstance(result, BaseException) or "error" in result:
                log.info("launch of %s not recorded, so not started: %s", node,
                         result if isinstance(result, BaseException) else result.get("message"))
                continue
            self._ours.add(node)
            self._hand(node, self._start(node))

    async def _start(self, node: str) -> None:
        try:
            launched = await asyncio.wait_for(self.provider.launch(node), self.join_timeout_s)
        except Exception as exc:  # noqa: BLE001 - ProviderError, a timeout, a provider's bug: all a failed launch
            await self._give_up(node, f"launch failed: {_why(exc)}", None)
            return
        log.info("launched %s", node, extra={"peer": node, "provider": self.provider.name})
        await self.bridge.submit(C.NodeLaunchRef(node=node, ref=launched.ref, hourlyPrice=launched.hourly_price,
                                                 now=self.clock()))

    async def _give_up(self, node: str, reason: str, ref: str | None) -> None:
        """A launch that failed or did not join: back off, destroy what may exist, record the failure. If the
        destroy fails the launch stays recorded (counted, and tried again at the next clean-up)."""
        log.warning("node %s: %s", node, reason, extra={"peer": node})
        now = self.clock()
        if now >= self.backoff_until_s:  # launches that fail together (one decision) back off once
            self.backoff_s = min(self.backoff_max_s, max(self.backoff_first_s, self.backoff_s * 2))
            self.backoff_until_s = now + self.backoff_s
        if not await self._provider_destroy(node, ref, "after its failed launch"):
            return
        self._ours.discard(node)
        await self.bridge.submit(C.NodeLaunchFailed(node=node, reason=reason, now=self.clock()))

    async def _destroy(self, node: str, ref: str | None, *, lost: bool) -> None:
        """Destroy a launched node that left (or is lost: it is marked left), and record that it was."""
        if not await self._provider_destroy(node, ref, "lost" if lost else "after it left"):
            return
        self.destroyed.add(node)
        log.info("destroyed %s (%s)", node, "lost" if lost else "it left", extra={"peer": node})
        await self.bridge.submit(C.NodeLeft(node=node, destroyed=True, now=self.clock()))

    async def _provider_destroy(self, node: str, ref: str | None, when: str) -> bool:
        """provider.destroy within provider_timeout_s; False (logged, to be tried again) when it failed."""
        try:
            await asyncio.wait_for(self.provider.destroy(node, ref), self.provider_timeout_s)
            return True
        except Exception as exc:  # noqa: BLE001 - ProviderError, a timeout, a provider's bug
            log.warning("could not destroy %s (%s): %s; will try again", node, when, _why(exc), extra={"peer": node})
            return False

    def _hand(self, node: str, coro) -> None:
        """Run one provider job for `node` in a task; the node is in hand (skipped by clean-up) until it ends."""
        self._in_hand.add(node)
        task = self._spawn(coro)
        task.add_done_callback(lambda _t: self._in_hand.discard(node))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.warning("scaling task failed: %s", exc if isinstance(exc, Unavailable) else repr(exc))
