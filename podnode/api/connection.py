"""Is the client of the request being handled still there? The action handlers see only their arguments; a
handler about to hand over a result that reading consumes asks this first (a result written to a closed
connection would be lost). aiohttp does not cancel a handler whose client leaves (handler_cancellation is off),
so the transport is what tells."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from aiohttp import web

_CONNECTED: ContextVar[Callable[[], bool]] = ContextVar("pod_client_connected", default=lambda: True)


def serve(request: web.Request) -> None:
    """Within this request's handling, client_connected() asks its connection."""
    def connected() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()
    _CONNECTED.set(connected)


def client_connected() -> bool:
    """True unless the connection of the request being handled has closed (True outside a request)."""
    return _CONNECTED.get()()
