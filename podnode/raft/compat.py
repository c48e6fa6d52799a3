"""Every use of pysyncobj's private members, in one place, and the check that they are all there.

pysyncobj 0.3 has no public way to send AppendEntries now, to read when each peer last answered, or to tune
its wire format, so POD reaches into its internals here, and only here. If an upgrade drops one of them, a
node must not run on quietly without it (lost-node detection would stop: `last_response_times` is what the
leader uses to declare a frozen voter lost). `check` runs when a replica starts and refuses to start with the
member's name and the installed pysyncobj version.

Class and module members are checked before the replica is built; members that exist only on a running
replica (set in SyncObj.__init__) are checked on it right after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObj, tcp_connection
from pysyncobj import monotonic as pysyncobj_monotonic
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj.version import VERSION

from ..errors import IncompatibleDependency

PICKLE_PROTOCOL_GLOBAL = "__protocol"   # pysyncobj.pickle's module global that dumps() reads


@dataclass(frozen=True)
class Member:
    """One private member POD uses: where it lives, its name there, and what POD loses without it."""

    owner: str              # "SyncObj" (the class), "replica" (a running SyncObj) or a pysyncobj module
    name: str
    needed_for: str
    valid: Callable[[Any], bool] = lambda value: True   # there, but no longer what POD expects: missing

    @property
    def label(self) -> str:
        return f"{self.owner}.{self.name}"

    def present(self, replica: Any | None) -> bool:
        """Is it there? An instance member is only checked when a running replica is given."""
        if self.owner == "replica":
            return replica is None or hasattr(replica, self.name)
        owner = _OWNERS[self.owner]
        return hasattr(owner, self.name) and self.valid(getattr(owner, self.name))


_OWNERS: dict[str, Any] = {
    "SyncObj": SyncObj,
    "pysyncobj.tcp_connection": tcp_connection,
    "pysyncobj.pickle": pysyncobj_pickle,
    "pysyncobj.monotonic": pysyncobj_monotonic,
}

MEMBERS: tuple[Member, ...] = (
    Member("SyncObj", "_SyncObj__sendAppendEntries", "sending new entries at the end of each Raft tick, and "
           "choosing who gets each round (Replica puts its own in front of it)"),
    Member("SyncObj", "_SyncObj__getCurrentLogIndex", "sending new entries at the end of each Raft tick"),
    Member("SyncObj", "_isLeader", "knowing whether this node leads"),
    Member("SyncObj", "_getLeader", "knowing which node leads"),
    Member("replica", "_SyncObj__lastResponseTime", "lost-node detection (when each peer last answered)"),
    Member("replica", "_SyncObj__otherNodes", "committing at once on a cluster of one voter (how many others vote)",
           lambda v: isinstance(v, set)),
    Member("replica", "_poller", "waking the Raft thread when a command is submitted, and ending its wait when "
           "news held back from observers is due"),
    Member("replica", "_SyncObj__readonlyNodes", "sending to observers at a capped rate (a round to voters only)",
           lambda v: isinstance(v, set)),
    Member("SyncObj", "encryptor", "encrypting Raft messages with AES-GCM (Replica overrides this property)",
           lambda v: isinstance(v, property)),
    Member("pysyncobj.monotonic", "monotonic", "lost-node detection (the clock of the answer times)", callable),
    Member("pysyncobj.tcp_connection", "zlib", "sending small Raft messages uncompressed",
           lambda v: hasattr(v, "compress") and hasattr(v, "decompress")),
    Member("pysyncobj.pickle", PICKLE_PROTOCOL_GLOBAL, "pickling Raft messages with protocol 4",
           lambda v: isinstance(v, int)),
)


def missing(replica: Any | None = None) -> list[Member]:
    return [m for m in MEMBERS if not m.present(replica)]


def check(replica: Any | None = None) -> None:
    """Raise IncompatibleDependency naming every member that is missing (instance members only with `replica`)."""
    gone = missing(replica)
    if gone:
        what = "; ".join(f"{m.label} (needed for {m.needed_for})" for m in gone)
        raise IncompatibleDependency(
            f"pysyncobj {VERSION} lacks private members POD relies on: {what}. POD is written for pysyncobj "
            "0.3.x (see pyproject.toml): install a version it supports, or adapt podnode/raft/compat.py.")


# ---- the accesses themselves ----------------------------------------------------------------------------
def send_append_entries(replica: SyncObj, *, observers: bool = True) -> None:
    """One round of pysyncobj's AppendEntries (its own method, whatever route_append_entries put in front of it):
    to every voter, and to every observer (pysyncobj's read-only nodes) unless observers=False. Raft thread only.

    Voters only: the round runs with pysyncobj's set of read-only nodes emptied, put back after. Only the Raft
    thread changes that set (when an observer connects or disconnects, on receiving or on its own socket's
    error), and a round to voters only touches no observer's socket, so nothing is lost meanwhile; other threads
    read it only in getStatus's count of read-only nodes."""
    send = SyncObj._SyncObj__sendAppendEntries
    if observers:
        send(replica)
        return
    kept = replica._SyncObj__readonlyNodes
    replica._SyncObj__readonlyNodes = set()
    try:
        send(replica)
    finally:
        replica._SyncObj__readonlyNodes = kept


def other_voters(replica: SyncObj) -> int:
    """How many other voting members the replica knows (pysyncobj's other nodes, observers not among them)."""
    return len(replica._SyncObj__otherNodes)


def has_observers(replica: SyncObj) -> bool:
    """Are read-only nodes (POD's observers) connected to this node? Raft thread (no copy of the set)."""
    return bool(replica._SyncObj__readonlyNodes)


def route_append_entries(replica: SyncObj, send: Callable[[], None]) -> None:
    """Make pysyncobj's own AppendEntries rounds (its heartbeat, a new leader's first round) call `send`: SyncObj's
    code calls `self.__sendAppendEntries()`, an attribute looked up on the instance first."""
    replica._SyncObj__sendAppendEntries = send


def current_log_index(replica: SyncObj) -> int:
    return replica._SyncObj__getCurrentLogIndex()


def is_leader(replica: SyncObj) -> bool:
    return replica._isLeader()


def leader(replica: SyncObj) -> Any:
    return replica._getLeader()


def last_response_times(replica: SyncObj) -> dict:
    """The leader's table: peer node -> `now()` when it last answered an AppendEntries (changed by the Raft
    thread while it is read: copy it with care)."""
    return replica._SyncObj__lastResponseTime


def poller(replica: SyncObj) -> Any:
    return replica._poller


def encryptor_override(get: Callable[[Any], Any]) -> property:
    """A property for a SyncObj subclass in place of SyncObj.encryptor, which pysyncobj's transport reads to give
    every connection its encryptor (`encrypt_at_time`, `extract_timestamp`, `decrypt`)."""
    return property(get, doc=SyncObj.encryptor.__doc__)


def cap_poll(replica: SyncObj, timeout: Callable[[float], float]) -> None:
    """Let `timeout(t)` shorten each wait of the Raft thread's poller (pysyncobj's tick ends with
    `self._poller.poll(autoTickPeriod)`): the poller's method, looked up on the instance first."""
    poller = replica._poller
    real = poller.poll
    poller.poll = lambda t: real(timeout(t))


def now() -> float:
    """The clock of last_response_times."""
    return pysyncobj_monotonic.monotonic()


def message_zlib() -> Any:
    """What pysyncobj's connections compress and decompress messages with (the zlib module by default)."""
    return tcp_connection.zlib


def set_message_zlib(module: Any) -> None:
    tcp_connection.zlib = module


def pickle_protocol() -> int:
    return getattr(pysyncobj_pickle, PICKLE_PROTOCOL_GLOBAL)


def set_pickle_protocol(protocol: int) -> None:
    setattr(pysyncobj_pickle, PICKLE_PROTOCOL_GLOBAL, protocol)


# ---- pysyncobj's chunking of a large entry ------------------------------------------------------------------
CHUNK_BYTES = 2 ** 16      # SyncObjConf.appendEntriesBatchSizeBytes (its default; replica.py keeps it)
PICKLE_MARGIN_BYTES = 96   # more than pickling (payload, index, term) ever adds to the payload's length


def chunking_breaks(payload_len: int, *, chunk_bytes: int = CHUNK_BYTES, margin: int = PICKLE_MARGIN_BYTES) -> bool:
    """Would pysyncobj cut this entry wrongly? An entry of chunk_bytes or more goes to followers pickled, in
    chunks; SyncObj.__sendAppendEntries marks as the last the first chunk that reaches the *payload's* length,
    not the pickled entry's. When a chunk boundary falls between the two lengths, a chunk before the last is
    marked 'finish', the follower unpickles a cut-off buffer, and it can never take that entry (pysyncobj
    0.3.x). True when a multiple of chunk_bytes lies in [payload_len, payload_len + margin)."""
    if payload_len < chunk_bytes:
        return False
    return (-payload_len) % chunk_bytes < margin


def chunk_safe(wire: dict[str, Any], encode: Callable[[dict[str, Any]], bytes]) -> bytes:
    """The entry `wire` encoded so that pysyncobj chunks it right: when its length falls where it would not
    (chunking_breaks), a `pad` field, which no apply case reads, moves it past the chunk boundary."""
    payload = encode(wire)
    pad = 0
    while chunking_breaks(len(payload)):
        pad += PICKLE_MARGIN_BYTES
        payload = encode({**wire, "pad": "." * pad})
    return payload
