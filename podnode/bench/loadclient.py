"""A lean HTTP/1.1 client for the benchmarks' load generator.

The benchmark's client shares the machine's two cores with the nodes it measures, so whatever it spends
is taken from them. aiohttp's client costs about 0.2 ms of CPU per request here; this one, a keep-alive
connection pool over asyncio streams that sends GETs and reads Content-Length bodies, costs a fraction
of that. It speaks only what the action API answers (HTTP/1.1, Content-Length, JSON) and fails loudly on
anything else.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

_timeout = getattr(asyncio, "timeout", None)


class HttpError(RuntimeError):
    pass


class LoadClient:
    def __init__(self, timeout_s: float = 60.0, token: str | None = None):
        self._timeout_s = timeout_s
        self._auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._targets: dict[str, tuple[str, int, bytes]] = {}

    def _target(self, base_url: str) -> tuple[str, int, bytes]:
        target = self._targets.get(base_url)
        if target is None:
            u = urllib.parse.urlsplit(base_url)
            if u.scheme != "http" or u.hostname is None:
                raise ValueError(f"only http://host:port URLs are supported, not {base_url!r}")
            port = u.port or 80
            target = self._targets[base_url] = (u.hostname, port, f"Host: {u.hostname}:{port}\r\n".encode())
        return target

    async def get_json(self, base_url: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """GET base_url+path?params; return (HTTP status, decoded JSON body)."""
        if _timeout is None:  # Python 3.10
            return await asyncio.wait_for(self._get_json(base_url, path, params), self._timeout_s)
        async with _timeout(self._timeout_s):  # cheaper than wait_for: no task of its own
            return await self._get_json(base_url, path, params)

    async def _get_json(self, base_url: str, path: str, params: dict[str, Any] | None) -> tuple[int, Any]:
        host, port, host_header = self._target(base_url)
        if params:
            path = path + "?" + "&".join(f"{k}={_quote(str(v))}" for k, v in params.items())
        pool = self._idle.setdefault((host, port), [])
        reader, writer = pool.pop() if pool else await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + host_header + self._auth + b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, keep = _parse_head(head)
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            pool.append((reader, writer))
        else:
            writer.close()
        return status, json.loads(body)

    async def close(self) -> None:
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
                try:
                    await writer.wait_closed()
                except (ConnectionError, OSError):
                    pass
        self._idle.clear()

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _quote(value: str) -> str:
    return value if value.isalnum() else urllib.parse.quote(value, safe="")


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, keep-alive) from a response's status line and headers."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.x response: {lines[0]!r}")
    status = int(parts[1])
    length, keep = None, parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep = value.strip().lower() == "keep-alive"
        elif name == "transfer-encoding":
            raise HttpError(f"Transfer-Encoding {value.strip()} is not supported by this client")
    if length is None:
        raise HttpError("the response has no Content-Length")
    return status, length, keep
