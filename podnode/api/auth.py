"""Who may call the API: bearer tokens with scopes, and browsers' cross-site requests.

- `/health` is open (a load balancer's probe): it answers only whether the node is up and its role;
  `/openapi.json` too: the API's description, the same for every node of a version, no state of the cluster.
- The status page (`GET /` and its files under `/ui/`, routes named PAGE_ROUTE and STATIC_ROUTE) is open: it holds
  no data, which it reads from routes that need a token (api/ui_feed.py).
- `/internal/*` are the peers' routes: each checks its own HMAC signature made with the cluster secret (app.py),
  so this layer lets them through.
- Everything else needs `Authorization: Bearer TOKEN` (unless the node runs with `--auth none`, which only a
  node whose HTTP binds loopback may): no token or a wrong one is a 401 with `WWW-Authenticate: Bearer`, before
  anything of the request is read or changed. The token's scope is kept on the request; the action handler
  checks it against the action's (403 when too narrow), once it knows which action was asked for.
- A node that has just started answers 503 until it has caught up with the cluster's state (server/node.py),
  so that a token deleted while it was down is not taken from its old state.
- A request whose `Origin` is not the node's own (a page of another site, open in a user's browser) is a 403,
  unless allowed with `--allow-origin`: without it, any web page could drive a local cluster.

A token is checked with one lookup in the replicated state by its id and one SHA-256 compared in constant time
(podnode/tokens.py); the birth admin token is compared with the one derived from the secret.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import tokens as T
from ..config import NodeConfig
from ..errors import Forbidden, Unauthorized, Unavailable

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/openapi.json"})   # /openapi.json: the API's description, no state
PAGE_ROUTE, STATIC_ROUTE = "ui-page", "ui-static"   # open by the route that matched, never by a path's prefix
PEER_PREFIX = "/internal/"
METRICS_SCOPE = "read"   # GET /metrics: a scraper's token (Prometheus sends it with `authorization: credentials`)
SCOPE_KEY = "pod_scope"   # request[SCOPE_KEY]: the caller's scope, set by the middleware
# GET /POD/executions/ID/stream (api/stream.py): it consumes nothing, but an execution's output is its result,
# which only a token that may run work and read its results sees (a read token, e.g. a metrics scraper's, does not).
STREAM_SCOPE = "submit"
OUTPUT_SCOPE = "submit"   # the status page shows output tails only to a token of this scope
# A token made through one node is known to another once that node has applied its entry, milliseconds later: a
# well-formed token this node does not know yet is looked up again as changes arrive, this long at most (local
# waits only: a made-up token costs its sender this delay and the cluster nothing).
TOKEN_ARRIVAL_S = 0.5
NO_TOKEN = ("no token: send Authorization: Bearer TOKEN (a `pod up` cluster keeps its admin token in "
            "pod-data/token; the pod CLI reads it from there, $POD_TOKEN or --token)")


class Authenticator:
    """Checks requests against the node's config and the replicated token records. `read` runs a function of
    the replicated state under the replica's lock (NodeApi.read)."""

    def __init__(self, cfg: NodeConfig, read: Callable[[Callable[[Any], Any]], Any],
                 serving: Callable[[], bool] = lambda: True,
                 wait_change: Callable[[float], Awaitable[None]] | None = None):
        self.enabled = cfg.auth != "none"
        self.read = read
        self.serving = serving
        self.wait_change = wait_change
        self._admin = T.admin_token(cfg.secret) if cfg.secret else None
        self._allowed = set(cfg.allow_origins)
        self._own = own_origins(cfg)
        self._wildcard_bind = cfg.http_host in ("0.0.0.0", "::", "")
        self._scheme = cfg.http_scheme
        if not self.enabled:
            log.warning("AUTHENTICATION IS OFF (--auth none): anyone who can reach %s:%s can run code on this "
                        "cluster. Every process of this machine can.", cfg.http_host, cfg.http_port)

    # ---- origin -------------------------------------------------------------------------------------
    def check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None or "*" in self._allowed or origin in self._allowed or origin in self._own:
            return
        if self._wildcard_bind and origin == f"{self._scheme}://{request.host}" and _ip_host(request.host):
            return   # bound to every interface: the page was served by this node at one of its addresses
        raise Forbidden(f"cross-site request from {origin[:200]!r} refused: this node takes requests only from "
                        f"its own pages (start it with --allow-origin ORIGIN to allow another site)")

    # ---- token --------------------------------------------------------------------------------------
    def scope(self, request: web.Request) -> str:
        """The scope of the request's token; raises Unauthorized (401) without a valid one."""
        if not self.enabled:
            return "admin"
        header = request.headers.get("Authorization")
        if header is None:
            raise Unauthorized(NO_TOKEN)
        token = T.bearer(header)
        parsed = T.parse(token) if token else None
        if parsed is None:
            raise Unauthorized("malformed Authorization header: expected Bearer pod_... (a POD token)")
        token_id, key = parsed
        if token_id == T.ADMIN_ID:
            ok = self._admin is not None and hmac.compare_digest(token, self._admin) and \
                not self.read(lambda s: s.admin_revoked)
            if ok:
                return "admin"
        else:
            record = self.read(lambda s: s.tokens.get(token_id))
            if record is not None and T.matches(record, key):
                return record["scope"]
        raise Unauthorized("invalid token: unknown, deleted, or of another cluster")

    def may_be_in_flight(self, request: web.Request) -> bool:
        """A well-formed token whose id this node has no record of: made through another node just now?"""
        header = request.headers.get("Authorization")
        parsed = T.parse(T.bearer(header) or "") if header else None
        return parsed is not None and parsed[0] != T.ADMIN_ID and \
            self.read(lambda s: s.tokens.get(parsed[0])) is None

    async def scope_when_known(self, request: web.Request) -> str:
        """scope(), after waiting up to TOKEN_ARRIVAL_S for a token this node may not have applied yet."""
        try:
            return self.scope(request)
        except Unauthorized:
            if self.wait_change is None or not self.may_be_in_flight(request):
                raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TOKEN_ARRIVAL_S
        while loop.time() < deadline and self.may_be_in_flight(request):
            await self.wait_change(deadline - loop.time())
        return self.scope(request)


def require(request: web.Request, needed: str, what: str) -> None:
    """Refuse (403) a caller whose token's scope does not allow `what`, which needs `needed`."""
    scope = request.get(SCOPE_KEY, "admin")
    if not T.allows(scope, needed):
        raise Forbidden(f"{what} needs a token with the {needed} scope; this one has {scope}")


def middleware(auth: Authenticator):
    @web.middleware
    async def authenticate(request: web.Request, handler) -> web.StreamResponse:
        path = request.path
        if path in OPEN_PATHS or request.match_info.route.name in (PAGE_ROUTE, STATIC_ROUTE):
            return await handler(request)
        auth.check_origin(request)
        if not path.startswith(PEER_PREFIX):
            if not auth.serving():   # its state may be older than the cluster's: a deleted token still in it
                raise Unavailable("this node has just started and is catching up with the cluster; retry shortly",
                                  retry_after_s=1.0)
            request[SCOPE_KEY] = await auth.scope_when_known(request)
        return await handler(request)
    return authenticate


def own_origins(cfg: NodeConfig) -> frozenset[str]:
    """The origins of pages this node serves: its scheme and port at its own names and loopback's."""
    hosts = {"localhost", "127.0.0.1", "[::1]"}
    for host in (cfg.http_host, cfg.advertise_host):
        if host and host not in ("0.0.0.0", "::"):
            hosts.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"{cfg.http_scheme}://{host}:{cfg.http_port}" for host in hosts)


def _ip_host(host_port: str) -> bool:
    """Is the host of a Host header an IP address (not a name, which DNS rebinding could point here)?"""
    host = host_port.rsplit(":", 1)[0] if not host_port.endswith("]") else host_port
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True

