"""The leader's loop: plan with the pure scheduler, commit the plan, repeat on every change.

The scaling policy runs in a loop of its own (Autoscaler.run, started here), and every call to a provider is
a task of its own: a slow or failing cloud never delays placements, lost-node detection or Raft membership."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from pysyncobj import FAIL_REASON

from . import scheduler
from .changes import Changes
from .config import NodeConfig
from .errors import Unavailable
from .raft.bridge import CommandBridge
from .raft.lifecycle import NODE_LEFT_STATUS
from .raft.replica import Replica
from .scaling.autoscaler import Autoscaler
from .server.peers import post_status
from .tls import peer_context

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, cfg: NodeConfig, replica: Replica, bridge: CommandBridge, changes: Changes,
                 autoscaler: Autoscaler | None = None):
        self.cfg = cfg
        self.replica = replica
        self.bridge = bridge
        self.changes = changes
        self.retention = scheduler.Retention(result_ttl_s=cfg.result_ttl_s)
        self.last_plan: dict = {}
        self._next_expiry = 0.0  # monotonic time of the next expiry scan
        self.autoscaler = autoscaler
        self._observer_ok: dict[str, float] = {}  # observer -> monotonic time its /health last answered
        self._ssl = peer_context(cfg)             # how other nodes' https certificates are checked

    def live_nodes(self) -> set[str]:
        """Nodes this node reaches right now (itself included). Voters: over Raft, and on the leader they must
        also have answered lately (a frozen one keeps its connection but stops answering). Observers are not
        Raft peers: the leader polls their /health instead."""
        nodes = self.replica.state.nodes
        ages = self.replica.response_ages()
        quiet_s = max(0.5, 10 * self.cfg.timing.heartbeat_s)
        observer_ages = self._observer_ages()
        return {n for n, rec in nodes.items()
                if n == self.cfg.node_id
                or (rec.get("role") == "observer" and observer_ages.get(n, quiet_s) < quiet_s)
                or (self.replica.peer_connected(rec["raftAddr"]) and ages.get(rec["raftAddr"], 0.0) < quiet_s)}

    def silent_s(self) -> dict[str, float]:
        """Seconds since this leader last heard from each other node (a new leader's clocks start when it
        took over, so nobody is declared lost for the time before it led)."""
        ages = self.replica.response_ages()
        nodes = self.replica.state.nodes
        silent = {n: ages[rec["raftAddr"]] for n, rec in nodes.items()
                  if n != self.cfg.node_id and rec.get("role") != "observer" and rec["raftAddr"] in ages}
        return silent | self._observer_ages()

    def _observer_ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {n: now - t for n, t in self._observer_ok.items()}

    async def _watch_observers(self) -> None:
        """On the leader: poll every observer's /health (they are not Raft peers, so Raft cannot tell)."""
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.cfg.node_lost_after_s / 3))
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                if not self.replica.is_leader():
                    self._observer_ok.clear()
                else:
                    with self.replica.lock:
                        observers = {n: rec["httpUrl"] for n, rec in self.replica.state.nodes.items()
                                     if rec.get("role") == "observer" and rec.get("status") != NODE_LEFT_STATUS}
                    for n in list(self._observer_ok):
                        if n not in observers:
                            del self._observer_ok[n]
                    await asyncio.gather(*(self._poll_observer(session, n, url) for n, url in observers.items()))
                await asyncio.sleep(self.cfg.observer_poll_s)

    async def _poll_observer(self, session: aiohttp.ClientSession, node: str, url: str) -> None:
        self._observer_ok.setdefault(node, time.monotonic())  # the clock starts when this leader first looks
        try:
            async with session.get(f"{url}/health") as resp:
                if resp.status == 200:
                    self._observer_ok[node] = time.monotonic()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    async def _promote_if_needed(self) -> None:
        """Keep max_voters voters: drop a lost voter from Raft and promote an observer in its place."""
        with self.replica.lock:
            promote, remove = scheduler.plan_promotion(self.replica.state, self.replica.members(),
                                                       max_voters=self.cfg.max_voters)
            target = self.replica.state.nodes.get(promote) if promote else None
        if remove:
            await self.remove_member(remove[0])
            return
        if target is None:
            return
        members = await self.add_member(target["raftAddr"])
        try:
            status = await post_status(target["httpUrl"], "/internal/promote", {"members": ",".join(members)},
                                       secret=self.cfg.secret, timeout_s=self.cfg.promote_timeout_s,
                                       ssl_context=self._ssl)
            log.info("promoted %s to voter: HTTP %s", promote, status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("could not tell %s it is a voter now: %s", promote, exc)

    def join_role(self, node: str, raft_addr: str) -> str:
        """'voter' or 'observer' for a node asking to join through this node (see scheduler.join_role)."""
        with self.replica.lock:
            return scheduler.join_role(self.replica.state, node, raft_addr, self.replica.members(),
                                       max_voters=self.cfg.max_voters)

    async def add_member(self, raft_addr: str) -> list[str]:
        """Add a node to the Raft cluster (one change at a time, retried while another is in progress);
        return the members afterwards. Adding one that is already a member changes nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.command_timeout_s * 3
        while raft_addr not in self.replica.members():
            fut = loop.create_future()

            def done(res: Any, err: int, fut=fut) -> None:  # Raft thread
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(err))
            self.replica.addNodeToCluster(raft_addr, callback=done)
            try:
                err = await asyncio.wait_for(fut, self.cfg.command_timeout_s)
            except asyncio.TimeoutError:
                err = None
            if err == FAIL_REASON.SUCCESS or raft_addr in self.replica.members():
                break
            if loop.time() > deadline:
                raise Unavailable(f"could not add {raft_addr} to the cluster (Raft said {err}); retry")
            await asyncio.sleep(self.cfg.leader_retry_s)
        return self.replica.members()

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
        helpers = [asyncio.create_task(self._watch_observers(), name="observers")]
        if self.autoscaler is not None:
            helpers.append(asyncio.create_task(self.autoscaler.run(), name="autoscaler"))
        try:
            await self._run()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seen, planned_at = self.changes.version, loop.time()
            if self.replica.is_leader():
                try:
                    await self._plan_once()
                    await self._promote_if_needed()
                except Unavailable as exc:
                    log.info("plan not committed: %s", exc)
                    await asyncio.sleep(self.cfg.leader_retry_s)
                except Exception:
                    log.exception("scheduler failed")
                    await asyncio.sleep(self.cfg.plan_failure_pause_s)
            await self.changes.wait(self.cfg.scheduler_interval_s, since=seen)
            # Under load the state changes hundreds of times a second; one plan covers all the changes
            # since the last, so plan at most every plan_gap_s (placing is mostly done without the
            # leader: the receiving node places a new execution, a finishing one pulls the next).
            rest = planned_at + self.cfg.plan_gap_s - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    async def _plan_once(self) -> None:
        now = time.time()
        with self.replica.lock:
            state = self.replica.state
            members = set(self.replica.members())
            cmds = scheduler.plan_lost(state, now, silent_s=self.silent_s(), lost_after_s=self.cfg.node_lost_after_s)
            cmds += scheduler.plan_drains(state, now, members=members)
            left = [rec["raftAddr"] for rec in state.nodes.values()
                    if rec.get("status") == NODE_LEFT_STATUS and rec["raftAddr"] in members]
            exits = scheduler.plan_raft_exits(state, now, members=members, retention=self.retention,
                                              connected={a for a in left if self.replica.peer_connected(a)})
            expire = time.monotonic() >= self._next_expiry
            if expire:
                self._next_expiry = time.monotonic() + self.retention.expiry_interval_s
            cmds += scheduler.plan(state, now, live_nodes=self.live_nodes(), prefer=self.cfg.node_id,
                                   retention=self.retention, expire=expire)
        for addr in exits:  # a launched voter that is to leave goes out of Raft first, while it answers
            await self.remove_member(addr)
        if not cmds:
            return
        # Submitted together, the bridge packs them into one log entry.
        results = await asyncio.gather(*(self.bridge.submit(c) for c in cmds), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        self.last_plan = {"at": now, "commands": [c.t for c in cmds], "results": results}
