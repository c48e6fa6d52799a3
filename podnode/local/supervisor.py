"""Keeping a local cluster alive for `pod up`: restart a node that died, let go of one that left, stop all.

A node that exits is restarted from its data dir after a back-off, as a rebooted server would come back;
one that left the cluster on purpose (drained: it wrote `left.json` in its data dir, or the replicated
state says "left") is not, because it is no longer a Raft member and would stand for election forever.
Stopping covers every process in `pod up`'s tree, which, as a child subreaper, includes the nodes the
local provider launched for a policy and every execution, even those whose node died.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .cluster import LocalCluster, LocalNode, get_json
from .left import mark_left, read_left
from .procs import alive, children, descendants, is_node_process, kill_tree, reap_orphans, signal_group, terminate_group

STOP_GRACE_S = 7.0               # SIGTERM to SIGKILL on stop: a node needs its kill grace (5 s) and a little
STRAGGLER_S = 15.0               # a node without a leader this long, while the others have one, is looked into


@dataclass
class Backoff:
    """Restart delays: first_s, doubling up to max_s; back to first_s once a run lasted reset_after_s."""

    first_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 30.0
    next_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.next_s = self.first_s

    def delay_after(self, uptime_s: float) -> float:
        """The wait before the next start of something that ran `uptime_s` before it exited."""
        if uptime_s >= self.reset_after_s:
            self.next_s = self.first_s
        delay, self.next_s = self.next_s, min(self.next_s * 2, self.max_s)
        return delay


@dataclass
class Watched:
    node: LocalNode
    backoff: Backoff
    state: str = "starting"          # starting -> up -> (restarting -> starting ...) | left | down
    started_at: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def status(node: LocalNode) -> dict | None:
    try:
        code, body = get_json(node.url + "/status", timeout_s=1.0, token=node.token, context=node.ssl_context)
    except OSError:
        return None
    return body if code == 200 else None


class Supervisor:
    """Watches the static nodes of a LocalCluster; `tick()` does one round (pod up calls it in a loop)."""

    def __init__(self, cluster: LocalCluster, *, restart: bool = True, say: Callable[[str], None] = print,
                 backoff: Callable[[], Backoff] = Backoff, clock: Callable[[], float] = time.monotonic):
        self.cluster = cluster
        self.restart = restart
        self.say = say
        self.clock = clock
        self.watched = [Watched(n, backoff(), started_at=clock()) for n in cluster.nodes]

    # ---- counting
    def members(self) -> list[Watched]:
        return [w for w in self.watched if w.state != "left"]

    def running(self) -> list[Watched]:
        return [w for w in self.watched if w.node.proc is not None and w.node.proc.poll() is None]

    def own_pids(self) -> set[int]:
        return {w.node.proc.pid for w in self.watched if w.node.proc is not None}

    # ---- one round
    def tick(self) -> None:
        now = self.clock()
        for w in self.watched:
            proc = w.node.proc
            if w.state in ("starting", "up") and proc is not None and proc.poll() is not None:
                self._exited(w, now)
            elif w.state == "restarting" and now >= w.restart_at:
                self.cluster.start_node(w.node)
                w.state, w.started_at, w.restarts = "starting", now, w.restarts + 1
                self.say(f"{w.node.node_id} restarted (pid {w.node.proc.pid}); waiting for it to rejoin")
            elif w.state == "starting" and w.restarts:
                self._rejoining(w, now)
        self.clean_orphans()

    def _rejoining(self, w: Watched, now: float) -> None:
        """Say when a restarted node is back; let it go if it cannot come back (it was taken out of Raft
        while it was down: it would stand for election forever)."""
        s = status(w.node)
        if s and s.get("leader"):
            w.state = "up"
            self.say(f"{w.node.node_id} is back: {len(self.running())} of {len(self.members())} "
                     f"nodes up (leader {s['leader']})")
            return
        if now - w.started_at < STRAGGLER_S:
            return
        for other in self.running():
            other_status = status(other.node) if other is not w else None
            if other_status and other_status.get("leader"):
                why = why_gone(w.node, other.node, other_status, membership=True)
                if why:
                    self.let_go(w.node, why)
                return

    def let_go(self, node: LocalNode, why: str) -> None:
        """Stop a node that cannot be a member any more, record why (the next pod up starts without it),
        and watch it no longer."""
        self.say(f"{node.node_id} {why}; the cluster carries on without it")
        self.cluster.stop_node(node, timeout_s=5.0)
        mark_left(node.data_dir, node.node_id, why)
        self.watched = [w for w in self.watched if w.node is not node]
        if node in self.cluster.nodes:
            self.cluster.nodes.remove(node)

    def mark_up(self) -> None:
        """The cluster came up: every started node counts as up."""
        for w in self.watched:
            if w.state == "starting":
                w.state = "up"

    def _exited(self, w: Watched, now: float) -> None:
        node, code = w.node, w.node.proc.returncode
        if code == 0 and self.left(node):   # a node that leaves stops itself cleanly: a crash never left
            w.state = "left"
            self.say(f"{node.node_id} left the cluster; the cluster carries on with {len(self.running())} "
                     f"nodes ({node.node_id} is not restarted)")
            return
        others = f"the cluster carries on with {len(self.running())} of {len(self.members())}"
        log = self.cluster.log_dir / f"{node.node_id}.log"
        if not self.restart:
            w.state = "down"
            self.say(f"{node.node_id} exited ({describe_exit(code)}); {others}; not restarting it "
                     f"(--no-restart; log {log})")
            return
        delay = w.backoff.delay_after(now - w.started_at)
        w.state, w.restart_at = "restarting", now + delay
        self.say(f"{node.node_id} exited ({describe_exit(code)}); {others}; restarting {node.node_id} "
                 f"in {delay:g} s (log {log})")

    def left(self, node: LocalNode) -> bool:
        """Did the node leave on purpose? Its own record says so, or the replicated state (asked of a live
        node) does; then the record is written, so the next `pod up` knows too."""
        if read_left(node.data_dir) is not None:
            return True
        for w in self.running():
            said = state_says_left(node, w.node)
            if said is not None:
                if said:
                    mark_left(node.data_dir, node.node_id, "the cluster's state says it left")
                return said
        return False

    def clean_orphans(self) -> None:
        """Reap what re-parented to us, and stop the executions of a node that died (they were re-parented
        here; the node's restart reports them lost and they are retried, so they must not run on)."""
        own = self.own_pids()
        reap_orphans(own)
        for pid in children():
            if pid not in own and alive(pid) and not is_node_process(pid):
                signal_group(pid, signal.SIGKILL)   # main.sh leads its own group: its children go with it


def stop_everything(cluster: LocalCluster, *, grace_s: float = STOP_GRACE_S) -> float:
    """SIGTERM every podnode process in this tree (our nodes and the ones the local provider launched), wait
    up to `grace_s` for the whole tree to be gone, SIGKILL what is left. Returns the seconds it took."""
    t0 = time.monotonic()
    own = {n.proc.pid for n in cluster.nodes if n.proc is not None}
    for pid in [p for p in descendants() if is_node_process(p)]:
        terminate_group(pid)

    def reap() -> None:
        for n in cluster.nodes:
            if n.proc is not None:
                n.proc.poll()
        reap_orphans(own)
    while time.monotonic() - t0 < grace_s:
        reap()
        if not any(alive(p) for p in descendants()):
            break
        time.sleep(0.05)
    kill_now(cluster)
    return time.monotonic() - t0


def kill_now(cluster: LocalCluster) -> None:
    """SIGKILL every process in this tree and reap our nodes."""
    own = {n.proc.pid for n in cluster.nodes if n.proc is not None}
    kill_tree(keep=own)
    for n in cluster.nodes:
        if n.proc is not None:
            try:
                n.proc.wait(timeout=2.0)
            except Exception:  # noqa: BLE001 - a zombie we could not reap is not worth a traceback
                pass
    reap_orphans()


def state_says_left(node: LocalNode, member: LocalNode) -> bool | None:
    """Does the replicated state, as `member` reads it, list `node` as left? None if it could not be asked."""
    try:
        code, body = get_json(member.url + "/POD/?action=getWorkers", timeout_s=2.0, token=member.token,
                              context=member.ssl_context)
    except OSError:
        return None
    if code != 200:
        return None
    return {w["id"]: w.get("status") for w in body.get("workers", [])}.get(node.node_id) == "left"


def why_gone(node: LocalNode, member: LocalNode, member_status: dict, *, membership: bool) -> str | None:
    """Why `node` cannot rejoin through `member`, or None: it left (the state says so at once), or (when
    `membership`: asked only after STRAGGLER_S, as a member that is catching up is not listed yet either)
    Raft no longer counts it."""
    if state_says_left(node, member):
        return "left the cluster earlier (the cluster's state says so)"
    if not membership:
        return None
    members = {p.get("address") for p in member_status.get("peers", [])} | {member_status.get("raftAddress")}
    if node.raft_addr not in members:
        return "is no longer a member of the cluster (it was replaced while it was down)"
    return None
