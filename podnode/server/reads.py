"""Reads the API answers from: the replicated state under the replica's lock, catching up with the leader when
a read must see every earlier write, and live output from whichever node runs an execution."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..changes import Changes
from ..errors import Unavailable
from ..exec.output_slice import OutputSlice
from ..raft import commands as C
from ..raft.bridge import CommandBridge
from ..raft.replica import Replica
from ..raft.state import State
from .peers import PEER_ERRORS, PeerClient

log = logging.getLogger("podnode")
T = TypeVar("T")


class Reads:
    def __init__(self, *, node_id: str, replica: Replica, bridge: CommandBridge, changes: Changes, peers: PeerClient,
                 local_output: Callable[[int], tuple[str, str] | None], execution_arrival_s: float,
                 local_output_from: Callable[..., Awaitable[OutputSlice | None]]):
        self.node_id = node_id
        self.replica = replica
        self.bridge = bridge
        self.changes = changes
        self.peers = peers
        self.local_output = local_output
        self.local_output_from = local_output_from   # Agent.output_from
        self.execution_arrival_s = execution_arrival_s  # see read_execution

    def read(self, fn: Callable[[State], T]) -> T:
        with self.replica.lock:
            return fn(self.replica.state)

    async def read_or_sync(self, fn: Callable[[State], T | None]) -> T | None:
        """Read; on a miss, wait until this node has applied everything committed so far and read again.

        A client may create something through one node and ask another at once: this keeps that working.
        """
        value = self.read(fn)
        if value is None:
            await self.bridge.submit(C.Sync())
            value = self.read(fn)
        return value

    async def caught_up(self) -> None:
        """Before a read that must see every earlier write, made through any node: on a follower, wait
        until everything committed so far is applied here. Without quorum the read is served as it is."""
        if not self.replica.is_leader():
            with contextlib.suppress(Unavailable):
                await self.bridge.submit(C.Sync())

    async def read_execution(self, exec_id: int) -> dict[str, Any] | None:
        """An execution's record, or None if it does not exist (any more).

        Ids are handed out in log order, so an id below this node's next one was created here and a miss
        means it is gone. An id at or above it may be in flight to this node: wait briefly
        (execution_arrival_s) for it to arrive, then fall back to a full catch-up (read_or_sync) before
        answering that it does not exist.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.execution_arrival_s
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
        if worker == self.node_id:
            return self.local_output(record["id"]) or ("", "")
        url = self.read(lambda s: s.nodes.get(worker, {}).get("httpUrl"))
        if not url:
            return "", ""
        try:
            return await self.peers.execution_output(url, record["id"]) or ("", "")
        except PEER_ERRORS:
            log.info("could not read live output of %s from %s", record["id"], worker)
            return "", ""

    async def output_from(self, record: dict[str, Any], stdout_at: int, stderr_at: int,
                          wait_s: float) -> OutputSlice | None:
        """The output of the record's current attempt after the byte offsets, from whichever node runs it,
        waiting there up to wait_s for some to come. None if that node does not run it (any more) or cannot be
        reached: the caller then waits for the record to change (its result, or a new attempt)."""
        worker, attempt = record.get("workerId"), record.get("attempt", 0)
        if worker is None:
            return None
        if worker == self.node_id:
            return await self.local_output_from(record["id"], attempt, stdout_at, stderr_at, wait_s)
        url = self.read(lambda s: s.nodes.get(worker, {}).get("httpUrl"))
        if not url:
            return None
        try:
            return await self.peers.execution_output_from(url, record["id"], attempt, stdout_at, stderr_at, wait_s)
        except PEER_ERRORS as exc:
            log.info("could not follow the output of %s on %s: %s", record["id"], worker, exc or type(exc).__name__)
            return None
