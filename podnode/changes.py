"""Wake asyncio waiters when the replicated state changes (notified from the Raft thread)."""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()
        self._scheduled = False
        self.version = 0

    def notify_threadsafe(self) -> None:
        """Called from any thread; coalesces bursts into one wake-up."""
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._fire)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _fire(self) -> None:
        self._scheduled = False
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout_s: float) -> None:
        """Return at the next change, or after timeout_s."""
        event = self._event
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
