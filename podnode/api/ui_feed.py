"""The status page's routes: the page itself (GET / and its static files under /ui/, public: they hold no data),
its data as one JSON summary (GET /status/summary) or live as Server-Sent Events (GET /status/feed, a summary
a second), both with the read scope, and the signed peer route a follower asks the leader's scaling view with.

A node keeps, from its start, a throughput sample a second (O(1) counters) and, while it leads, the last scaling
decisions. The summary is built at most once per interval however many pages watch (they share it); each build
costs O(nodes + activities + shown items) plus one request per shown execution running on another node (its
output's tail) and, on a follower, one to the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .. import tokens as T
from .. import ui_summary as U
from ..errors import NotFound, PodError, Unavailable
from ..tokens import STATUS_SCOPE
from .auth import OUTPUT_SCOPE, PAGE_ROUTE, SCOPE_KEY, STATIC_ROUTE, require
from .node_api import NodeApi

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_FILES = frozenset(p.name for p in UI_DIR.iterdir() if p.suffix in (".html", ".js", ".css"))
LEADER_PATH = "/internal/ui-leader"
INTERVAL_S = 1.0          # a sample, a summary, an event: once a second
STREAM_S = 60.0           # a feed ends after this long and the page reconnects, its token checked again
OUTPUT_TIMEOUT_S = 2.0    # the tails of running executions' output, from their nodes, within this
LEADER_TIMEOUT_S = 2.0    # the leader's scaling view, within this
PAGE_HEADERS = {          # the page runs only its own files and cannot be framed by another site
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


class UiFeed:
    """The node's throughput history, the leader's decision log, and the summary shared by every watcher."""

    def __init__(self, node: NodeApi, *, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.time):
        self.node = node
        self.interval_s = interval_s
        self.clock = clock
        self.throughput = U.Throughput()
        self.decisions = U.DecisionLog()
        self.closing = asyncio.Event()
        self._built: tuple[float, dict[str, Any]] | None = None   # (monotonic time, summary)
        self._building: asyncio.Lock | None = None

    # ---- the sampler: a task from the app's start to its cleanup ---------------------------------------
    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a page's history must never take anything else down
                log.exception("status page sample failed")
            await asyncio.sleep(self.interval_s)

    def sample(self) -> None:
        self.throughput.sample(self.clock(), *self.node.read(U.counters))
        if self.node.role() == "leader":
            self.decisions.note(self.node.status_view().get("scaling"))

    # ---- the summary --------------------------------------------------------------------------------------
    async def summary(self) -> dict[str, Any]:
        """The page's data, built at most once per interval (concurrent watchers wait for one build)."""
        if self._building is None:
            self._building = asyncio.Lock()
        async with self._building:
            loop = asyncio.get_running_loop()
            if self._built is None or loop.time() - self._built[0] >= self.interval_s * 0.9:
                self._built = (loop.time(), await self._build())
            return self._built[1]

    async def _build(self) -> dict[str, Any]:
        node = self.node
        status, workers, members = node.status_view(), node.workers_view(), node.members()
        facts = node.waiting_facts()
        cluster = node.read(lambda state: U.read_cluster(state, facts=facts))
        outputs = await asyncio.gather(*(self._output(r) for r in cluster["running"]))
        return U.summary(now=self.clock(), this_node=node.cfg.node_id, status=status, workers=workers,
                         members=members, cluster=cluster, outputs=list(outputs),
                         leader_view=await self._leader_view(status), throughput=self.throughput.series())

    async def _output(self, record: dict[str, Any]) -> tuple[str, str]:
        try:
            return await asyncio.wait_for(self.node.live_output(record), OUTPUT_TIMEOUT_S)
        except asyncio.TimeoutError:
            return "", ""

    async def _leader_view(self, status: dict[str, Any]) -> dict[str, Any]:
        if status.get("role") == "leader":
            return U.leader_part(status, self.decisions)
        if not status.get("leader"):
            return {"unknown": "no leader is known: the cluster has no quorum"}
        try:
            body, code = await asyncio.wait_for(self.node.forward_to_leader(LEADER_PATH, {}), LEADER_TIMEOUT_S)
        except (PodError, asyncio.TimeoutError) as exc:
            why = exc.message if isinstance(exc, PodError) else "it did not answer in time"
            return {"unknown": f"could not ask the leader {status['leader']}: {why}"}
        if code != 200 or not isinstance(body, dict):
            why = body.get("error", "") if isinstance(body, dict) else ""
            return {"unknown": f"the leader {status['leader']} answered {code}: {why}"[:300]}
        return body

    def leader_answer(self) -> dict[str, Any]:
        """This node's answer to a follower's LEADER_PATH request."""
        status = self.node.status_view()
        if status.get("role") != "leader":
            raise Unavailable("this node no longer leads", retry_after_s=1.0)
        return U.leader_part(status, self.decisions)


def add_routes(app: web.Application, node: NodeApi, check_peer: Callable[[web.Request], Awaitable[None]]) -> None:
    """The page, its static files, its data routes and the peer route, on `app` (see the module's doc)."""
    feed = UiFeed(node)

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(UI_DIR / "index.html", headers=PAGE_HEADERS)

    async def static(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in UI_FILES:
            raise NotFound(f"no file {name[:100]!r} in the status page's files")
        return web.FileResponse(UI_DIR / name)

    def for_caller(request: web.Request, summary: dict[str, Any]) -> dict[str, Any]:
        """Output tails only for a token that may read results (OUTPUT_SCOPE)."""
        return summary if T.allows(request.get(SCOPE_KEY, "admin"), OUTPUT_SCOPE) else U.without_output(summary)

    async def summary(request: web.Request) -> web.Response:
        require(request, STATUS_SCOPE, "/status/summary")
        return web.json_response(for_caller(request, await feed.summary()))

    async def stream(request: web.Request) -> web.StreamResponse:
        require(request, STATUS_SCOPE, "/status/feed")
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_S
        async with sse_response(request, headers={"Cache-Control": "no-cache"}) as resp:
            sent = 0
            try:
                while resp.is_connected() and not feed.closing.is_set() and loop.time() < end:
                    try:
                        event, data = "summary", for_caller(request, await feed.summary())
                    except PodError as exc:   # e.g. no quorum for a read: say so, and go on
                        event, data = "problem", {"error": exc.message}
                    await resp.send(json.dumps(data), id=str(sent), event=event)
                    sent += 1
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(feed.closing.wait(), feed.interval_s)
            except (ConnectionResetError, asyncio.TimeoutError):   # the page went away, or stopped reading
                pass
            except Exception:   # the response has started: end the stream (the page reconnects), never a 500
                log.exception("status feed failed")
        return resp

    async def leader(request: web.Request) -> web.Response:
        await check_peer(request)
        return web.json_response(feed.leader_answer())

    async def sampler(app: web.Application):
        task = asyncio.create_task(feed.run(), name="status-page-sampler")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def closing(app: web.Application) -> None:
        feed.closing.set()   # open feeds end now rather than holding the node's stop

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/ui/"):
            response.headers.update(PAGE_HEADERS)

    app.router.add_get("/", page, name=PAGE_ROUTE)
    app.router.add_get("/ui/{name}", static, name=STATIC_ROUTE)
    app.router.add_get("/status/summary", summary, allow_head=False)
    app.router.add_get("/status/feed", stream, allow_head=False)
    app.router.add_post(LEADER_PATH, leader)
    app.cleanup_ctx.append(sampler)
    app.on_shutdown.append(closing)
    app.on_response_prepare.append(headers)
