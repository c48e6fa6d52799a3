"""The one HTTP client for other nodes' internal routes: live output, forwarding to the leader, joining and
promotion. Every request carries the cluster secret in SECRET_HEADER; check_secret is the receiving side."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..errors import BadRequest

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Pod-Secret"
PEER_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)


def secret_headers(secret: str | None) -> dict[str, str]:
    """The headers that prove a request comes from a member (none in a cluster without a secret)."""
    return {SECRET_HEADER: secret} if secret else {}


def check_secret(headers: Mapping[str, str], secret: str | None) -> None:
    """Refuse an internal request that does not carry the cluster secret (BadRequest)."""
    if secret and not hmac.compare_digest(headers.get(SECRET_HEADER, ""), secret):
        raise BadRequest("internal route: missing or wrong cluster secret")


def member_url(join: str) -> str:
    """--join's member as a URL: http://HOST:PORT, or HOST:PORT."""
    return join if "://" in join else f"http://{join}"


class PeerClient:
    """One aiohttp session for the node's requests to other nodes (open between start and close)."""

    def __init__(self, *, secret: str | None, timeout_s: float):
        self.headers = secret_headers(secret)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self._session.close()

    async def execution_output(self, url: str, exec_id: int) -> tuple[str, str] | None:
        """Output so far of an execution running on the node at `url`; None if it cannot say."""
        async with self._session.get(f"{url}/internal/executions/{exec_id}/output", headers=self.headers) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
            return body.get("stdout", ""), body.get("stderr", "")

    async def post(self, url: str, path: str, data: Mapping[str, str], *, timeout_s: float) -> tuple[Any, int]:
        """POST a form to another node's internal route; (JSON body, HTTP status)."""
        async with self._session.post(f"{url}{path}", data=dict(data), headers=self.headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return await resp.json(content_type=None), resp.status


async def post_status(url: str, path: str, data: Mapping[str, str], *, secret: str | None, timeout_s: float) -> int:
    """One POST to another node's internal route in a session of its own (the leader's promotion of an
    observer); its HTTP status, the body unread."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.post(f"{url}{path}", data=dict(data), headers=secret_headers(secret)) as resp:
            return resp.status
