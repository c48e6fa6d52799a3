"""In-process stand-ins for the leader's loops: a replica without Raft and a provider whose calls can be held.

FakeReplica applies each command at once, in order, to a real State (what one voter's Raft does once it
commits), so the real CommandBridge, Manager and Autoscaler run on it unchanged. FakeProvider goes through
the real Provider protocol; each of its calls can be held at a gate (a threading.Event, waited for in a
worker thread like libcloud's blocking calls) for up to `hold_s`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON

from podnode.raft import commands as C
from podnode.raft.state import State
from podnode.scaling.providers import LaunchedNode, ProviderError


def addr(node: str) -> str:
    """The Raft address tests.unit.builders.node_up gives a node."""
    return f"{node}:4000"


class FakeReplica:
    """The replica interface the bridge, the manager and the autoscaler use; this node is the leader."""

    def __init__(self, node: str = "n1", *, voters: tuple[str, ...] = ("n1",)):
        self.node = node
        self.lock = threading.RLock()
        self.state = State()
        self.leader = True
        self.voters = [addr(v) for v in voters]
        self.silent_since: dict[str, float] = {}      # Raft address -> monotonic time it stopped answering
        self.applied: list[tuple[float, dict]] = []   # (monotonic time, command) of everything applied
        self.on_change: Callable[[Any], None] = lambda touched: None
        self.observer = False

    # -- writes
    def apply(self, cmd: dict | C.Command) -> dict:
        if isinstance(cmd, C.Command):  # what the bridge would send
            cmd = cmd.to_wire()
        with self.lock:
            result = self.state.apply(cmd)
            touched, self.state.touched = self.state.touched, set()
            self.applied.append((time.monotonic(), cmd))
            for sub in cmd.get("cmds") or []:
                self.applied.append((time.monotonic(), sub))
        self.on_change(touched)
        return result

    def submit(self, payload: bytes, callback: Callable[[Any, int], None]) -> None:
        callback(self.apply(C.decode(payload)), FAIL_REASON.SUCCESS)

    def removeNodeFromCluster(self, raft_addr: str, callback=None) -> None:  # noqa: N802 - pysyncobj's name
        self.voters = [a for a in self.voters if a != raft_addr]
        if callback:
            callback(None, FAIL_REASON.SUCCESS)

    def addNodeToCluster(self, raft_addr: str, callback=None) -> None:  # noqa: N802
        if raft_addr not in self.voters:
            self.voters.append(raft_addr)
        if callback:
            callback(None, FAIL_REASON.SUCCESS)

    # -- reads
    def leader_addr(self) -> str | None:
        return addr(self.node) if self.leader else None

    def has_quorum(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return self.leader

    def members(self) -> list[str]:
        return sorted(self.voters)

    def response_ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {a: now - self.silent_since.get(a, now) for a in self.voters if a != addr(self.node)}

    def peer_connected(self, raft_addr: str) -> bool:
        return True

    def commands(self, kind: str, since: float = 0.0) -> list[dict]:
        return [c for t, c in self.applied if c.get("t") == kind and t >= since]


class FakeProvider:
    """A provider whose calls count and can be held: each call waits for its gate (set: no wait) for at most
    hold_s, in a worker thread. launch fails when `fail` is set."""

    name = "fake"

    def __init__(self, *, hold_s: float = 10.0, price: float = 0.5, slots: int = 1):
        self.hold_s = hold_s
        self._price = price
        self._slots = slots
        self.gates = {k: threading.Event() for k in ("prepare", "price", "launch", "destroy")}
        for gate in self.gates.values():
            gate.set()
        self.pending = {k: 0 for k in self.gates}     # calls waiting at their gate now
        self.calls: dict[str, list[str]] = {"launch": [], "destroy": []}
        self.fail: str | None = None

    def hold(self, *kinds: str) -> None:
        for kind in kinds:
            self.gates[kind].clear()

    def release(self, *kinds: str) -> None:
        for kind in kinds or tuple(self.gates):
            self.gates[kind].set()

    def _wait(self, kind: str) -> None:
        self.pending[kind] += 1
        try:
            self.gates[kind].wait(self.hold_s)
        finally:
            self.pending[kind] -= 1

    async def prepare(self) -> None:
        await asyncio.to_thread(self._wait, "prepare")

    def hourly_price(self) -> float:
        self._wait("price")   # blocking, as libcloud's first lookup is: must never run on the loop
        return self._price

    def slots_per_node(self) -> int:
        return self._slots

    async def launch(self, node_id: str) -> LaunchedNode:
        self.calls["launch"].append(node_id)
        await asyncio.to_thread(self._wait, "launch")
        if self.fail:
            raise ProviderError(self.fail)
        return LaunchedNode(node_id=node_id, ref=f"ref-{node_id}", hourly_price=self._price, provider=self.name)

    async def destroy(self, node_id: str, ref: str | None = None) -> None:
        self.calls["destroy"].append(node_id)
        await asyncio.to_thread(self._wait, "destroy")

    async def list_nodes(self) -> list[LaunchedNode]:
        return []


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def settle(check: Callable[[], Any] = lambda: True, *, timeout_s: float = 5.0, what: str = "") -> Any:
    """Let the loop run (tasks, bridge callbacks) until check() is truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        await asyncio.sleep(0.01)
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}; last {value!r}")
