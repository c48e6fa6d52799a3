"""The leader's loop: plan with the pure scheduler, commit the plan, repeat on every change."""

from __future__ import annotations

import asyncio
import logging
import time

from . import scheduler
from .changes import Changes
from .config import NodeConfig
from .errors import Unavailable
from .raft.bridge import CommandBridge
from .raft.lifecycle import NODE_LEFT_STATUS
from .scaling.autoscaler import Autoscaler
from .raft.replica import Replica

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, cfg: NodeConfig, replica: Replica, bridge: CommandBridge, changes: Changes,
                 autoscaler: Autoscaler | None = None):
        self.cfg = cfg
        self.replica = replica
        self.bridge = bridge
        self.changes = changes
        self.policy = scheduler.Policy(result_ttl_s=cfg.result_ttl_s)
        self.last_plan: dict = {}
        self._next_expiry = 0.0  # monotonic time of the next expiry scan
        self.autoscaler = autoscaler
        self._next_scaling = 0.0  # monotonic time of the next policy evaluation

    def live_nodes(self) -> set[str]:
        """Nodes this node reaches over Raft right now (itself included). On the leader a connected peer
        must also have answered lately: a frozen one keeps its connection but stops answering."""
        nodes = self.replica.state.nodes
        ages = self.replica.response_ages()
        quiet_s = max(0.5, 10 * self.cfg.timing.heartbeat_s)
        return {n for n, rec in nodes.items()
                if n == self.cfg.node_id or (self.replica.peer_connected(rec["raftAddr"])
                                             and ages.get(rec["raftAddr"], 0.0) < quiet_s)}

    def silent_s(self) -> dict[str, float]:
        """Seconds since this leader last heard from each other node over Raft (a new leader's clocks start
        when it took over, so nobody is declared lost for the time before it led)."""
        ages = self.replica.response_ages()
        nodes = self.replica.state.nodes
        return {n: ages[rec["raftAddr"]] for n, rec in nodes.items()
                if n != self.cfg.node_id and rec["raftAddr"] in ages}

    async def remove_member(self, raft_addr: str) -> None:
        """Take a node that left out of the Raft cluster (one change at a time; retried on the next plan)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.replica.removeNodeFromCluster(
            raft_addr, callback=lambda res, err: loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(err)))
        try:
            err = await asyncio.wait_for(fut, self.cfg.command_timeout_s)
            log.info("removed %s from the Raft cluster (result %s)", raft_addr, err)
        except asyncio.TimeoutError:
            log.warning("removing %s from the Raft cluster timed out; will retry", raft_addr)

    async def run(self) -> None:
        while True:
            if self.replica.is_leader():
                try:
                    await self._plan_once()
                    await self._scale_if_due()
                except Unavailable as exc:
                    log.info("plan not committed: %s", exc)
                    await asyncio.sleep(0.2)
                except Exception:
                    log.exception("scheduler failed")
                    await asyncio.sleep(1.0)
            await self.changes.wait(self.cfg.scheduler_interval_s)

    async def _scale_if_due(self) -> None:
        if self.autoscaler is not None and time.monotonic() >= self._next_scaling:
            self._next_scaling = time.monotonic() + self.autoscaler.interval_s
            await self.autoscaler.tick()

    async def _plan_once(self) -> None:
        now = time.time()
        with self.replica.lock:
            state = self.replica.state
            cmds = scheduler.plan_lost(state, now, silent_s=self.silent_s(), lost_after_s=self.cfg.node_lost_after_s)
            cmds += scheduler.plan_drains(state, now)
            departed = [rec["raftAddr"] for rec in state.nodes.values()
                        if rec.get("status") == NODE_LEFT_STATUS and rec["raftAddr"] in self.replica.members()]
            expire = time.monotonic() >= self._next_expiry
            if expire:
                self._next_expiry = time.monotonic() + self.policy.expiry_interval_s
            cmds += scheduler.plan(state, now, live_nodes=self.live_nodes(), prefer=self.cfg.node_id,
                                   policy=self.policy, expire=expire)
        for addr in departed:
            await self.remove_member(addr)
        if not cmds:
            return
        # Submitted together, the bridge packs them into one log entry.
        results = await asyncio.gather(*(self.bridge.submit(c) for c in cmds), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        self.last_plan = {"at": now, "commands": [c["t"] for c in cmds], "results": results}
