"""The one HTTP client for other nodes' internal routes: live output, forwarding to the leader, joining and
promotion. Every request carries an HMAC of itself made with the cluster secret (cluster_secret.sign_request),
never the secret; the receiving side is api/app.py's peer check."""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..cluster_secret import sign_request
from ..exec.output_slice import OutputSlice

log = logging.getLogger(__name__)
PEER_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)
FORM = "application/x-www-form-urlencoded"


def signed(secret: str | None, method: str, url: str, body: bytes = b"") -> dict[str, str]:
    """The headers of a request to `url` from a member: its signature (none from a node without a secret, which
    every member refuses)."""
    if not secret:
        return {}
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return sign_request(secret, method, path, body)


def form_body(data: Mapping[str, str]) -> bytes:
    return urllib.parse.urlencode(dict(data)).encode()


def member_url(join: str, scheme: str = "http") -> str:
    """--join's member as a URL: SCHEME://HOST:PORT as given, or HOST:PORT (then the joining node's own scheme:
    a node serving https joins over https)."""
    return join if "://" in join else f"{scheme}://{join}"


def _session(timeout_s: float, ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """A session whose https requests check the other node's certificate with `ssl_context` (None: aiohttp's
    default, the system's store)."""
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), connector=connector)


class PeerClient:
    """One aiohttp session for the node's requests to other nodes (open between start and close)."""

    def __init__(self, *, secret: str | None, timeout_s: float, ssl_context: ssl.SSLContext | None = None):
        self.secret = secret
        self.timeout_s = timeout_s
        self._session = _session(timeout_s, ssl_context)

    async def close(self) -> None:
        await self._session.close()

    async def execution_output(self, url: str, exec_id: int) -> tuple[str, str] | None:
        """Output so far of an execution running on the node at `url`; None if it cannot say."""
        target = f"{url}/internal/executions/{exec_id}/output"
        async with self._session.get(target, headers=signed(self.secret, "GET", target)) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
            return body.get("stdout", ""), body.get("stderr", "")

    async def execution_output_from(self, url: str, exec_id: int, attempt: int, stdout_at: int, stderr_at: int,
                                    wait_s: float) -> OutputSlice | None:
        """The output of an attempt running on the node at `url` after the byte offsets, waiting there up to
        wait_s for some; None if it does not run there (any more)."""
        query = urllib.parse.urlencode({"attempt": attempt, "stdout": stdout_at, "stderr": stderr_at,
                                        "wait": f"{wait_s:.1f}"})
        target = f"{url}/internal/executions/{exec_id}/output-from?{query}"
        async with self._session.get(target, headers=signed(self.secret, "GET", target),
                                     timeout=aiohttp.ClientTimeout(total=wait_s + self.timeout_s)) as resp:
            if resp.status != 200:
                return None
            return OutputSlice.from_json(await resp.json())

    async def post(self, url: str, path: str, data: Mapping[str, str], *, timeout_s: float,
                   sign: bool = True) -> tuple[Any, int]:
        """POST a form to another node's internal route (signed unless `sign` is False: /internal/prove);
        (JSON body, HTTP status)."""
        target, body = f"{url}{path}", form_body(data)
        headers = {"Content-Type": FORM, **(signed(self.secret, "POST", target, body) if sign else {})}
        async with self._session.post(target, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return await resp.json(content_type=None), resp.status


async def post_status(url: str, path: str, data: Mapping[str, str], *, secret: str | None, timeout_s: float,
                      ssl_context: ssl.SSLContext | None = None) -> int:
    """One signed POST to another node's internal route in a session of its own (the leader's promotion of an
    observer); its HTTP status, the body unread."""
    target, body = f"{url}{path}", form_body(data)
    headers = {"Content-Type": FORM, **signed(secret, "POST", target, body)}
    async with _session(timeout_s, ssl_context) as session:
        async with session.post(target, data=body, headers=headers) as resp:
            return resp.status
