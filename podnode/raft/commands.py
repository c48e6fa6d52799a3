"""Replicated command types: one class per type, and their wire form.

A command's wire form is a plain dict with its type under `t` and its fields under their own names; it is packed
with msgpack before it enters the Raft log, so the log holds data, not pickled code. Types are append-only: never
rename or reuse one, nor a field. Time (`now`, seconds since the epoch) and every other choice are made by the
proposer.

Each class below spells its keys once, as its fields. A sender builds a command with keywords and submits it (the
bridge sends `to_wire()`); the state machine reads a logged dict back with `from_wire()` and its apply case reads
the fields. Commands are slotted dataclasses whose two conversions are generated per class, since they run for
every entry on every node:
- `from_wire(d)` takes the dict as it is: a field without a default is read with `d[key]` (a missing one raises
  KeyError, which State.apply records as a refusal, as before the classes existed), one with a default with
  `d.get(key, default)`. Values are not converted or checked here: the apply cases do that where they always did,
  so an entry logged by any earlier version applies exactly as it did then. A field is required here only where
  every earlier apply case read it unconditionally before changing anything, and a field whose default is not None
  (`version`) keeps the default the apply case always gave a missing key.
- `to_wire()` writes `t` and every field, leaving out an optional field that is None (its default): the apply
  cases read a missing key and a None alike.
Not frozen: commands are values nobody changes, and a frozen dataclass costs about 150 ns more per decode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgpack

NODE_UP = "node_up"
ACTIVITY_NEW = "activity_new"
ACTIVITY_DELETE = "activity_delete"
INSTALL_ASSIGN = "install_assign"
INSTALL_DONE = "install_done"
UNINSTALL_DONE = "uninstall_done"
EXEC_NEW = "exec_new"
EXEC_PLACE = "exec_place"
EXEC_FINISH = "exec_finish"
EXEC_TERMINATE = "exec_terminate"
EXEC_FORGET = "exec_forget"
EXEC_EXPIRE = "exec_expire"
SYNC = "sync"
NODE_LOST = "node_lost"
EXEC_LOST = "exec_lost"
REINSTALL = "reinstall"
POLICY_NEW = "policy_new"
POLICY_DELETE = "policy_delete"
POLICY_APPLY = "policy_apply"
POLICY_RESET = "policy_reset"
NODE_DRAIN = "node_drain"
NODE_LEFT = "node_left"
NODE_LAUNCHED = "node_launched"
NODE_LAUNCH_FAILED = "node_launch_failed"
BATCH = "batch"
NODE_LAUNCH_REF = "node_launch_ref"
TOKEN_NEW = "token_new"
TOKEN_DELETE = "token_delete"
EXEC_NEW_MANY = "exec_new_many"
EXEC_FORGET_MANY = "exec_forget_many"
EXEC_SETTLE = "exec_settle"

Wire = dict[str, Any]


def encode(cmd: Wire) -> bytes:
    return msgpack.packb(cmd, use_bin_type=True)


def decode(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


class Record:
    """A typed view of a wire map: a command, or a report inside one. The methods are generated per class."""

    __slots__ = ()

    @classmethod
    def from_wire(cls: type[R], wire: Wire) -> R:  # replaced per class by _generate
        raise NotImplementedError

    def to_wire(self) -> Wire:  # replaced per class by _generate
        raise NotImplementedError


R = TypeVar("R", bound=Record)


class Command(Record):
    """A replicated command; `t` is its type on the wire."""

    __slots__ = ()
    t: ClassVar[str]


TYPES: dict[str, type[Command]] = {}  # wire type -> class


def _generate(cls: type[R], t: str | None) -> type[R]:
    """cls as a slotted dataclass with from_wire and to_wire written out for its fields (like dataclasses
    writes __init__): they run for every entry on every node, and a loop over the fields is twice as slow."""
    cls = dataclasses.dataclass(slots=True, kw_only=True)(cls)
    env: dict[str, Any] = {"cls": cls}
    decode_lines = ["def from_wire(wire, cls=cls, new=object.__new__):", " o = new(cls)", " get = wire.get"]
    literal = [f"'t': {t!r}"] if t is not None else []  # the required fields go into the dict's literal
    encode_lines = ["def to_wire(self):", None]
    for f in dataclasses.fields(cls):
        key = f.name
        if f.default is dataclasses.MISSING:
            decode_lines.append(f" o.{key} = wire[{key!r}]")
            literal.append(f"{key!r}: self.{key}")
            continue
        if f.default is None:
            decode_lines.append(f" o.{key} = get({key!r})")
        else:
            env[f"_d_{key}"] = f.default
            decode_lines.append(f" o.{key} = get({key!r}, _d_{key})")
        items = f.metadata.get("items")
        value = f"[x.to_wire() for x in self.{key}]" if items else f"self.{key}"
        if f.default is None:
            encode_lines.append(f" if self.{key} is not None: w[{key!r}] = {value}")
        else:
            encode_lines.append(f" w[{key!r}] = {value}")
    decode_lines.append(" return o")
    encode_lines[1] = " w = {" + ", ".join(literal) + "}"
    encode_lines.append(" return w")
    exec("\n".join(decode_lines + encode_lines), env)  # noqa: S102 - code built from the field names above
    cls.from_wire = staticmethod(env["from_wire"])  # type: ignore[method-assign]
    cls.to_wire = env["to_wire"]  # type: ignore[method-assign]
    return cls


def command(t: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: the command class of wire type t."""
    def wrap(cls: type[R]) -> type[R]:
        if t in TYPES:
            raise ValueError(f"command type {t!r} defined twice")
        cls.t = t  # type: ignore[attr-defined]
        cls = _generate(cls, t)
        TYPES[t] = cls  # type: ignore[assignment]
        return cls
    return wrap


def record(cls: type[R]) -> type[R]:
    """Class decorator: a map inside a command (a report)."""
    return _generate(cls, None)


def _list_of(kind: type[Record]) -> Any:
    """A list field of records: to_wire writes each one's wire form. from_wire leaves the list as it came, for
    the apply case to check in full before it decodes the items (see results.maps_with_hashable_ids)."""
    return dataclasses.field(default=None, metadata={"items": kind})


# ---- reports inside commands ----------------------------------------------------------------------------------
@record
class Report(Record):
    """A node's word on one attempt of an execution: ended (exec_finish: exit code and output) or lost with the
    node's restart (exec_lost: id, node and attempt only). Every key may be missing on the wire."""
    id: int | None = None
    node: str | None = None
    attempt: int | None = None
    exitCode: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    stdoutTruncated: bool | None = None
    stderrTruncated: bool | None = None
    error: str | None = None


# ---- nodes and membership -------------------------------------------------------------------------------------
@command(NODE_UP)
class NodeUp(Command):
    """A node registers: at start, and again after a restart or a loss."""
    node: str
    raftAddr: str
    httpUrl: str
    slots: int
    now: float
    version: str = ""
    incarnation: str = ""
    role: str | None = None  # "voter" (None) or "observer"


@command(NODE_LOST)
class NodeLost(Command):
    node: str
    now: float
    reason: str | None = None


@command(NODE_DRAIN)
class NodeDrain(Command):
    node: str
    now: float
    deadlineS: float | None = None  # None: the default deadline; 0: at once
    reason: str | None = None


@command(NODE_LEFT)
class NodeLeft(Command):
    node: str
    now: float
    destroyed: bool | None = None  # its provider destroyed the server


@command(NODE_LAUNCHED)
class NodeLaunched(Command):
    node: str
    provider: str
    now: float
    ref: str | None = None
    hourlyPrice: float | None = None
    maxNodes: int | None = None  # refused when the cluster already holds this many servers


@command(NODE_LAUNCH_REF)
class NodeLaunchRef(Command):
    node: str
    ref: str | None = None
    hourlyPrice: float | None = None
    now: float | None = None


@command(NODE_LAUNCH_FAILED)
class NodeLaunchFailed(Command):
    node: str
    now: float
    reason: str | None = None


# ---- activities and installations ------------------------------------------------------------------------------
@command(ACTIVITY_NEW)
class ActivityNew(Command):
    name: str
    url: str
    now: float
    maxAttempts: int | None = None
    maxActivities: int | None = None  # the proposer's quota: refused (too_many) when this many activities exist
    timeoutS: float | None = None     # this activity's own limits for its executions (0: none; None: the node's)
    memoryMB: int | None = None
    maxProcesses: int | None = None


@command(ACTIVITY_DELETE)
class ActivityDelete(Command):
    name: str
    now: float


@command(INSTALL_ASSIGN)
class InstallAssign(Command):
    now: float
    assignments: list[list[str]] | None = None  # [[activity name, node], ...]


@command(INSTALL_DONE)
class InstallDone(Command):
    name: str
    node: str
    now: float
    ok: bool | None = None
    error: str | None = None


@command(UNINSTALL_DONE)
class UninstallDone(Command):
    name: str
    node: str
    now: float | None = None


@command(REINSTALL)
class Reinstall(Command):
    name: str
    node: str
    now: float


# ---- executions ------------------------------------------------------------------------------------------------
@command(EXEC_NEW)
class ExecNew(Command):
    name: str
    now: float
    input: str | None = None
    requestId: str | None = None
    node: str | None = None  # the proposer's placement, re-checked
    maxWaiting: int | None = None      # the proposer's quotas: refused (too_many) when this many are waiting,
    maxUnreadBytes: int | None = None  # or when this many bytes of ended executions' output are unread
    collector: str | None = None       # newExecution&wait: this node hands the result to the request (ExecSettle)


@command(EXEC_PLACE)
class ExecPlace(Command):
    now: float
    placements: list[list[Any]] | None = None  # [[execution id, node], ...]


@command(EXEC_FINISH)
class ExecFinish(Command):
    now: float
    reports: list[Report] | None = _list_of(Report)
    pull: str | None = None  # the reporting node, to refill its freed slots


@command(EXEC_LOST)
class ExecLost(Command):
    now: float
    reports: list[Report] | None = _list_of(Report)
    reason: str | None = None


@command(EXEC_TERMINATE)
class ExecTerminate(Command):
    id: int
    now: float


@command(EXEC_FORGET)
class ExecForget(Command):
    id: int
    now: float | None = None


@command(EXEC_EXPIRE)
class ExecExpire(Command):
    ids: list[int] | None = None
    requestIdsBefore: float | None = None  # forget request ids older than this
    now: float | None = None


# ---- scaling policies ------------------------------------------------------------------------------------------
@command(POLICY_NEW)
class PolicyNew(Command):
    name: str
    rules: dict[str, float]
    now: float


@command(POLICY_DELETE)
class PolicyDelete(Command):
    name: str
    now: float | None = None


@command(POLICY_APPLY)
class PolicyApply(Command):
    name: str
    now: float | None = None


@command(POLICY_RESET)
class PolicyReset(Command):
    now: float | None = None


# ---- the log itself --------------------------------------------------------------------------------------------
@command(SYNC)
class Sync(Command):
    """Changes nothing: once applied here, everything committed before it is too."""
    now: float | None = None


@command(BATCH)
class Batch(Command):
    """Commands submitted together, one log entry (the bridge's group commit); no batch inside a batch."""
    cmds: list[Wire] | None = None  # their wire forms


def batch(cmds: list[Wire]) -> Wire:
    """The wire form of a batch of wire forms."""
    return Batch(cmds=cmds).to_wire()


@command(TOKEN_NEW)
class TokenNew(Command):
    """An API token made by newToken: its id, name, scope, and the salted hash of its key (never the token)."""
    id: str
    name: str
    scope: str
    salt: str
    hash: str
    now: float


@command(TOKEN_DELETE)
class TokenDelete(Command):
    """Delete an API token by name (the birth admin token's name is "admin")."""
    name: str
    now: float | None = None


# ---- arrays of executions (raft/arrays.py) ---------------------------------------------------------------------
@command(EXEC_NEW_MANY)
class ExecNewMany(Command):
    """newExecutions: many inputs of one activity, all or none. Each becomes an execution as ExecNew makes it;
    with a requestId, input i is recorded under the request id `requestId#i` (a newExecution requestId cannot
    hold '#')."""
    name: str
    now: float
    inputs: list[str] | None = None
    requestId: str | None = None
    node: str | None = None            # the proposer's placement, re-checked for each execution
    maxWaiting: int | None = None      # the proposer's quotas, for all the inputs at once
    maxUnreadBytes: int | None = None


@command(EXEC_FORGET_MANY)
class ExecForgetMany(Command):
    """getExecutionResults: delete many read executions in one entry; each id as ExecForget would."""
    ids: list[int] | None = None
    now: float | None = None


@command(EXEC_SETTLE)
class ExecSettle(Command):
    """The collector node's batch (podnode/server/settle.py): results it handed to the requests that submitted
    them with newExecution&wait (deleted), and executions whose request left before the end (released: anyone
    may read them now). Only executions collected by `node` are touched."""
    node: str
    forget: list[int] | None = None
    release: list[int] | None = None
    now: float | None = None
