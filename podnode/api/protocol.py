"""Requests aiohttp refuses before any handler or middleware runs (a malformed request line, a URL or a header
over the limits) are answered like every other error: JSON `{"error": ...}` with a fitting code.

aiohttp's connection protocol (web_protocol.RequestHandler) writes those answers itself, as plain text,
in `handle_error`; it has no setting for this. So the runner here builds aiohttp's server as usual and
hands each connection a RequestHandler whose `handle_error` answers in JSON. That touches two private
members of aiohttp's Server (`_loop`, `_kwargs`, what its own `__call__` builds a connection from) and
overrides AppRunner._make_server; tests/unit/test_http_protocol.py fails if any of that changes. Were they
gone, the runner logs a warning and serves with aiohttp's plain-text answers rather than failing.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from ..errors import BadRequest, HeadersTooLarge, PodError, UriTooLong
from .app import error_response

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024     # one header, name and value (aiohttp's max_field_size)
_SERVER_MEMBERS = ("_loop", "_kwargs")


def request_limits(max_input_bytes: int) -> dict[str, int]:
    """aiohttp's parser limits: a GET URL carries an input of up to max_input_bytes, percent-encoded (up to 3
    bytes a byte) with room to spare; a header is far smaller. The two differ, which is how a too-long line
    is told apart (414 or 431)."""
    line = 4 * max_input_bytes + 8192
    return {"max_line_size": line, "max_field_size": min(MAX_HEADER_BYTES, line - 1)}


def protocol_error(exc: BaseException | None, status: int, *, max_line_size: int) -> PodError | None:
    """The error kind of a request aiohttp's parser refused; None for a server-side failure (a 5xx)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line_size:
            return UriTooLong(f"the request line is over {limit} bytes: shorten the URL, or send the "
                              "parameters as a form POST body")
        return HeadersTooLarge(f"a request header is over {limit} bytes")
    if isinstance(exc, HttpProcessingError) or 400 <= status < 500:
        detail = exc.message if isinstance(exc, HttpProcessingError) and exc.message else str(exc or "")
        return BadRequest(f"malformed HTTP request: {detail[:300]}")
    return None


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, answering the requests it refuses in JSON."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        error = protocol_error(exc, status, max_line_size=self.max_line_size)
        if error is None:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:
            log.info("refused a request from %s: %s", request.remote, error.message)
        if request.writer.output_size > 0:  # part of an answer went out already: the connection is broken
            raise ConnectionError("response is sent already, cannot send another response with the error")
        resp = error_response(error or PodError("internal error; see the node's log"))
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


def hooks_present(server: Any) -> bool:
    return all(hasattr(server, name) for name in _SERVER_MEMBERS)


class JsonErrorAppRunner(web.AppRunner):
    """web.AppRunner whose connections answer refused requests in JSON (see the module's docstring)."""

    def __init__(self, app: web.Application, *, max_line_size: int, max_field_size: int, **kwargs: Any):
        if max_field_size == max_line_size:
            raise ValueError("max_field_size must differ from max_line_size: that tells 414 from 431")
        super().__init__(app, max_line_size=max_line_size, max_field_size=max_field_size, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if not hooks_present(server):
            log.warning("this aiohttp's Server lacks %s: malformed requests get aiohttp's plain-text answers",
                        ", ".join(n for n in _SERVER_MEMBERS if not hasattr(server, n)))
            return server
        return _JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation, loop=server._loop,
                                **server._kwargs)
