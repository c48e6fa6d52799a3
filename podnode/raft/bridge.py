"""Await replicated commands from asyncio without blocking the loop, with group commit.

pysyncobj calls back from its own thread; the callback only hops onto the loop with call_soon_threadsafe.
Commands submitted while earlier ones are in flight are packed into one `batch` entry, so a burst of
requests costs few log entries. A batch that gets no answer within its timeout fails with 503 and is
forgotten; a late answer for it is ignored.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Any

from pysyncobj import FAIL_REASON

from ..errors import Unavailable, from_result
from . import commands as C
from .compat import chunk_safe
from .replica import Replica

log = logging.getLogger(__name__)

_REASONS = {
    FAIL_REASON.QUEUE_FULL: "the Raft queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is elected yet",
    FAIL_REASON.DISCARDED: "the leader changed before the command was committed",
    FAIL_REASON.NOT_LEADER: "the node it reached is no longer the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed",
    FAIL_REASON.REQUEST_DENIED: "the leader refused the request",
}


class CommandBridge:
    def __init__(self, replica: Replica, loop: asyncio.AbstractEventLoop, *, timeout_s: float,
                 max_inflight: int = 2, max_batch: int = 256, retry_after_s: float = 1.0):
        self._replica = replica
        self._loop = loop
        self._timeout_s = timeout_s
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._retry_after_s = retry_after_s
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._inflight: dict[int, list[asyncio.Future]] = {}  # in submission order
        self._deadlines: dict[int, float] = {}  # token -> loop time it expires; oldest first
        self._expiry: asyncio.TimerHandle | None = None  # one timer, for the oldest batch in flight
        self._tokens = itertools.count(1)
        self._results: collections.deque = collections.deque()   # (token, single, result, error) from the Raft thread
        self._results_scheduled = False
        self._riders: list[tuple[dict, asyncio.Future]] = []   # submit_soon's: they go with the next batch
        self._riders_timer: asyncio.TimerHandle | None = None

    def _cannot_commit(self) -> Unavailable | None:
        """Why nothing can be committed now (no leader, no majority reached), or None."""
        if self._replica.leader_addr() is None:
            return self._unavailable("no leader is elected yet; nothing was changed")
        if not self._replica.has_quorum():
            return self._unavailable("this node reaches no majority of the cluster; nothing was changed")
        return None

    def _unavailable(self, why: str) -> Unavailable:
        return Unavailable(f"The cluster cannot accept writes right now: {why}; retry shortly",
                           retry_after_s=self._retry_after_s)

    async def submit(self, cmd: C.Command) -> dict[str, Any]:
        """Commit one command and return the state machine's result (a refusal is returned, not raised)."""
        refusal = self._cannot_commit()
        if refusal is not None:
            raise refusal
        fut = self._loop.create_future()
        self._pending.append((cmd.to_wire(), fut))
        self._kick()
        return await fut

    async def submit_ok(self, cmd: C.Command) -> dict[str, Any]:
        """Commit one command; a refusal recorded by the state machine is raised as its PodError."""
        result = await self.submit(cmd)
        if "error" in result:
            raise from_result(result)
        return result

    def submit_soon(self, cmd: C.Command, within_s: float) -> asyncio.Future:
        """Commit a command that may wait: it rides in the next batch this node sends anyway, or goes on its own
        after within_s (a node submitting one thing after another then sends one entry, not two). A future of
        the result, as submit's (Unavailable when it could not be committed)."""
        fut = self._loop.create_future()
        self._riders.append((cmd.to_wire(), fut))
        if self._riders_timer is None:
            self._riders_timer = self._loop.call_later(within_s, self._riders_due)
        return fut

    def _riders_due(self) -> None:
        self._riders_timer = None
        if self._riders:
            refusal = self._cannot_commit()
            if refusal is not None:
                riders, self._riders = self._riders, []
                self._fail([f for _, f in riders], refusal)
                return
            self._pending += self._riders
            self._riders = []
            self._kick()

    def _kick(self) -> None:
        while self._pending and len(self._inflight) < self._max_inflight:
            if self._riders:   # they go with this batch
                self._pending += self._riders
                self._riders = []
                if self._riders_timer is not None:
                    self._riders_timer.cancel()
                    self._riders_timer = None
            group, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            cmds = [c for c, _ in group]
            futs = [f for _, f in group]
            token = next(self._tokens)
            self._inflight[token] = futs
            payload = chunk_safe(cmds[0] if len(cmds) == 1 else C.batch(cmds), C.encode)
            single = len(cmds) == 1

            def on_result(res: Any, err: int, token=token, single=single) -> None:  # Raft thread
                self._results.append((token, single, res, err))
                if not self._results_scheduled:   # one hop onto the loop for all the results of a burst
                    self._results_scheduled = True
                    try:
                        self._loop.call_soon_threadsafe(self._take_results)
                    except RuntimeError:   # the loop has closed (shutdown)
                        pass

            self._deadlines[token] = self._loop.time() + self._timeout_s
            if self._expiry is None:
                self._expiry = self._loop.call_at(self._deadlines[token], self._expire_due)
            try:
                self._replica.submit(payload, on_result)
            except Exception as exc:  # never leave futures hanging
                log.exception("could not hand a command to Raft")
                self._done(token, single, None, -1, repr(exc))

    def _take_results(self) -> None:
        """Loop: the results the Raft thread has handed over since the last call (cleared first: a result added
        after this line schedules another call)."""
        self._results_scheduled = False
        results = self._results
        while results:
            self._done(*results.popleft())

    def _expire_due(self) -> None:
        """Fail the batches that got no answer in time, then arm the timer for the oldest left.

        All batches have the same timeout, so the oldest in flight expires first: one timer does, where a
        timer per batch filled the loop's heap with thousands under load."""
        self._expiry = None
        now = self._loop.time()
        expired = False
        for token, deadline in list(self._deadlines.items()):
            if deadline > now:
                self._expiry = self._loop.call_at(deadline, self._expire_due)
                break
            del self._deadlines[token]
            self._fail(self._inflight.pop(token), self._unavailable(
                f"no commit within {self._timeout_s:g} s; it may still be applied, so check before "
                "repeating it (newExecution: retry with the same requestId)"))
            expired = True
        if expired:
            self._kick()

    def _done(self, token: int, single: bool, res: Any, err: int, why: str | None = None) -> None:
        futs = self._inflight.pop(token, None)
        if futs is None:
            return
        del self._deadlines[token]
        if err != FAIL_REASON.SUCCESS:
            self._fail(futs, self._unavailable(why or _REASONS.get(err, f"Raft error {err}")))
        else:
            results = [res] if single else (res or {}).get("results", [])
            for fut, result in itertools.zip_longest(futs, results, fillvalue=None):
                if fut is not None and not fut.done():
                    fut.set_result(result if isinstance(result, dict) else
                                   {"error": "internal", "message": "no result"})
        self._kick()

    @staticmethod
    def _fail(futs: list[asyncio.Future], exc: Exception) -> None:
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)

    def fail_all(self) -> None:
        """On shutdown: fail whatever waits."""
        for futs in self._inflight.values():
            self._fail(futs, self._unavailable("the node is shutting down"))
        self._inflight.clear()
        self._deadlines.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._fail([f for _, f in self._pending + self._riders], self._unavailable("the node is shutting down"))
        self._pending.clear()
        self._riders.clear()
        if self._riders_timer is not None:
            self._riders_timer.cancel()
            self._riders_timer = None
