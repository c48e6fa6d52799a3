"""Tests for podnode.bench.loadclient, the benchmarks' HTTP client, against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from podnode.bench.loadclient import HttpError, LoadClient


@pytest.fixture
async def server():
    connections: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        if request.transport not in connections:
            connections.append(request.transport)
        return web.json_response({"query": dict(request.query)}, status=int(request.query.get("status", 200)))

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"a": 1}')
        await resp.write_eof()
        return resp

    async def close(request: web.Request) -> web.Response:
        return web.json_response({"bye": True}, headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/POD/", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        await runner.cleanup()


async def test_sends_parameters_and_reuses_connections(server):
    url, connections = server
    async with LoadClient(timeout_s=5) as client:
        for i in range(5):
            status, body = await client.get_json(url, "/POD/", {"action": "x", "input": f"a b&c={i}/é"})
            assert status == 200
            assert body == {"query": {"action": "x", "input": f"a b&c={i}/é"}}
    assert len(connections) == 1  # keep-alive: one connection for five requests in a row


async def test_concurrent_requests_each_get_their_own_answer(server):
    url, _ = server
    async with LoadClient(timeout_s=5) as client:
        answers = await asyncio.gather(*(client.get_json(url, "/POD/", {"n": str(i)}) for i in range(20)))
    assert [body["query"]["n"] for _, body in answers] == [str(i) for i in range(20)]


async def test_error_status_is_returned_with_its_body(server):
    url, _ = server
    async with LoadClient(timeout_s=5) as client:
        assert await client.get_json(url, "/POD/", {"status": "404"}) == (404, {"query": {"status": "404"}})


async def test_connection_close_is_honoured(server):
    url, _ = server
    async with LoadClient(timeout_s=5) as client:
        assert await client.get_json(url, "/close") == (200, {"bye": True})
        assert client._idle[("127.0.0.1", int(url.rsplit(":", 1)[1]))] == []
        assert (await client.get_json(url, "/POD/", {"a": "1"}))[0] == 200


async def test_chunked_responses_are_refused_loudly(server):
    url, _ = server
    async with LoadClient(timeout_s=5) as client:
        with pytest.raises(HttpError, match="Transfer-Encoding"):
            await client.get_json(url, "/chunked")


async def test_only_plain_http_urls():
    async with LoadClient() as client:
        with pytest.raises(ValueError):
            await client.get_json("https://example.invalid", "/")
