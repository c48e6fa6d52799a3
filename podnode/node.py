"""One POD node: the Raft replica, the worker agent, the leader's manager and the HTTP API, wired together.

Run it with `podnode --id n1 --http 127.0.0.1:8080 --raft 127.0.0.1:9080 --peers HOST:PORT,...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, TypeVar

import aiohttp
from aiohttp import web

from . import __version__, scheduler
from .api.app import build_app
from .api.protocol import JsonErrorAppRunner, request_limits
from .changes import Changes
from .config import NodeConfig
from .errors import BadRequest, IncompatibleDependency, Unavailable
from .discovery import Announcer, find_members
from .exec.agent import Agent
from .manager import Manager
from .raft import commands as C
from .raft.bridge import CommandBridge
from .raft.replica import RaftTiming, Replica, ReplicaRef
from .raft.state import State
from .scaling.autoscaler import Autoscaler
from .scaling.cost import spend
from .scaling.factory import load_options, make_provider

log = logging.getLogger("podnode")
T = TypeVar("T")
SECRET_HEADER = "X-Pod-Secret"


class PodNode:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.started_at = time.monotonic()
        self.replica: Replica
        self.bridge: CommandBridge
        self.changes: Changes
        self.agent: Agent
        self.manager: Manager
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self.announcer: Announcer | None = None

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
            interval_s=cfg.scaling_interval_s)
        self.manager = Manager(cfg, self.replica, self.bridge, self.changes, autoscaler=self.autoscaler)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0))
        self._runner = JsonErrorAppRunner(build_app(self), access_log=None, shutdown_timeout=2.0,
                                          **request_limits(cfg.max_input_bytes))
        await self._runner.setup()
        await web.TCPSite(self._runner, cfg.http_host, cfg.http_port).start()
        self._tasks = [asyncio.create_task(self.agent.run(), name="agent"),
                       asyncio.create_task(self.manager.run(), name="manager")]
        if cfg.announce:
            self.announcer = Announcer(cluster=cfg.cluster_name, node_id=cfg.node_id, http_url=cfg.http_url,
                                       interfaces=cfg.zeroconf_interfaces)
            self._tasks.append(asyncio.create_task(self._announce(), name="announce"))
        log.info("node %s: HTTP %s, Raft %s, peers %s", cfg.node_id, cfg.http_url, cfg.raft_addr, cfg.peers)

    async def _announce(self) -> None:
        try:
            await self.announcer.start()
        except Exception as exc:  # discovery is a convenience: a node without multicast still works
            log.warning("could not announce over zeroconf: %s", exc)

    def _make_replica(self, *, observer: bool, peers: list[str]) -> Replica:
        cfg = self.cfg
        return Replica(self_addr=None if observer else cfg.raft_addr, peers=peers, data_dir=cfg.data_dir,
                       password=cfg.secret, timing=cfg.timing, on_change=self.changes.notify_threadsafe,
                       bind_address=None if observer else f"{cfg.raft_host}:{cfg.raft_port}")

    async def promote(self, members: list[str]) -> None:
        """Become a voter: the leader has added this node's Raft address; restart the replica on the same
        journal and snapshot, now binding the Raft port, and register again."""
        if not self.replica.observer:
            return
        log.info("promoted to voter; members %s", members)
        self.bridge.fail_all()
        old = self.replica.swap(self._make_replica(observer=False,
                                                   peers=[m for m in members if m != self.cfg.raft_addr]))
        self.cfg.observer = False
        await asyncio.to_thread(old.destroy_synchronous)
        self.agent.reregister()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
        if stuck:
            log.error("tasks did not stop within 5 s: %s", [t.get_name() for t in stuck])
        if self.autoscaler is not None:
            await self.autoscaler.close()
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.announcer.stop(), 3.0)
        log.info("stopping: executions")
        with contextlib.suppress(Exception):
            await self.agent.shutdown()
        log.info("stopping: HTTP")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.bridge.fail_all()
        log.info("stopping: Raft")
        await asyncio.to_thread(self.replica.destroy_synchronous)
        log.info("stopped")

    # ---- reads ------------------------------------------------------------------------------------
    def read(self, fn: Callable[[State], T]) -> T:
        with self.replica.lock:
            return fn(self.replica.state)

    async def read_or_sync(self, fn: Callable[[State], T | None]) -> T | None:
        """Read; on a miss, wait until this node has applied everything committed so far and read again.

        A client may create something through one node and ask another at once: this keeps that working.
        """
        value = self.read(fn)
        if value is None:
            await self.bridge.submit({"t": C.SYNC})
            value = self.read(fn)
        return value

    async def caught_up(self) -> None:
        """Before a read that must see every earlier write, made through any node: on a follower, wait
        until everything committed so far is applied here. Without quorum the read is served as it is."""
        if not self.replica.is_leader():
            with contextlib.suppress(Unavailable):
                await self.bridge.submit({"t": C.SYNC})

    async def read_execution(self, exec_id: int) -> dict[str, Any] | None:
        """An execution's record, or None if it does not exist (any more).

        Ids are handed out in log order, so an id below this node's next one was created here and a miss
        means it is gone. An id at or above it may be in flight to this node: wait briefly for it to
        arrive, then fall back to a full catch-up (read_or_sync) before answering that it does not exist.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.2
        while True:
            record, next_id = self.read(lambda s: (s.execution(exec_id), s.next_execution_id))
            if record is not None or exec_id < next_id:
                return record
            if loop.time() >= deadline:
                return await self.read_or_sync(lambda s: s.execution(exec_id))
            await self.changes.wait(deadline - loop.time())

    async def live_output(self, record: dict[str, Any]) -> tuple[str, str]:
        """Output so far of a running execution, from whichever node runs it."""
        worker = record.get("workerId")
        if worker is None:
            return "", ""
        if worker == self.cfg.node_id:
            return self.agent.output_of(record["id"]) or ("", "")
        url = self.read(lambda s: s.nodes.get(worker, {}).get("httpUrl"))
        if not url or self._session is None:
            return "", ""
        headers = {SECRET_HEADER: self.cfg.secret} if self.cfg.secret else {}
        try:
            async with self._session.get(f"{url}/internal/executions/{record['id']}/output",
                                         headers=headers) as resp:
                if resp.status != 200:
                    return "", ""
                body = await resp.json()
                return body.get("stdout", ""), body.get("stderr", "")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            log.info("could not read live output of %s from %s", record["id"], worker)
            return "", ""

    def propose_placement(self, activity: str) -> str | None:
        """A node for a new execution to start on at once, as this node sees the cluster (see scheduler)."""
        with self.replica.lock:
            return scheduler.place_new(self.replica.state, activity, live_nodes=self.manager.live_nodes(),
                                       prefer=self.cfg.node_id)

    async def add_member(self, raft_addr: str) -> list[str]:
        return await self.manager.add_member(raft_addr)

    async def forward_to_leader(self, path: str, data: dict[str, str]) -> tuple[dict, int]:
        """POST an internal request to the leader's HTTP API; (body, status)."""
        leader = self.status_view()["leader"]
        url = self.read(lambda s: s.nodes.get(leader, {}).get("httpUrl")) if leader else None
        if not url or self._session is None:
            raise Unavailable("no leader is known yet; retry shortly", retry_after_s=1.0)
        headers = {SECRET_HEADER: self.cfg.secret} if self.cfg.secret else {}
        try:
            async with self._session.post(f"{url}{path}", data=data, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=30)) as resp:
                return await resp.json(content_type=None), resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise Unavailable(f"could not reach the leader: {exc!r}; retry shortly", retry_after_s=1.0) from None

    def check_peer_secret(self, request: web.Request) -> None:
        if self.cfg.secret and not hmac.compare_digest(request.headers.get(SECRET_HEADER, ""), self.cfg.secret):
            raise BadRequest("internal route: missing or wrong cluster secret")

    # ---- status -----------------------------------------------------------------------------------
    def _raft_status(self) -> dict[str, Any]:
        for _ in range(5):  # pysyncobj's status reads sets its thread may be changing
            with contextlib.suppress(RuntimeError):
                return self.replica.getStatus()
        return {}

    def status_view(self) -> dict[str, Any]:
        raft = self._raft_status()
        role = {0: "follower", 1: "candidate", 2: "leader"}.get(raft.get("state"), "follower")
        if self.replica.observer:
            role = "observer"
        with self.replica.lock:
            state = self.replica.state
            by_addr = {rec["raftAddr"]: n for n, rec in state.nodes.items()}
            leader_addr = self.replica.leader_addr()
            installed = {name: inst[self.cfg.node_id]["status"]
                         for name, inst in state.installations.items() if self.cfg.node_id in inst}
        peers = [{"id": by_addr.get(addr), "address": addr, "connected": self.replica.peer_connected(addr)}
                 for addr in sorted(str(n.id) for n in self.replica.otherNodes)]
        status = {
            "node": self.cfg.node_id,
            "role": role,
            "leader": by_addr.get(leader_addr, leader_addr) if leader_addr else None,
            "term": raft.get("raft_term"),
            "commitIndex": raft.get("commit_idx"),
            "lastApplied": raft.get("last_applied"),
            "hasQuorum": raft.get("has_quorum"),
            "httpUrl": self.cfg.http_url,
            "raftAddress": self.cfg.raft_addr,
            "peers": peers,
            "slots": {"total": self.cfg.slots, "busy": len(self.agent.runs)},
            "executions": self.agent.running_view(),
            "activities": installed,
            "version": __version__,
            "pid": os.getpid(),
            "uptimeSeconds": round(time.monotonic() - self.started_at, 1),
        }
        if role == "leader":
            status["lastPlan"] = {k: v for k, v in self.manager.last_plan.items() if k != "results"}
            status["scaling"] = self.autoscaler.last_decision if self.autoscaler is not None else {
                "reason": "no provider: this cluster does not launch or destroy nodes (start nodes with "
                          "--provider local or libcloud)"}
        workers = self.workers_view()
        status["spendPerHour"], status["spentSoFar"] = workers["spendPerHour"], workers["spentSoFar"]
        return status

    def workers_view(self) -> dict[str, Any]:
        """Every node with its state, slots, load, provider and price; the spend rate and the spend so far.
        `connected` is true only for a node that is up or draining and reached over Raft (or this node): one that
        left, was lost or destroyed is not, even if its Raft address answers (another node may have it now).
        A node that left or was lost also has `leftTime` or `lostTime` (ms since the epoch)."""
        from .api.views import ms
        from .raft.lifecycle import NODE_DRAINING_STATUS, NODE_LEFT_STATUS, NODE_LOST_STATUS, NODE_UP_STATUS

        now = time.time()
        with self.replica.lock:
            state = self.replica.state
            busy = state.busy_slots()
            nodes = [dict(rec) for rec in state.nodes.values()]
            launches = {n: dict(rec) for n, rec in state.launches.items()}
            failures = dict(state.launch_failures)
        rate, total = spend(nodes, launches.values(), now)

        def view(n: dict[str, Any]) -> dict[str, Any]:
            status = n.get("status", NODE_UP_STATUS)
            live = status in (NODE_UP_STATUS, NODE_DRAINING_STATUS) and not n.get("destroyedAt")
            worker = {"id": n["id"], "httpUrl": n["httpUrl"], "raftAddress": n["raftAddr"], "slots": n["slots"],
                      "busy": busy.get(n["id"], 0), "load": round(busy.get(n["id"], 0) / n["slots"], 3)
                      if n["slots"] else 0.0, "status": status, "provider": n.get("provider", "static"),
                      "hourlyPrice": n.get("hourlyPrice", 0.0), "ref": n.get("ref"),
                      "connected": live and (n["id"] == self.cfg.node_id or self.replica.peer_connected(n["raftAddr"]))}
            if status == NODE_LEFT_STATUS and n.get("leftAt") is not None:
                worker["leftTime"] = ms(n["leftAt"])
            if status == NODE_LOST_STATUS and n.get("lostAt") is not None:
                worker["lostTime"] = ms(n["lostAt"])
            return worker

        return {"workers": [view(n) for n in nodes],
                "launching": [{"id": n, **rec} for n, rec in sorted(launches.items())],
                "launchFailures": failures, "spendPerHour": round(rate, 6), "spentSoFar": round(total, 6)}


# ---- command line -----------------------------------------------------------------------------------
def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def parse_args(argv: list[str] | None = None) -> NodeConfig:
    ap = argparse.ArgumentParser(prog="podnode", description="Run one POD node.")
    ap.add_argument("--id", required=True, help="this node's name in the cluster, e.g. n1")
    ap.add_argument("--http", type=_host_port, default=("127.0.0.1", 8080), help="HTTP API address HOST:PORT")
    ap.add_argument("--raft", type=_host_port, default=("127.0.0.1", 9080), help="Raft address HOST:PORT")
    ap.add_argument("--peers", default="", help="other members' Raft addresses, comma-separated")
    ap.add_argument("--join", default=None, metavar="URL",
                    help="join a running cluster through any member's HTTP address (http://HOST:PORT or "
                         "HOST:PORT), or 'auto' to find one of --cluster-name on the local network (zeroconf)")
    ap.add_argument("--cluster-name", default=os.environ.get("POD_CLUSTER", "pod"),
                    help="the cluster's name, announced over zeroconf (default pod)")
    ap.add_argument("--announce", action=argparse.BooleanOptionalAction, default=True,
                    help="announce this node over zeroconf so that --join auto finds the cluster")
    ap.add_argument("--data-dir", default=None, help="journal, snapshot, activities (default ./pod-data/ID)")
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="concurrent executions here")
    ap.add_argument("--secret", default=os.environ.get("POD_SECRET"),
                    help="cluster secret (env POD_SECRET); required when Raft binds beyond loopback")
    ap.add_argument("--allow-file-urls", action=argparse.BooleanOptionalAction, default=None,
                    help="accept file:// install scripts (default: only when HTTP binds to loopback)")
    ap.add_argument("--advertise-host", default=None, help="host other nodes use to reach this one")
    ap.add_argument("--output-cap-bytes", type=int, default=1024 * 1024, help="per stream of an execution")
    ap.add_argument("--kill-grace-s", type=float, default=5.0, help="SIGTERM to SIGKILL when terminating")
    ap.add_argument("--node-lost-after-s", type=float, default=3.0,
                    help="a node the leader cannot reach this long is declared lost and its work moves")
    ap.add_argument("--election-timeout-s", type=float, default=0.4,
                    help="Raft election timeout (lower bound; the upper is 3.5x)")
    ap.add_argument("--provider", choices=["none", "local", "libcloud"], default="none",
                    help="who launches and destroys nodes for the scaling policy (default none)")
    ap.add_argument("--provider-config", default=None, metavar="FILE", help="JSON options of the provider")
    ap.add_argument("--scaling-interval-s", type=float, default=2.0, help="how often the leader scales")
    ap.add_argument("--max-voters", type=int, default=5,
                    help="Raft voters at most; further nodes join as non-voting observers (default 5)")
    ap.add_argument("--log-level", default=os.environ.get("POD_LOG_LEVEL", "INFO"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    election = max(0.2, a.election_timeout_s)
    timing = RaftTiming(heartbeat_s=min(0.05, election / 4), election_min_s=election,
                        election_max_s=election * 3.5, leader_fallback_s=election * 7.5)
    return NodeConfig(
        node_id=a.id, http_host=a.http[0], http_port=a.http[1], raft_host=a.raft[0], raft_port=a.raft[1],
        peers=[p.strip() for p in a.peers.split(",") if p.strip()], join=a.join,
        data_dir=a.data_dir or os.path.join("pod-data", a.id), slots=a.slots, secret=a.secret or None,
        allow_file_urls=a.allow_file_urls, advertise_host=a.advertise_host,
        output_cap_bytes=a.output_cap_bytes, kill_grace_s=a.kill_grace_s, timing=timing,
        node_lost_after_s=a.node_lost_after_s, provider=a.provider,
        provider_options=load_options(a.provider_config), scaling_interval_s=a.scaling_interval_s,
        max_voters=max(3, a.max_voters), cluster_name=a.cluster_name, announce=a.announce,
    )


def use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for each child in a thread of its own; a pidfd watcher needs none (3.12+ does this)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(loop)


async def join_cluster(cfg: NodeConfig, *, timeout_s: float = 60.0) -> tuple[list[str], str]:
    """Ask a member to let this node in; return the voters' Raft addresses and this node's role (a voter,
    or an observer once the cluster has max_voters voters)."""
    url = cfg.join if "://" in (cfg.join or "") else f"http://{cfg.join}"
    headers = {SECRET_HEADER: cfg.secret} if cfg.secret else {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            try:
                async with session.post(f"{url}/internal/join", data={"node": cfg.node_id, "raftAddr": cfg.raft_addr},
                                        headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        return list(body["members"]), body.get("role", "voter")
                    why = body.get("error", f"HTTP {resp.status}")
                    if resp.status < 500:
                        raise SystemExit(f"cannot join through {url}: {why}")
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                why = repr(exc)
            if loop.time() > deadline:
                raise SystemExit(f"cannot join through {url} within {timeout_s:g} s: {why}")
            log.info("join through %s not done yet (%s); retrying", url, why)
            await asyncio.sleep(1.0)


async def serve(cfg: NodeConfig) -> None:
    use_pidfd_child_watcher(asyncio.get_running_loop())
    if cfg.join == "auto":
        found = await find_members(cluster=cfg.cluster_name, timeout_s=10.0, interfaces=cfg.zeroconf_interfaces,
                                   exclude_node=cfg.node_id)
        if not found:
            raise SystemExit(f"--join auto: no member of cluster {cfg.cluster_name!r} answered on the local "
                             "network within 10 s")
        log.info("found cluster %s through zeroconf: %s", cfg.cluster_name, found)
        cfg.join = found[0]
    if cfg.join:
        members, role = await join_cluster(cfg)
        cfg.peers = [m for m in members if m != cfg.raft_addr]
        cfg.observer = role == "observer"
        log.info("joined through %s as %s; voters %s", cfg.join, role, members)
    node = PodNode(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", cfg.node_id)
    await node.stop()


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(serve(parse_args(argv)))
    except IncompatibleDependency as exc:  # refuse to start, saying why, without a traceback
        raise SystemExit(f"podnode: {exc}") from None


if __name__ == "__main__":
    main()
