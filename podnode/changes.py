"""Wake asyncio waiters when the replicated state changes (notified from the Raft thread).

Two kinds of waiter: the agent and the manager wake on any change; a client waiting for one execution
wakes only when that execution changes, so many waiting clients cost nothing per unrelated commit.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

ALL = object()  # marker: everything may have changed (a snapshot was loaded)
COARSE_S = 0.1  # how late a long wait may end


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._waiters: dict[asyncio.Future, float] = {}  # woken at the next change -> loop time to give up
        self._sweep: asyncio.TimerHandle | None = None
        self._scheduled = False
        self.version = 0  # counts wake-ups, so a waiter can tell whether it missed one
        self._touched: collections.deque = collections.deque()  # appended by the Raft thread
        self._execution_waiters: dict[int, list[asyncio.Future]] = {}

    def notify_threadsafe(self, touched: Iterable[int] | None = ()) -> None:
        """Called from any thread; coalesces bursts into one wake-up. touched=None: wake every waiter."""
        if touched is None:
            self._touched.append(ALL)
        else:
            self._touched.extend(touched)
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._fire)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _fire(self) -> None:
        self._scheduled = False
        self.version += 1
        waiters, self._waiters = self._waiters, {}
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        while self._touched:
            item = self._touched.popleft()
            ids = list(self._execution_waiters) if item is ALL else [item]
            for exec_id in ids:
                for fut in self._execution_waiters.pop(exec_id, []):
                    if not fut.done():
                        fut.set_result(None)

    async def wait(self, timeout_s: float, since: int | None = None) -> None:
        """Return at the next change, or after timeout_s; at once if there was one after `version` was
        `since` (a change that came while the caller was busy is not missed)."""
        if since is not None and since != self.version:
            return
        if timeout_s < 2 * COARSE_S:
            fut = self._loop.create_future()
            self._waiters[fut] = float("inf")
            try:
                await self._until(fut, timeout_s)
            finally:
                self._waiters.pop(fut, None)
            return
        # Long waits (the agent's and the manager's, a thousand a second under load) share one sweep
        # timer instead of a timer each: they may run up to COARSE_S late.
        fut = self._loop.create_future()
        self._waiters[fut] = self._loop.time() + timeout_s
        if self._sweep is None:
            self._sweep = self._loop.call_later(COARSE_S, self._sweep_due)
        try:
            await fut
        finally:
            self._waiters.pop(fut, None)

    def _sweep_due(self) -> None:
        self._sweep = None
        now = self._loop.time()
        for fut, deadline in list(self._waiters.items()):
            if deadline <= now:
                del self._waiters[fut]
                _resolve(fut)
        if self._waiters:
            self._sweep = self._loop.call_later(COARSE_S, self._sweep_due)

    async def wait_execution(self, exec_id: int, timeout_s: float) -> None:
        """Return when execution `exec_id` changes, or after timeout_s."""
        fut = self._loop.create_future()
        self._execution_waiters.setdefault(exec_id, []).append(fut)
        try:
            await self._until(fut, timeout_s)
        finally:
            waiters = self._execution_waiters.get(exec_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._execution_waiters[exec_id]

    async def _until(self, fut: asyncio.Future, timeout_s: float) -> None:
        """Await a future of this waiter's own until it is resolved or timeout_s passes.

        Cheaper than asyncio.wait (no sets, no callbacks per call), and unlike Python 3.11's wait_for it
        never swallows a cancellation: cancelling the waiting task just cancels its own future.
        """
        timer = self._loop.call_later(max(0.0, timeout_s), _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
