"""An execution's output as it is produced, through any node: Server-Sent Events (aiohttp-sse) at
GET /POD/executions/ID/stream. The events and their ids are in stream_events.py. A client resumes with the
Last-Event-ID header (or ?lastEventId=, for a browser's first connection); ?follow=0 sends the output so far
and stops.

The node the client talks to relays: for an attempt running here it waits on the runner's output; for one
running on another node it long-polls that node's signed peer route /internal/executions/ID/output-from with
the byte offsets it has, so each byte crosses the mesh once. Between pieces it waits on the record's changes
(a new attempt after a node loss, the end), never on a loop over executions. A keep-alive comment goes every
KEEPALIVE_S while nothing else does. A client that disconnects stops the relay at the next keep-alive or
write at the latest; nothing it started is left running.

Reading the stream consumes nothing: the end event carries the final record, and getExecutionStatus still
hands the result over (and deletes it) as the contract says. Its scope is read's ("reads that consume
nothing", tokens.ACTION_SCOPES), like getAllExecutions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ..errors import BadRequest, NotFound
from ..raft.state import missing_execution
from . import params as P
from .auth import STREAM_SCOPE, require
from .node_api import NodeApi
from .stream_events import (
    Event,
    Position,
    attempt_event,
    check_resumable,
    final_events,
    gone_event,
    is_over,
    parse_event_id,
    slice_events,
)

log = logging.getLogger(__name__)

KEEPALIVE_S = 10.0          # a comment line while nothing else is sent (proxies and clients keep the connection)
FOLLOW_WAIT_S = 10.0        # one long-poll for output, on this node or another
RETRY_PAUSE_S = 1.0         # the worker could not be asked: ask again after this long, or at the record's change
MAX_PEER_WAIT_S = 30.0      # the most a peer's long-poll may ask to wait


def add_stream_routes(app: web.Application, node: NodeApi, check_peer: Callable[[web.Request], Awaitable[None]]):
    async def stream(request: web.Request) -> web.StreamResponse:
        return await stream_execution(request, node)

    async def output_from(request: web.Request) -> web.Response:
        await check_peer(request)
        return await peer_output_from(request, node)

    app.router.add_get("/POD/executions/{id}/stream", stream, allow_head=False)
    app.router.add_get("/internal/executions/{id}/output-from", output_from, allow_head=False)


def _follow_flag(raw: str | None) -> bool:
    if raw is None or raw.strip().lower() in ("1", "true", "yes", ""):
        return True
    if raw.strip().lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"Invalid follow {raw[:20]!r}: 1 (follow until the end, the default) or 0 (what is there now)")


async def stream_execution(request: web.Request, node: NodeApi) -> web.StreamResponse:
    """Check everything (scope, id, Last-Event-ID, that the execution exists) before the stream starts, so that
    a bad request is a JSON error; then stream until the end."""
    require(request, STREAM_SCOPE, "following an execution's output")
    exec_id = P.execution_id({"executionId": request.match_info["id"]})
    follow = _follow_flag(request.query.get("follow"))
    position = parse_event_id(request.headers.get("Last-Event-ID") or request.query.get("lastEventId"))
    record = await node.read_execution(exec_id)
    if record is None:
        raise NotFound(missing_execution(exec_id)["message"])
    check_resumable(position, record)
    resp = EventSourceResponse(ping_interval=KEEPALIVE_S)
    await resp.prepare(request)
    closed = asyncio.ensure_future(resp.wait())   # done when the client has gone (a keep-alive failed)

    async def send(event: Event) -> None:
        await resp.send(event.text, id=event.id, event=event.name)

    try:
        await _relay(node, exec_id, position, send, closed, follow=follow)
        if closed.done():
            log.info("stopped following execution %s: its client has gone", exec_id)
    except (ConnectionResetError, RuntimeError) as exc:   # RuntimeError: aiohttp's write after the connection closed
        log.info("stopped following execution %s: its client has gone (%s)", exec_id, exc)
    finally:
        resp.stop_streaming()
        await asyncio.wait({closed})
    return resp


async def _relay(node: NodeApi, exec_id: int, position: Position, send: Callable[[Event], Awaitable[None]],
                 closed: asyncio.Future, *, follow: bool) -> None:
    while not closed.done():
        # Watch for the record's next change before reading it: a change between the read and the wait is not missed.
        changed = asyncio.ensure_future(node.wait_execution(exec_id, FOLLOW_WAIT_S))
        output: asyncio.Future | None = None
        try:
            record = node.read(lambda s: s.execution(exec_id))
            if record is None:
                gone = missing_execution(exec_id)["message"] + " (read by a client, or expired)"
                await send(gone_event(position, gone))
                return
            if is_over(record):
                if not position.ended:
                    for event in final_events(position, record):
                        await send(event)
                return
            if record.get("workerId") and record["attempt"] > position.attempt:
                event = attempt_event(record)
                await send(event)
                position = event.position
            running_here = record.get("workerId") and record["attempt"] == position.attempt
            if not follow:
                if running_here:
                    piece = await node.output_from(record, position.stdout, position.stderr, 0.0)
                    if piece is not None:
                        for event in slice_events(position, piece)[0]:
                            await send(event)
                await send(Event("snapshot", {"status": record["status"]}, position))
                return
            if not running_here:
                await asyncio.wait({changed, closed}, return_when=asyncio.FIRST_COMPLETED)
                continue
            output = asyncio.ensure_future(node.output_from(record, position.stdout, position.stderr, FOLLOW_WAIT_S))
            await asyncio.wait({output, changed, closed}, return_when=asyncio.FIRST_COMPLETED)
            piece = output.result() if output.done() and not output.cancelled() else None
            if piece is not None:
                events, position = slice_events(position, piece)
                for event in events:
                    await send(event)
                if events or not piece.ended:
                    continue
            # The attempt's output has ended here, or its node cannot say: wait for its result (or a new
            # attempt) to be recorded; ask again after a pause if neither comes.
            if not changed.done():
                await asyncio.wait({changed, closed}, timeout=RETRY_PAUSE_S if piece is None else FOLLOW_WAIT_S,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(changed, output)


async def _cancel(*futures: asyncio.Future | None) -> None:
    pending = {f for f in futures if f is not None and not f.done()}
    for fut in pending:
        fut.cancel()
    if pending:
        await asyncio.wait(pending)
    for fut in futures:   # retrieve what a finished one raised, so asyncio does not log it as never retrieved
        if fut is not None and fut.done() and not fut.cancelled():
            with contextlib.suppress(Exception):
                fut.result()


def _offset(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15:
        raise BadRequest(f"{name} must be a whole number of bytes")
    return int(raw)


async def peer_output_from(request: web.Request, node: NodeApi) -> web.Response:
    """A relaying node asks for the output of an attempt running here after its byte offsets (signed route)."""
    exec_id = P.execution_id({"executionId": request.match_info["id"]})
    attempt, stdout_at, stderr_at = (_offset(request, k) for k in ("attempt", "stdout", "stderr"))
    wait_s = P.seconds(dict(request.query), "wait", default=0.0, cap_s=MAX_PEER_WAIT_S)
    piece = await node.local_output_from(exec_id, attempt, stdout_at, stderr_at, wait_s)
    if piece is None:
        raise NotFound(f"attempt {attempt} of execution {exec_id} is not running on {node.cfg.node_id}")
    return web.json_response(piece.as_json())

