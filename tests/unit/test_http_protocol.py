"""podnode.api.protocol: requests aiohttp refuses itself are answered in JSON with 400, 414 or 431.

The runner relies on aiohttp internals (Server._loop and ._kwargs, AppRunner._make_server, the arguments
of RequestHandler.handle_error and of LineTooLong); these tests fail if an aiohttp upgrade changes them.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from podnode.api import protocol
from podnode.errors import BadRequest, HeadersTooLarge, UriTooLong

LINE, FIELD = 1000, 500


def test_the_aiohttp_members_the_runner_uses_are_there():
    assert list(inspect.signature(web.RequestHandler.handle_error).parameters) == \
        ["self", "request", "status", "exc", "message"]
    assert "_make_server" in vars(web.AppRunner)
    assert LineTooLong(b"GET /x", 8190).args[1] == 8190  # the limit, which tells a URL from a header
    assert "max_line_size" in web.RequestHandler.__slots__


def test_parser_errors_map_to_kinds():
    assert isinstance(protocol.protocol_error(LineTooLong(b"GET /", LINE), 400, max_line_size=LINE), UriTooLong)
    assert isinstance(protocol.protocol_error(LineTooLong(b"X-A", FIELD), 400, max_line_size=LINE), HeadersTooLarge)
    bad = protocol.protocol_error(BadHttpMessage("Too many headers received"), 400, max_line_size=LINE)
    assert isinstance(bad, BadRequest) and "Too many headers" in bad.message
    assert protocol.protocol_error(RuntimeError("boom"), 500, max_line_size=LINE) is None


def test_the_limits_must_differ():
    with pytest.raises(ValueError):
        protocol.JsonErrorAppRunner(web.Application(), max_line_size=LINE, max_field_size=LINE)
    limits = protocol.request_limits(64 * 1024)
    assert limits["max_line_size"] > 3 * 64 * 1024 and limits["max_field_size"] == protocol.MAX_HEADER_BYTES


async def _exchange(port: int, data: bytes) -> tuple[int, str, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), ctype, json.loads(body)


async def test_a_runner_answers_refused_requests_in_json():
    async def ok(request):
        return web.json_response({"ok": True})

    async def boom(request):
        raise RuntimeError("a bug")

    app = web.Application()  # no middleware: whatever escapes a handler reaches the protocol's handle_error
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", boom)
    runner = protocol.JsonErrorAppRunner(app, max_line_size=LINE, max_field_size=FIELD, access_log=None)
    await runner.setup()
    try:
        assert protocol.hooks_present(runner.server)
        assert isinstance(runner.server(), protocol.JsonErrorRequestHandler)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]

        def get(path: bytes, headers: bytes = b"") -> bytes:
            return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"

        assert await _exchange(port, get(b"/ok")) == (200, "application/json; charset=utf-8", {"ok": True})
        code, ctype, body = await _exchange(port, get(b"/ok?" + b"a" * LINE))
        assert (code, ctype) == (414, "application/json; charset=utf-8") and str(LINE) in body["error"]
        code, ctype, body = await _exchange(port, get(b"/ok", b"X-A: " + b"h" * FIELD * 2 + b"\r\n"))
        assert (code, ctype) == (431, "application/json; charset=utf-8") and str(FIELD) in body["error"]
        code, ctype, body = await _exchange(port, b"\x00garbage\r\n\r\n")
        assert (code, ctype) == (400, "application/json; charset=utf-8")
        assert body["error"].startswith("malformed HTTP request")
        assert await _exchange(port, get(b"/boom")) == \
            (500, "application/json; charset=utf-8", {"error": "internal error; see the node's log"})
    finally:
        await runner.cleanup()


async def test_without_the_hooks_the_runner_serves_with_aiohttps_own_answers(monkeypatch, caplog):
    monkeypatch.setattr(protocol, "_SERVER_MEMBERS", ("_loop", "_kwargs", "_gone_in_a_new_aiohttp"))
    runner = protocol.JsonErrorAppRunner(web.Application(), max_line_size=LINE, max_field_size=FIELD)
    await runner.setup()
    try:
        assert type(runner.server) is web.Server
        assert "lacks _gone_in_a_new_aiohttp" in caplog.text
    finally:
        await runner.cleanup()
