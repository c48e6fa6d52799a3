"""The pysyncobj shell around `State`: one replicated method, msgpack snapshots, change notifications.

Rules kept here (they bite): the replicated method never raises, commands are msgpack bytes chosen by the
proposer, both journal and full-dump files are set, and the snapshot is plain msgpack data rather than a
pickle of Python objects. Reads from other threads take `lock`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from pysyncobj import SERIALIZER_STATE, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE

from ..config import RaftTiming
from ..errors import IncompatibleDependency
from . import commands as C
from . import compat, wire
from .crypto import MessageCipher
from .state import State

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = 1
# Observers (non-voting members) do not count for commits, so the leader sends to them at a capped rate
# (ObserverPacer): under load, new entries and commit indexes reach them once every OBSERVER_PERIOD_S (many
# entries in one message: they are about that much behind the voters), and without news a heartbeat every
# OBSERVER_HEARTBEAT_S (their liveness is /internal/alive; this keeps the connection).
OBSERVER_PERIOD_S = 0.01
OBSERVER_HEARTBEAT_S = 0.25
OBSERVER_BURST = 2   # rounds with news that may go back to back: on an idle cluster, an entry and then its commit


def voters_due(mark: tuple[int, int], sent: tuple[int, int]) -> bool:
    """Does a Raft tick that ends with (last log index, commit index) = `mark` send a round to the voters, who
    last got `sent`? New entries: at once. A commit index alone: only once every entry is committed; while some
    are still out, the round that the next new entry or the last acknowledgment brings will carry it (one
    round a batch of entries instead of two, at most a round trip later)."""
    return mark[0] != sent[0] or (mark[1] != sent[1] and mark[1] >= mark[0])


@dataclass
class ObserverPacer:
    """Which of the leader's AppendEntries rounds also go to the observers: a token bucket. A round with news for
    them (entries or a commit index they have not had) takes a token; tokens come back one per period_s, up to
    burst. Without news, a round goes to them once heartbeat_s has passed since their last one. Pure: the
    caller gives the time (Raft thread)."""

    period_s: float = OBSERVER_PERIOD_S
    heartbeat_s: float = OBSERVER_HEARTBEAT_S
    burst: float = OBSERVER_BURST
    tokens: float = OBSERVER_BURST
    at: float = float("-inf")            # their last round (tokens are counted as of then)

    def _tokens(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.at) / self.period_s)

    def due(self, now: float, news: bool) -> bool:
        return self._tokens(now) >= 1 if news else now - self.at >= self.heartbeat_s

    def sent(self, now: float, news: bool) -> None:
        self.tokens = self._tokens(now) - (1 if news else 0)
        self.at = now

    def next_due(self) -> float:
        """When a round with news may go next (news is held back until then)."""
        return self.at + max(0.0, 1 - self.tokens) * self.period_s

    def reset(self) -> None:
        """A new leader: everyone gets its first round at once."""
        self.tokens, self.at = self.burst, float("-inf")


def poll_wait(timeout: float, due: float | None, now: float) -> float:
    """How long the Raft thread's poll waits for a message: pysyncobj's `timeout`, ended early at `due` (when
    news held back from the observers is due), never negative."""
    return timeout if due is None else max(0.0, min(timeout, due - now))


def commits_alone(log_index: int, commit_index: int, other_voters: int) -> bool:
    """Must the leader's next Raft tick come at once, without waiting for a message? When it is the only voter
    and holds entries not yet committed. pysyncobj advances the commit index at the start of a tick and appends
    new commands at its end, so an entry is committed one tick after it was appended: with other voters, the
    tick their acknowledgment wakes; alone, nothing would come and it would wait out the poll (about 50 ms a
    commit: an execution with newExecution&wait took 107 ms on a one-node cluster instead of 4)."""
    return other_voters == 0 and log_index > commit_index


class ReplicaRef:
    """The node's current replica, for every part that uses it: promoting an observer to a voter swaps
    the replica underneath without the parts noticing."""

    def __init__(self, replica: Replica):
        self._replica = replica

    def swap(self, replica: Replica) -> Replica:
        old, self._replica = self._replica, replica
        return old

    def __getattr__(self, name: str):
        return getattr(self._replica, name)


class Replica(SyncObj):
    def __init__(self, *, self_addr: str | None, peers: list[str], data_dir: str, password: str,
                 timing: RaftTiming, on_change: Callable[[set[int] | None], None], bind_address: str | None = None):
        if not password:  # pysyncobj unpickles what reaches its port unless the password's key must open it first
            raise ValueError("a Raft replica needs a password: without one its port runs anyone's pickles")
        compat.check()  # pysyncobj's private members POD uses (those of a running replica: below)
        wire.install()
        # Set before SyncObj.__init__: its tick thread may load the snapshot and apply the journal at once.
        self.state = State()
        # pysyncobj's transport gives every connection `self.encryptor` (the property below), from __init__ on.
        self._cipher = MessageCipher(password)
        self.lock = threading.RLock()
        self._on_change = on_change
        os.makedirs(data_dir, exist_ok=True)
        conf = SyncObjConf(
            password=password,
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=os.path.join(data_dir, "raft.snapshot"),
            serializer=self._save_snapshot,
            serializeChecker=self._snapshot_progress,
            deserializer=self._load_snapshot,
            # AppendEntries go out once per Raft tick, carrying everything new (see _after_tick), instead
            # of pysyncobj's unbatched mode, which sends one message per peer per command and per apply.
            appendEntriesUseBatch=True,
            appendEntriesPeriod=timing.heartbeat_s,
            raftMinTimeout=timing.election_min_s,
            raftMaxTimeout=timing.election_max_s,
            leaderFallbackTimeout=timing.leader_fallback_s,
            connectionTimeout=max(timing.connection_timeout_s, timing.election_max_s),
            connectionRetryTime=timing.connection_retry_s,
            logCompactionMinEntries=timing.compaction_min_entries,
            logCompactionMinTime=timing.compaction_min_s,
            commandsWaitLeader=False,         # fail fast (503) instead of queueing while there is no leader
            dynamicMembershipChange=True,
            bindAddress=bind_address,
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_subscribed = False
        self._wake_pending = False   # a wake-up byte is in the pipe, not yet drained by the Raft thread
        self._observers_due_at: float | None = None   # news held back from them: the Raft thread's poll ends then
        self._commit_now = False                 # the leader alone holds uncommitted entries: tick again at once
        self._alone_mark = (0, 0)                # ...as of this (last log index, commit index)
        self._sent = (0, 0)  # (last log index, commit index) the leader last sent its voters
        self._observers_sent = (0, 0)            # ...and its observers
        self._pacer = ObserverPacer()            # when they get a round (compat.now() times)
        compat.route_append_entries(self, self._send_round)   # pysyncobj's heartbeats too go through it
        self._snapshot_child: tuple[int, float, str] | None = None   # (pid, start, file) of the writing child
        self._snapshot_aborted = False
        self.snapshot_pauses_s: list[float] = []   # how long each snapshot held the Raft thread (the last 20)
        super().__init__(self_addr, peers, conf)
        try:
            compat.check(self)
        except IncompatibleDependency:
            self.destroy_synchronous()
            raise
        self.addOnTickCallback(self._after_tick)
        compat.cap_poll(self, self._poll_timeout)

    # What pysyncobj encrypts and opens Raft messages with: AES-GCM (crypto.py) instead of its Fernet.
    encryptor = compat.encryptor_override(lambda self: self._cipher)

    def _getEncryptor(self) -> MessageCipher:
        return self._cipher

    def submit(self, payload: bytes, callback: Callable[[Any, int], None]) -> None:
        """Hand a command to Raft from any thread, and wake the Raft thread to send it now (unless a wake-up is
        already on its way: the Raft thread takes every queued command once it is up, so one is enough; a write
        that wakes another thread is among the dearest system calls on this machine)."""
        self.apply_command(payload, callback=callback)
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def _drain_wake(self, fd: int, events: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        # Cleared after the pipe is emptied and before the commands are taken (in the tick after this poll): a
        # command queued after this line writes a wake-up that stays in the pipe; one queued before it is taken in
        # that tick. Cleared before emptying, a wake-up written in between would be read here and lost, and the
        # next command would wait for the poll's timeout.
        self._wake_pending = False

    def _after_tick(self) -> None:
        """Raft thread, end of every tick: new entries to the voters at once, a new commit index when voters_due,
        and what the observers have not had when the pacer lets it go."""
        if not self._wake_subscribed:
            compat.poller(self).subscribe(self._wake_r, self._drain_wake, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)
            self._wake_subscribed = True
        if not compat.is_leader(self):
            self._pacer.reset()                  # a new leader's first round goes to everyone
            self._commit_now = False
            return
        mark = (compat.current_log_index(self), self.raftCommitIndex)
        observers = compat.has_observers(self)
        if mark != self._sent and voters_due(mark, self._sent):
            self._send_round()
        elif observers and mark != self._observers_sent and self._pacer.due(compat.now(), True):
            self._send_round()                   # news held back from the observers: their turn now
        # Still held back: the tick's poll (which waits up to 50 ms for a message) ends when they are due.
        self._observers_due_at = self._pacer.next_due() if observers and self._observers_sent != mark else None
        # At most one tick at once per mark: an entry that did not commit in it (none ever should) waits as usual.
        self._commit_now = commits_alone(mark[0], mark[1], compat.other_voters(self)) and mark != self._alone_mark
        self._alone_mark = mark

    def _poll_timeout(self, timeout: float) -> float:
        """Raft thread: how long the tick's poll may wait for a message (compat.cap_poll)."""
        if self._commit_now:
            return 0.0
        return poll_wait(timeout, self._observers_due_at, compat.now())

    def _send_round(self) -> None:
        """Raft thread: one AppendEntries round, to the voters always, to the observers when the pacer says."""
        now = compat.now()
        mark = (compat.current_log_index(self), self.raftCommitIndex)
        self._sent = mark
        if not compat.has_observers(self):       # nobody to hold news back from
            self._observers_sent = mark
        news = mark != self._observers_sent
        if self._pacer.due(now, news):
            self._pacer.sent(now, news)
            self._observers_sent = mark
            compat.send_append_entries(self)
        else:
            compat.send_append_entries(self, observers=False)

    def destroy_synchronous(self) -> None:
        super().destroy_synchronous()
        self._abort_snapshot()   # a snapshot half written is never put in place
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    @replicated
    def apply_command(self, payload: bytes) -> dict[str, Any]:
        """The one replicated method. Never raises: pysyncobj would retry the entry forever."""
        try:
            cmd = C.decode(payload)
        except Exception as exc:
            return {"error": "bad_request", "message": f"undecodable command: {exc!r}"}
        with self.lock:
            result = self.state.apply(cmd)
            touched, self.state.touched = self.state.touched, set()
        try:
            self._on_change(touched)
        except Exception:
            log.exception("change notification failed")
        return result

    # ---- snapshots (called from the Raft thread) --------------------------------------------------
    # Packing 100,000 executions takes a quarter of a second and more, and pysyncobj calls the serializer on
    # its Raft thread, which applies the entries: packing there (or in a thread of ours: msgpack holds the GIL
    # for a whole packb) would stop the cluster that long. So the Raft thread only forks: the child has a
    # copy-on-write image of the state as of the last applied entry (only the Raft thread changes the state,
    # and it is busy forking), packs it, writes FILE.fork.tmp and fsyncs it, while the parent goes on applying;
    # once the child has exited, the Raft thread renames it over FILE (every rename of FILE happens on the Raft
    # thread: one received from the leader cannot be overwritten by an older one). The pause is the fork
    # (copying page tables: milliseconds per 100 MB).
    #
    # pysyncobj's async serializer protocol (serializeChecker): it calls the serializer with its own temporary
    # name and then renames that to FILE at once; we never create it, so that rename fails (pysyncobj catches
    # the error) and can never put a half-written file in FILE's place. Whether the snapshot is done is
    # then only what _snapshot_progress says: SERIALIZING until the child exits, then SUCCESS (pysyncobj drops
    # the log entries it covers) or FAILED (it tries again later).
    def _save_snapshot(self, tmp_name: str, raft_data: tuple) -> None:
        last, prev, cluster = raft_data
        filename = tmp_name[:-len(".tmp")] if tmp_name.endswith(".tmp") else tmp_name + ".snapshot"
        header = {"version": SNAPSHOT_VERSION, "last": list(last), "prev": list(prev),
                  "cluster": sorted(node.id for node in cluster if node is not None)}
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork with threads; the child only packs
            pid = os.fork()
        if pid == 0:   # the child: no locks, no logging (another thread may have held them at the fork)
            code = 1
            try:
                _write_snapshot(filename + ".fork.tmp", {**header, "state": self.state.to_dict()})
                code = 0
            finally:
                os._exit(code)
        pause = time.monotonic() - start
        self._snapshot_child = (pid, start, filename)
        self.snapshot_pauses_s = [*self.snapshot_pauses_s[-19:], pause]
        log.info("snapshot: the apply thread paused %.1f ms (fork of child %d)", pause * 1000, pid)

    def _snapshot_progress(self) -> int:
        """pysyncobj's serializeChecker: the state of the snapshot being written by a child, if any."""
        child = self._snapshot_child
        if child is None:
            if self._snapshot_aborted:   # pysyncobj still waits for the one we abandoned
                self._snapshot_aborted = False
                return SERIALIZER_STATE.FAILED
            return SERIALIZER_STATE.NOT_SERIALIZING
        pid, start, filename = child
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, -1
        if done == 0:
            return SERIALIZER_STATE.SERIALIZING
        self._snapshot_child = None
        if status == 0:
            try:
                os.replace(filename + ".fork.tmp", filename)
            except OSError as exc:
                log.warning("snapshot: could not put it in place: %s", exc)
                return SERIALIZER_STATE.FAILED
            log.info("snapshot: %d bytes written in %.2f s", os.path.getsize(filename), time.monotonic() - start)
            return SERIALIZER_STATE.SUCCESS
        log.warning("snapshot: the child writing it failed (wait status %s); it is tried again later", status)
        return SERIALIZER_STATE.FAILED

    def _abort_snapshot(self) -> None:
        """Stop the child writing a snapshot, if any; its file is never put in place."""
        child, self._snapshot_child = self._snapshot_child, None
        if child is None:
            return
        self._snapshot_aborted = True
        with contextlib.suppress(OSError):
            os.kill(child[0], signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(child[0], 0)
        with contextlib.suppress(OSError):
            os.unlink(child[2] + ".fork.tmp")

    def _load_snapshot(self, filename: str) -> tuple:
        self._abort_snapshot()   # one received from the leader replaces ours: ours must not overwrite it
        with open(filename, "rb") as f:
            data = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
        with self.lock:
            self.state.load_dict(data["state"])
        self._on_change(None)  # everything may have changed
        return tuple(data["last"]), tuple(data["prev"]), [TCPNode(n) for n in data["cluster"]]

    # ---- read side --------------------------------------------------------------------------------
    def leader_addr(self) -> str | None:
        leader = compat.leader(self)
        return None if leader is None else str(leader.id if hasattr(leader, "id") else leader)

    def members(self) -> list[str]:
        """Raft addresses of every voting member, this node included (an observer is not one)."""
        me = {str(self.selfNode.id)} if self.selfNode is not None else set()
        return sorted({str(n.id) for n in self.otherNodes} | me)

    @property
    def observer(self) -> bool:
        """A non-voting member (pysyncobj read-only node): it follows the log and submits, never votes."""
        return self.selfNode is None

    def has_quorum(self) -> bool:
        """Does this node reach a majority of the voters (itself included)?"""
        return bool(self.hasQuorum)

    def is_leader(self) -> bool:
        return compat.is_leader(self)

    def response_ages(self) -> dict[str, float]:
        """On the leader: seconds since each peer last answered an AppendEntries (Raft address -> age).

        A frozen peer keeps its TCP connection open, so "connected" alone never notices it; its answers
        stop at once. Reads a private pysyncobj table (see compat, which checks at start that it is there).
        """
        if not compat.is_leader(self):
            return {}
        table = compat.last_response_times(self)
        for _ in range(5):  # the Raft thread may be changing it
            try:
                snapshot = dict(table)
                break
            except RuntimeError:
                continue
        else:
            return {}
        now = compat.now()
        return {str(node.id): now - t for node, t in snapshot.items()}

    def peer_connected(self, addr: str) -> bool:
        return self.isNodeConnected(_tcp_node(addr))


def _write_snapshot(filename: str, data: dict[str, Any]) -> None:
    """Pack and write a snapshot, fsynced (the Raft thread renames it into place)."""
    packed = msgpack.packb(data, use_bin_type=True)
    with open(filename, "wb") as f:
        f.write(packed)
        f.flush()
        os.fsync(f.fileno())


@functools.lru_cache(maxsize=1024)
def _tcp_node(addr: str) -> TCPNode:
    """pysyncobj nodes compare by address; building one parses it, so the leader's frequent liveness checks
    reuse them."""
    return TCPNode(addr)
