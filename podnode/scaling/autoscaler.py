"""The leader's scaling loop: evaluate the active policy (pure, policy.decide) and carry the decision
out through a provider, keeping launches, joins and departures in the replicated state.

Launch: provider.launch -> node_launched (billed, counted as launching) -> the node joins and registers.
A launch that fails, or a node that has not registered within join_timeout_s, is destroyed and recorded
as a failed launch; after a failure the loop backs off (doubling, up to 5 minutes).
Scale-in: node_drain -> the manager lets it leave once idle -> provider.destroy.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ..raft import commands as C
from ..raft.bridge import CommandBridge
from ..raft.lifecycle import IN_PROGRESS, NODE_LEFT_STATUS, NODE_LOST_STATUS, NODE_UP_STATUS, WAITING
from ..raft.replica import Replica
from .policy import Decision, Situation, WorkerView, decide
from .providers import Provider, ProviderError

log = logging.getLogger(__name__)


def runtime_estimate_s(state, activity: str, now: float) -> float:
    """How long one execution of the activity is expected to run: its mean so far; before any has finished,
    at least as long as its running ones have already run (and one second at the least)."""
    mean = state.activities.get(activity, {}).get("meanRuntimeS")
    if mean is not None:
        return float(mean)
    running = [now - e["startTime"] for e in state.executions.values()
               if e["activityName"] == activity and e["status"] == IN_PROGRESS and e["startTime"] is not None]
    return max([1.0, *running])


class Autoscaler:
    def __init__(self, *, node_id: str, replica: Replica, bridge: CommandBridge, provider: Provider,
                 interval_s: float = 2.0, join_timeout_s: float = 90.0, destroy_lost_after_s: float = 30.0):
        self.node_id = node_id
        self.replica = replica
        self.bridge = bridge
        self.provider = provider
        self.interval_s = interval_s
        self.join_timeout_s = join_timeout_s
        self.destroy_lost_after_s = destroy_lost_after_s
        self.idle_readings: dict[str, int] = {}
        self.last_action_s: float | None = None
        self.backoff_until_s = 0.0
        self.backoff_s = 0.0
        self.destroyed: set[str] = set()
        self.last_decision: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()

    # ---- one evaluation (leader only) -----------------------------------------------------------------
    async def tick(self) -> None:
        now = time.time()
        await self._clean_up(now)
        with self.replica.lock:
            state = self.replica.state
            rules = state.policies[state.active_policy]["rules"] if state.active_policy else None
            situation = self._situation(state, now) if rules else None
        if rules is None:
            self.last_decision = {"at": now, "reason": "no active policy"}
            return
        decision = decide(rules, situation)
        self.idle_readings = dict(decision.idle_readings)
        if decision.launch and now < self.backoff_until_s:
            decision = Decision(reason=f"backing off for {self.backoff_until_s - now:.0f} s after a failed launch "
                                       f"(wanted {decision.launch})", idle_readings=decision.idle_readings)
        self.last_decision = {"at": now, "launch": decision.launch, "destroy": list(decision.destroy),
                              "reason": decision.reason}
        if decision.launch or decision.destroy:
            log.info("scaling: %s", self.last_decision)
            self.last_action_s = now
        for _ in range(decision.launch):
            self._spawn(self._launch(f"w{uuid.uuid4().hex[:8]}"))
        for node in decision.destroy:
            await self.bridge.submit({"t": C.NODE_DRAIN, "node": node, "deadlineS": 60.0,
                                      "reason": decision.reason, "now": now})

    def _situation(self, state, now: float) -> Situation:
        busy = state.busy_slots()
        leader = self.node_id
        workers = []
        for node, rec in state.nodes.items():
            if rec.get("status", NODE_UP_STATUS) != NODE_UP_STATUS:
                continue
            idle = None if busy.get(node) else now - max(rec.get("lastWorkAt") or 0.0, rec.get("joinedAt", now))
            workers.append(WorkerView(id=node, slots=rec["slots"], busy=busy.get(node, 0), idle_for_s=idle,
                                      is_leader=node == leader, removable=bool(rec.get("removable")),
                                      hourly_price=float(rec.get("hourlyPrice") or 0.0)))
        queue = tuple(runtime_estimate_s(state, e["activityName"], now)
                      for e in state.executions.values() if e["status"] == WAITING)
        try:
            price, slots = self.provider.hourly_price(), self.provider.slots_per_node()
        except ProviderError as exc:  # misconfigured: let the launch fail, be counted and back off
            log.warning("provider cannot describe a new node: %s", exc)
            price, slots = 0.0, 1
        return Situation(now_s=now, workers=tuple(workers), launching=len(state.launches), queue_runtime_s=queue,
                         last_action_s=self.last_action_s, idle_readings=dict(self.idle_readings),
                         new_node_price=price, new_node_slots=slots)

    # ---- carrying it out -------------------------------------------------------------------------------
    async def _launch(self, node_id: str) -> None:
        try:
            launched = await self.provider.launch(node_id)
        except ProviderError as exc:
            await self._launch_failed(node_id, f"launch failed: {exc}")
            return
        await self.bridge.submit({"t": C.NODE_LAUNCHED, "node": node_id, "provider": launched.provider,
                                  "ref": launched.ref, "hourlyPrice": launched.hourly_price, "now": time.time()})

    async def _launch_failed(self, node_id: str, reason: str, state_ref: str | None = None) -> None:
        log.warning("node %s: %s", node_id, reason)
        self.backoff_s = min(300.0, max(10.0, self.backoff_s * 2))
        self.backoff_until_s = time.time() + self.backoff_s
        try:
            await self.provider.destroy(node_id, state_ref)
        except ProviderError as exc:
            log.warning("could not destroy %s after its failed launch: %s", node_id, exc)
        await self.bridge.submit({"t": C.NODE_LAUNCH_FAILED, "node": node_id, "reason": reason, "now": time.time()})

    async def _clean_up(self, now: float) -> None:
        """Destroy what left or never joined, and lost launched nodes that stay lost."""
        with self.replica.lock:
            state = self.replica.state
            stale = [n for n, rec in state.launches.items() if now - rec["launchedAt"] > self.join_timeout_s]
            launches_ref = {n: rec.get("ref") for n, rec in state.launches.items()}
            gone = [(n, rec.get("ref")) for n, rec in state.nodes.items()
                    if rec.get("removable") and n not in self.destroyed
                    and (rec.get("status") == NODE_LEFT_STATUS
                         or (rec.get("status") == NODE_LOST_STATUS
                             and now - rec.get("lostAt", now) > self.destroy_lost_after_s))]
        for node in stale:
            await self._launch_failed(node, f"did not join within {self.join_timeout_s:g} s",
                                      state_ref=launches_ref.get(node))
        for node, ref in gone:
            try:
                await self.provider.destroy(node, ref)
                self.destroyed.add(node)
                await self.bridge.submit({"t": C.NODE_LEFT, "node": node, "now": now})
            except ProviderError as exc:
                log.warning("could not destroy %s: %s", node, exc)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
