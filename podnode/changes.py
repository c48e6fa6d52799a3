"""Wake asyncio waiters when the replicated state changes (notified from the Raft thread).

Two kinds of waiter: the agent and the manager wake on any change; a client waiting for one execution
wakes only when that execution changes, so many waiting clients cost nothing per unrelated commit.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Iterable

ALL = object()  # marker: everything may have changed (a snapshot was loaded)


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._next: asyncio.Future = loop.create_future()  # resolved at the next change, then replaced
        self._scheduled = False
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
        fired, self._next = self._next, self._loop.create_future()
        fired.set_result(None)
        while self._touched:
            item = self._touched.popleft()
            ids = list(self._execution_waiters) if item is ALL else [item]
            for exec_id in ids:
                for fut in self._execution_waiters.pop(exec_id, []):
                    if not fut.done():
                        fut.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Return at the next change, or after timeout_s.

        Every waiter shares one future per change (no task each). asyncio.wait, not wait_for: on Python
        3.11 wait_for can swallow a cancellation that arrives as the inner wait completes, which left a
        stopping node looping forever; asyncio.wait never cancels the shared future either.
        """
        await asyncio.wait({self._next}, timeout=timeout_s)

    async def wait_execution(self, exec_id: int, timeout_s: float) -> None:
        """Return when execution `exec_id` changes, or after timeout_s."""
        fut = self._loop.create_future()
        self._execution_waiters.setdefault(exec_id, []).append(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout_s)
        finally:
            waiters = self._execution_waiters.get(exec_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._execution_waiters[exec_id]
