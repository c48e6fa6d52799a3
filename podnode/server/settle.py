"""newExecution&wait on this node: which requests collect which executions, and the ExecSettle entries that
settle them afterwards.

A request that submits with `wait` makes this node the execution's collector (ExecNew's `collector`): while it is
collected, nobody else can read its result (ExecForget refuses, bulk reads skip it). When it ends, the request
answers the result at once, without waiting for a delete-on-read commit, and this node deletes it afterwards
(`handed`); a request that leaves before the end, or whose client has gone, releases it instead (`released`: it is
for anyone to read, as if submitted without `wait`). Both go out in batches, one ExecSettle entry in flight at a
time, retried while the cluster cannot take writes. If this node dies first, the cluster releases what it collected
(State: NodeLost, NodeLeft, a NodeUp with a new incarnation), so a result is never lost; one handed over just before
may then be read a second time (at least once, like a read whose delete could not commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import Unavailable
from ..raft import commands as C

log = logging.getLogger("podnode")
MAX_IDS = 2000   # per entry
SETTLE_WITHIN_S = 0.05   # a settle waits at most this long for another entry of this node to ride in


class Settler:
    def __init__(self, node_id: str, submit: Callable[[C.Command], Awaitable[dict[str, Any]]], *,
                 retry_first_s: float = 0.2, retry_max_s: float = 5.0):
        """submit: e.g. lambda cmd: bridge.submit_soon(cmd, SETTLE_WITHIN_S), so that a settle rides in the entry
        of the next submission through this node instead of taking one of its own."""
        self.node_id = node_id
        self._submit = submit
        self._retry_first_s, self._retry_max_s = retry_first_s, retry_max_s
        self._claimed: set[int] = set()           # ids a request on this node is collecting now
        self._forget: dict[int, None] = {}         # to settle, in order
        self._release: dict[int, None] = {}
        self._task: asyncio.Task | None = None

    def claim(self, exec_id: int) -> bool:
        """A request starts collecting the execution; False if another request on this node already does (a
        repeated requestId): that one reads it as any reader would."""
        if exec_id in self._claimed:
            return False
        self._claimed.add(exec_id)
        return True

    def settle(self, exec_id: int, *, handed: bool) -> None:
        """The collecting request is done: it handed the result to its client (delete it), or not (release it)."""
        self._claimed.discard(exec_id)
        (self._forget if handed else self._release)[exec_id] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="settle")

    def pending(self) -> int:
        return len(self._forget) + len(self._release)

    async def _run(self) -> None:
        pause_s = self._retry_first_s
        while self._forget or self._release:
            forget, release = list(self._forget)[:MAX_IDS], list(self._release)[:MAX_IDS]
            try:
                result = await self._submit(C.ExecSettle(node=self.node_id, forget=forget, release=release,
                                                         now=time.time()))
            except Exception as exc:   # Unavailable (no leader, no quorum, no commit in time), or a bug: again later
                log.log(logging.INFO if isinstance(exc, Unavailable) else logging.ERROR,
                        "settling %d collected executions waits: %s", len(forget) + len(release), exc)
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, self._retry_max_s)
                continue
            pause_s = self._retry_first_s
            for exec_id in forget:
                self._forget.pop(exec_id, None)
            for exec_id in release:
                self._release.pop(exec_id, None)
            if "error" in result:   # a bug, not a state: never retry it forever
                log.error("ExecSettle refused: %s", result)

    async def stop(self, timeout_s: float) -> None:
        """Settle what is pending if it can be done within timeout_s (else a restart releases it all)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except (asyncio.TimeoutError, Exception):
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
