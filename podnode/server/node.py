"""One POD node wired together: the Raft replica, the worker agent, the leader's manager and the HTTP API.

PodNode is what the API serves from (it satisfies api/node_api.NodeApi): each of those members is a line
handing over to the part that owns it (reads.Reads, peers.PeerClient, the agent, the manager, api/views).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from .. import __version__, scheduler
from ..api import views
from ..api.app import build_app
from ..api.protocol import JsonErrorAppRunner, request_limits
from ..changes import Changes
from ..config import NodeConfig
from ..discovery import Announcer
from ..errors import Unavailable
from ..exec.agent import Agent
from ..manager import Manager
from ..metrics.gauges import RaftView, cluster_view, raft_view
from ..metrics.registry import NodeMetrics
from ..raft import commands as C
from ..raft.bridge import CommandBridge
from ..raft.lifecycle import NODE_DRAINING_STATUS, NODE_UP_STATUS
from ..raft.replica import Replica, ReplicaRef
from ..raft.state import State
from ..scaling.autoscaler import Autoscaler
from ..scaling.cost import spend
from ..scaling.factory import make_provider
from ..tls import peer_context, server_context
from ..waiting import Facts
from .peers import PEER_ERRORS, PeerClient
from .reads import Reads
from .settle import SETTLE_WITHIN_S, Settler

log = logging.getLogger("podnode")
T = TypeVar("T")


class PodNode:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.started_at = time.monotonic()
        self.replica: Replica
        self.bridge: CommandBridge
        self.changes: Changes
        self.agent: Agent
        self.manager: Manager
        self.reads: Reads
        self.autoscaler: Autoscaler | None = None
        self._runner: web.AppRunner | None = None
        self._peers: PeerClient | None = None
        self._caught_up = False     # see _catch_up_once
        self._tasks: list[asyncio.Task] = []
        self.announcer: Announcer | None = None
        self.metrics = NodeMetrics()
        self.metrics.add_gauges(read_cluster=lambda: self.read(lambda state: cluster_view(state, time.time())),
                                read_raft=self._raft_view, node_id=cfg.node_id, version=__version__)

    # ---- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        cfg.check_secure()
        loop = asyncio.get_running_loop()
        self.changes = Changes(loop)
        self.replica = ReplicaRef(self._make_replica(observer=cfg.observer, peers=cfg.peers))
        self.bridge = CommandBridge(self.replica, loop, timeout_s=cfg.command_timeout_s)
        self.agent = Agent(cfg, self.replica, self.bridge, self.changes)
        provider = make_provider(cfg)
        self.autoscaler = None if provider is None else Autoscaler(
            node_id=cfg.node_id, replica=self.replica, bridge=self.bridge, provider=provider,
            interval_s=cfg.scaling_interval_s, join_timeout_s=cfg.launch_join_timeout_s,
            destroy_lost_after_s=cfg.destroy_lost_after_s, backoff_first_s=cfg.launch_backoff_first_s,
            backoff_max_s=cfg.launch_backoff_max_s, drain_deadline_s=cfg.scale_in_drain_deadline_s,
            provider_timeout_s=cfg.provider_timeout_s)
        self._peers = PeerClient(secret=cfg.secret, timeout_s=cfg.peer_timeout_s, ssl_context=peer_context(cfg))
        self.manager = Manager(cfg, self.replica, self.bridge, self.changes, autoscaler=self.autoscaler,
                               peers=self._peers)
        self.settler = Settler(cfg.node_id, lambda cmd: self.bridge.submit_soon(cmd, SETTLE_WITHIN_S),
                               retry_first_s=cfg.retry_first_s,
                               retry_max_s=cfg.retry_max_s)
        self.reads = Reads(node_id=cfg.node_id, replica=self.replica, bridge=self.bridge, changes=self.changes,
                           peers=self._peers, local_output=self.agent.output_of,
                           execution_arrival_s=cfg.execution_arrival_s, local_output_from=self.agent.output_from)
        self._runner = JsonErrorAppRunner(build_app(self), access_log=None,
                                          shutdown_timeout=cfg.http_shutdown_timeout_s,
                                          **request_limits(cfg.max_input_bytes))
        await self._runner.setup()
        https = server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        await web.TCPSite(self._runner, cfg.http_host, cfg.http_port, ssl_context=https).start()
        self._tasks = [asyncio.create_task(self.agent.run(), name="agent"),
                       asyncio.create_task(self.manager.run(), name="manager"),
                       asyncio.create_task(self._catch_up_once(), name="catch-up")]
        if cfg.announce:
            self.announcer = Announcer(cluster=cfg.cluster_name, node_id=cfg.node_id, http_url=cfg.http_url,
                                       interfaces=cfg.zeroconf_interfaces)
            self._tasks.append(asyncio.create_task(self._announce(), name="announce"))
        log.info("node %s: HTTP %s, Raft %s, peers %s", cfg.node_id, cfg.http_url, cfg.raft_addr, cfg.peers)

    async def _catch_up_once(self) -> None:
        """Until this node has applied everything the cluster committed before it started, its state may be
        an old one (a token deleted while it was down would still be there): the API answers 503 until a Sync
        entry, committed by the current leader, has been applied here."""
        pause_s = self.cfg.retry_first_s
        while True:
            try:
                await self.bridge.submit(C.Sync())
            except Unavailable:
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, self.cfg.retry_max_s)
                continue
            self._caught_up = True
            self.metrics.start_counting(after_index=self.replica.raftLastApplied)
            log.info("node %s has caught up with the cluster's state: serving the API", self.cfg.node_id)
            return

    def serving(self) -> bool:
        return self._caught_up

    async def _announce(self) -> None:
        try:
            await self.announcer.start()
        except Exception as exc:  # discovery is a convenience: a node without multicast still works
            log.warning("could not announce over zeroconf: %s", exc)

    def _make_replica(self, *, observer: bool, peers: list[str]) -> Replica:
        cfg = self.cfg
        replica = Replica(self_addr=None if observer else cfg.raft_addr, peers=peers, data_dir=cfg.data_dir,
                          password=cfg.secret, timing=cfg.timing, on_change=self.changes.notify_threadsafe,
                          bind_address=None if observer else f"{cfg.raft_host}:{cfg.raft_port}")
        # Counted from the entries it applies (what it applied before this was set is not counted: see
        # metrics/apply_counts.py); the index of the entry being applied is the last applied one's next.
        replica.state.observer = self.metrics.observer_for(lambda: replica.raftLastApplied + 1)
        return replica

    async def promote(self, members: list[str]) -> None:
        """Become a voter: the leader has added this node's Raft address; restart the replica on the same
        journal and snapshot, now binding the Raft port, and register again (the role is the replica's)."""
        if not self.replica.observer:
            return
        log.info("promoted to voter; members %s", members)
        self.bridge.fail_all()
        old = self.replica.swap(self._make_replica(observer=False,
                                                   peers=[m for m in members if m != self.cfg.raft_addr]))
        await asyncio.to_thread(old.destroy_synchronous)
        self.agent.reregister()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=self.cfg.stop_timeout_s)
        if stuck:
            log.error("tasks did not stop within %g s: %s", self.cfg.stop_timeout_s, [t.get_name() for t in stuck])
        if self.autoscaler is not None:
            await self.autoscaler.close()
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.announcer.stop(), self.cfg.announce_stop_timeout_s)
        await self.settler.stop(timeout_s=1.0)
        log.info("stopping: executions")
        with contextlib.suppress(Exception):
            await self.agent.shutdown()
        log.info("stopping: HTTP")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._peers is not None:
            await self._peers.close()
        self.bridge.fail_all()
        log.info("stopping: Raft")
        await asyncio.to_thread(self.replica.destroy_synchronous)
        log.info("stopped")

    # ---- reads and writes (api/node_api.NodeApi) ----------------------------------------------------
    def read(self, fn: Callable[[State], T]) -> T:
        return self.reads.read(fn)

    async def read_or_sync(self, fn: Callable[[State], T | None]) -> T | None:
        return await self.reads.read_or_sync(fn)

    async def caught_up(self) -> None:
        await self.reads.caught_up()

    async def read_execution(self, exec_id: int) -> dict[str, Any] | None:
        return await self.reads.read_execution(exec_id)

    async def wait_execution(self, exec_id: int, timeout_s: float) -> None:
        await self.changes.wait_execution(exec_id, timeout_s)

    async def wait_change(self, timeout_s: float) -> None:
        await self.changes.wait(timeout_s)

    async def live_output(self, record: dict[str, Any]) -> tuple[str, str]:
        return await self.reads.live_output(record)

    async def output_from(self, record: dict[str, Any], stdout_at: int, stderr_at: int, wait_s: float):
        return await self.reads.output_from(record, stdout_at, stderr_at, wait_s)

    async def submit(self, cmd: C.Command) -> dict[str, Any]:
        return await self.bridge.submit_ok(cmd)

    def claim(self, exec_id: int) -> bool:
        return self.settler.claim(exec_id)

    def settle(self, exec_id: int, *, handed: bool) -> None:
        self.settler.settle(exec_id, handed=handed)

    def propose_placement(self, activity: str) -> str | None:
        """A node for a new execution to start on at once, as this node sees the cluster (see scheduler)."""
        with self.replica.lock:
            return scheduler.place_new(self.replica.state, activity, live_nodes=self.manager.live_nodes(),
                                       prefer=self.cfg.node_id)

    # ---- the internal routes ------------------------------------------------------------------------
    def local_output(self, exec_id: int) -> tuple[str, str] | None:
        return self.agent.output_of(exec_id)

    async def local_output_from(self, exec_id: int, attempt: int, stdout_at: int, stderr_at: int, wait_s: float):
        return await self.agent.output_from(exec_id, attempt, stdout_at, stderr_at, wait_s)

    def observer_alive(self, node: str) -> None:
        self.manager.observer_alive(node)

    def is_observer(self) -> bool:
        return self.replica.observer

    def members(self) -> list[str]:
        return self.replica.members()

    def join_role(self, node: str, raft_addr: str) -> str:
        return self.manager.join_role(node, raft_addr)

    async def add_member(self, raft_addr: str) -> list[str]:
        return await self.manager.add_member(raft_addr)

    async def forward_to_leader(self, path: str, data: Mapping[str, str]) -> tuple[dict, int]:
        """POST an internal request to the leader's HTTP API; (body, status)."""
        leader = self.status_view()["leader"]
        url = self.read(lambda s: s.nodes.get(leader, {}).get("httpUrl")) if leader else None
        if not url or self._peers is None:
            raise Unavailable("no leader is known yet; retry shortly", retry_after_s=1.0)
        try:
            return await self._peers.post(url, path, data, timeout_s=self.cfg.forward_timeout_s)
        except PEER_ERRORS as exc:
            raise Unavailable(f"could not reach the leader: {exc!r}; retry shortly", retry_after_s=1.0) from None

    async def sync_everywhere(self) -> dict[str, list[str]]:
        """Ask every other member that is up to apply everything committed so far (/internal/sync), at once."""
        with self.replica.lock:
            others = {n: rec["httpUrl"] for n, rec in self.replica.state.nodes.items()
                      if n != self.cfg.node_id and rec.get("httpUrl")
                      and rec.get("status") in (NODE_UP_STATUS, NODE_DRAINING_STATUS)}

        async def one(url: str) -> bool:
            if self._peers is None:
                return False
            try:
                _, code = await self._peers.post(url, "/internal/sync", {}, timeout_s=self.cfg.peer_timeout_s)
            except PEER_ERRORS:
                return False
            return code == 200
        answers = await asyncio.gather(*(one(url) for url in others.values()))
        return {"confirmed": sorted(n for n, ok in zip(others, answers) if ok),
                "unconfirmed": sorted(n for n, ok in zip(others, answers) if not ok)}

    # ---- status and views -----------------------------------------------------------------------------
    def role(self) -> str:
        return views.role(self._raft_status().get("state"), observer=self.replica.observer)

    def _raft_status(self) -> dict[str, Any]:
        for _ in range(5):  # pysyncobj's status reads sets its thread may be changing
            with contextlib.suppress(RuntimeError):
                return self.replica.getStatus()
        return {}

    def _raft_view(self) -> RaftView:
        raft = self._raft_status()
        return raft_view(raft, views.role(raft.get("state"), observer=self.replica.observer))

    def metrics_text(self, accept: str) -> tuple[bytes, str]:
        """GET /metrics: the exposition in the format `accept` (an Accept header) asks for, and its content type."""
        return self.metrics.render(accept)

    def status_view(self) -> dict[str, Any]:
        raft = self._raft_status()
        role = views.role(raft.get("state"), observer=self.replica.observer)
        with self.replica.lock:
            state = self.replica.state
            by_addr = {rec["raftAddr"]: n for n, rec in state.nodes.items()}
            leader_addr = self.replica.leader_addr()
            installed = {name: inst[self.cfg.node_id]["status"]
                         for name, inst in state.installations.items() if self.cfg.node_id in inst}
        peers = [{"id": by_addr.get(addr), "address": addr, "connected": self.replica.peer_connected(addr)}
                 for addr in sorted(str(n.id) for n in self.replica.otherNodes)]
        leading = role == "leader"
        return views.status(
            node_id=self.cfg.node_id, role=role, leader=by_addr.get(leader_addr, leader_addr) if leader_addr else None,
            raft=raft, http_url=self.cfg.http_url, raft_addr=self.cfg.raft_addr, peers=peers, slots=self.cfg.slots,
            running=self.agent.running_view(), installed=installed, version=__version__, pid=os.getpid(),
            uptime_s=time.monotonic() - self.started_at, last_plan=self.manager.last_plan if leading else None,
            scaling=self.autoscaler.last_decision if leading and self.autoscaler is not None else None,
            workers_view=self.workers_view())

    def waiting_facts(self) -> Facts:
        """For waitingReason (podnode/waiting.py): does this node know a leader and reach a majority of the
        voters (without one, the leader it knew may be gone); on the leader, the nodes it plans with; the price
        of one more node from this node's provider (None until it answered)."""
        leading, leader_addr = self.replica.is_leader(), self.replica.leader_addr()
        with self.replica.lock:
            live = frozenset(self.manager.live_nodes()) if leading else None
            leader = self.replica.state.node_at(leader_addr)
        # A node that reaches no majority keeps the last leader it knew (pysyncobj): it has none it can reach.
        has_leader = leader_addr is not None and self._has_quorum()
        return Facts(now=time.time(), has_leader=has_leader, leader=leader, live=live,
                     scaling=self.autoscaler is not None,
                     new_node_price=self.autoscaler.price if self.autoscaler is not None else None)

    def _has_quorum(self) -> bool:
        for _ in range(5):  # pysyncobj reads sets its thread may be changing (see _raft_status)
            with contextlib.suppress(RuntimeError):
                return bool(self.replica.hasQuorum)
        return False

    def workers_view(self) -> dict[str, Any]:
        """getWorkers (see views.workers), from the replicated state and this node's Raft connections."""
        now = time.time()
        with self.replica.lock:
            state = self.replica.state
            busy = state.busy_slots()
            nodes = [dict(rec) for rec in state.nodes.values()]
            launches = {n: dict(rec) for n, rec in state.launches.items()}
            failures = dict(state.launch_failures)
        rate, total = spend(nodes, launches.values(), now)
        return views.workers(nodes, busy=busy, launches=launches, launch_failures=failures, spend_per_hour=rate,
                             spent_so_far=total, this_node=self.cfg.node_id,
                             peer_connected=self.replica.peer_connected)
