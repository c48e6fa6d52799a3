"""The leader's loop: plan with the pure scheduler, commit the plan, repeat on every change.

The scaling policy runs in a loop of its own (Autoscaler.run, started here), and every call to a provider is
a task of its own: a slow or failing cloud never delays placements, lost-node detection or Raft membership.

Observers are not Raft peers, so Raft cannot tell the leader they are alive: each observer says so itself
(say_alive: a signed POST /internal/alive to the leader its replica knows, every alive_interval_s), and the
leader keeps one clock per observer (observer_alive), which feeds silent_s like Raft's answer times do for
voters. The leader sends nothing to its observers for this: its cost per observer is one small request
every alive_interval_s."""

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
from .errors import NotFound, Unavailable
from .raft.bridge import CommandBridge
from .raft.lifecycle import NODE_LEFT_STATUS
from .raft.replica import Replica
from .scaling.autoscaler import Autoscaler
from .server.peers import PEER_ERRORS, PeerClient, post_status
from .tls import peer_context

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, cfg: NodeConfig, replica: Replica, bridge: CommandBridge, changes: Changes,
                 autoscaler: Autoscaler | None = None, peers: PeerClient | None = None):
        self.cfg = cfg
        self.replica = replica
        self.bridge = bridge
        self.changes = changes
        self.retention = scheduler.Retention(result_ttl_s=cfg.result_ttl_s)
        self.last_plan: dict = {}
        self._next_expiry = 0.0  # monotonic time of the next expiry scan
        self.autoscaler = autoscaler
        self._heard: dict[str, float] = {}  # on the leader: observer -> monotonic time it last said it is alive
        self._leading = False               # did this node lead when _track_observers last looked?
        self._leader_seen: str | None = None  # the leader's Raft address when _note_leader last looked
        self._peers = peers                 # an observer's requests to the leader (/internal/alive)
        self._ssl = peer_context(cfg)       # how other nodes' https certificates are checked

    def live_nodes(self) -> set[str]:
        """Nodes this node reaches right now (itself included). Voters: over Raft, and on the leader they must
        also have answered lately (a frozen one keeps its connection but stops answering). Observers are not
        Raft peers: on the leader, they must have said they are alive lately (/internal/alive, see say_alive)."""
        nodes = self.replica.state.nodes
        ages = self.replica.response_ages()
        quiet_s = max(0.5, 10 * self.cfg.timing.heartbeat_s)
        observer_quiet_s = max(quiet_s, 2 * self.alive_interval_s())   # one push may be missed or late
        observer_ages = self._observer_ages()
        return {n for n, rec in nodes.items()
                if n == self.cfg.node_id
                or (rec.get("role") == "observer" and observer_ages.get(n, observer_quiet_s) < observer_quiet_s)
                or (self.replica.peer_connected(rec["raftAddr"]) and ages.get(rec["raftAddr"], 0.0) < quiet_s)}

    def silent_s(self) -> dict[str, float]:
        """Seconds since this leader last heard from each other node (a new leader's clocks start when it
        took over, so nobody is declared lost for the time before it led)."""
        ages = self.replica.response_ages()
        nodes = self.replica.state.nodes
        silent = {n: ages[rec["raftAddr"]] for n, rec in nodes.items()
                  if n != self.cfg.node_id and rec.get("role") != "observer" and rec["raftAddr"] in ages}
        self._track_observers()
        return silent | self._observer_ages()

    def alive_interval_s(self) -> float:
        """How often an observer tells the leader it is alive: a few times within node_lost_after_s."""
        return min(self.cfg.alive_interval_s, self.cfg.node_lost_after_s / 4)

    def _observer_ages(self) -> dict[str, float]:
        if not self._leading:
            return {}
        now = time.monotonic()
        return {n: now - t for n, t in self._heard.items()}

    def _track_observers(self) -> None:
        """Keep one clock per observer on the leader, started when this node took over (or when the observer
        appeared in the state), and none elsewhere. Cheap: no I/O, one pass over the node records."""
        if not self.replica.is_leader():
            if self._leading:
                log.info("this node no longer leads the cluster", extra={"leader": None})
            self._leading = False
            self._heard.clear()
            return
        if not self._leading:            # took over: every observer's clock starts now
            log.info("this node leads the cluster now", extra={"leader": self.cfg.node_id})
            self._heard.clear()
            self._leading = True
        now = time.monotonic()
        with self.replica.lock:
            observers = {n for n, rec in self.replica.state.nodes.items()
                         if rec.get("role") == "observer" and rec.get("status") != NODE_LEFT_STATUS
                         and n != self.cfg.node_id}
        for n in [n for n in self._heard if n not in observers]:
            del self._heard[n]
        for n in observers:
            self._heard.setdefault(n, now)

    def observer_alive(self, node: str) -> None:
        """On the leader: observer `node` says it is alive (a signed /internal/alive); this is what feeds its
        silent_s. Unavailable on a node that does not lead (the observer asks the leader it knows again);
        NotFound for a node that is no observer of the state (yet: it has not registered)."""
        if not self.replica.is_leader():
            raise Unavailable("this node is not the leader; ask the leader", retry_after_s=self.alive_interval_s())
        if not self._leading or node not in self._heard:   # just took over, or the node registered since
            self._track_observers()
        if node not in self._heard:
            raise NotFound(f"{node!r} is not an observer of this cluster")
        self._heard[node] = time.monotonic()

    async def _watch_observers(self) -> None:
        """On the leader: start the observers' clocks (at takeover, or when one registers) and drop those of
        observers that left, even while none of them says anything."""
        while True:
            self._track_observers()
            self._note_leader()
            await asyncio.sleep(self.alive_interval_s() / 2)

    def _note_leader(self) -> None:
        """Log each change of leader this node sees (the leader's id as the record's `leader` field)."""
        addr = self.replica.leader_addr()
        if addr == self._leader_seen:
            return
        self._leader_seen = addr
        if addr is None:
            log.info("no leader: an election is under way or the cluster has no quorum", extra={"leader": None})
            return
        with self.replica.lock:
            leader = self.replica.state.node_at(addr) or addr
        log.info("the leader is %s", leader, extra={"leader": leader})

    async def say_alive(self) -> None:
        """On an observer: tell the leader every alive_interval_s that this node is alive (observers are not
        Raft peers, so Raft cannot tell it). The leader is the one this node's replica knows; a request that
        finds no leader (a leader change) is retried shortly after, asking the replica again."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            pause_s = self.alive_interval_s()
            if self._peers is not None and self._observing():
                url = self._leader_url()
                try:
                    if url is None:
                        raise Unavailable("no leader known yet")
                    _, code = await self._peers.post(url, "/internal/alive", {"node": self.cfg.node_id},
                                                     timeout_s=max(pause_s, self.cfg.node_lost_after_s / 3))
                    if code == 503:          # it does not lead (any more): ask the replica again soon
                        pause_s = self.cfg.retry_first_s
                    elif code != 200:
                        log.debug("the leader at %s answered /internal/alive with HTTP %s", url, code)
                except (*PEER_ERRORS, Unavailable) as exc:
                    log.debug("could not tell the leader (%s) this node is alive: %r", url, exc)
                    pause_s = self.cfg.retry_first_s
            await asyncio.sleep(max(0.0, started + pause_s - loop.time()))

    def _observing(self) -> bool:
        """Does the leader count on this node's word that it is alive: an observer, or a node promoted that has
        yet to register again as a voter (until then the leader still keeps its observer clock)."""
        if self.replica.observer:
            return True
        if self.replica.is_leader():
            return False
        with self.replica.lock:
            return self.replica.state.nodes.get(self.cfg.node_id, {}).get("role") == "observer"

    def _leader_url(self) -> str | None:
        leader = self.replica.leader_addr()
        if leader is None:
            return None
        with self.replica.lock:
            state = self.replica.state
            node = state.node_at(leader)
            return state.nodes[node].get("httpUrl") if node is not None else None

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
            log.info("promoted %s to voter: HTTP %s", promote, status, extra={"peer": promote})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("could not tell %s it is a voter now: %s", promote, exc, extra={"peer": promote})

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
        helpers = [asyncio.create_task(self._watch_observers(), name="observers"),
                   asyncio.create_task(self.say_alive(), name="alive")]
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
