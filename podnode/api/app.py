"""The aiohttp application: routes, and the one place that maps errors to HTTP codes."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..cluster_secret import PeerAuthError, PeerVerifier, prove_answer
from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HeadersTooLarge,
    NotFound,
    PodError,
    TooLarge,
    TooMany,
    Unauthorized,
    Unavailable,
    UriTooLong,
)
from ..tokens import STATUS_SCOPE, action_scope
from . import connection
from .actions import ACTIONS
from .array_actions import MAX_JSON_BODY_BYTES
from .auth import METRICS_SCOPE, Authenticator, require
from .auth import middleware as auth_middleware
from .node_api import NodeApi
from .openapi import document as openapi_document
from .params import is_text
from .stream import add_stream_routes
from .ui_feed import add_routes as add_status_page

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[PodError], int] = {
    BadRequest: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, TooLarge: 413,
    UriTooLong: 414, TooMany: 429, HeadersTooLarge: 431, Unavailable: 503,
}
# What aiohttp raises while reading a form body it cannot parse (an empty, NUL or missing part name, bytes
# that are not in the declared charset, an unknown charset or encoding, a body cut off before its end, a
# body that does not decompress as its Content-Encoding says).
_MALFORMED_BODY = (ValueError, LookupError, RuntimeError, HttpProcessingError, web.RequestPayloadError)


def _json(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    """A JSON response (status and headers optional)."""
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(exc: PodError) -> web.Response:
    """The answer to an error: its kind's code (500 for one not in STATUS_CODES), JSON {"error": message}."""
    status = STATUS_CODES.get(type(exc), 500)
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s or 1)))} if status in (429, 503) else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="pod"'}
    return _json({"error": exc.message}, status, headers)


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PodError as exc:
        return error_response(exc)
    except web.HTTPException as exc:  # aiohttp's routing: an unknown path (404), a method not allowed (405)
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            log.info("the client of %s closed the connection before sending the whole request", request.path)
            return error_response(BadRequest("the connection closed before the whole request was sent"))
        log.exception("unhandled error on %s", request.path_qs)
        return error_response(PodError("internal error; see the node's log"))


async def request_params(request: web.Request) -> dict[str, str]:
    """The query's parameters and, on a POST, the form body's (which win). A body that cannot be parsed is a
    BadRequest (a TooLarge over the size limit), never an internal error; file parts are ignored."""
    params = dict(request.query)
    if request.method == "POST":
        params.update(await (_json_body(request) if request.content_type == "application/json" else _form(request)))
    for key, value in params.items():
        if not is_text(key) or not is_text(value):
            raise BadRequest(f"Parameter {key!r} is not valid Unicode text (it holds a lone surrogate)")
    return params


async def _json_body(request: web.Request) -> dict[str, str]:
    """A JSON object body's members as parameters: a string as it is, any other value as its JSON text (a list
    of inputs, a number), null as missing. Capped at MAX_JSON_BODY_BYTES (413), its own limit, above the form's."""
    too_large = TooLarge(f"request too large: a JSON body may hold up to {MAX_JSON_BODY_BYTES} bytes")
    if (request.content_length or 0) > MAX_JSON_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > MAX_JSON_BODY_BYTES:
                raise too_large
            chunks.append(chunk)
        body = json.loads(b"".join(chunks))
    except _MALFORMED_BODY as exc:  # ValueError: not JSON, or not UTF-8
        raise BadRequest(f"Malformed application/json body: {str(exc)[:300]}") from None
    if not isinstance(body, dict):
        raise BadRequest("a JSON body must be an object of parameters, e.g. {\"name\": ..., \"inputs\": [...]}")
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in body.items() if value is not None}


async def _form(request: web.Request) -> dict[str, str]:
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TooLarge(f"request too large: {exc.text}") from None
    except _MALFORMED_BODY as exc:
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) and exc.__cause__ else exc
        why = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
        raise BadRequest(f"Malformed {request.content_type} body: {why[:300]}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def build_app(node: NodeApi) -> web.Application:
    auth = Authenticator(node.cfg, node.read, node.serving, node.wait_change)
    app = web.Application(middlewares=[errors_as_json, auth_middleware(auth)],
                          client_max_size=4 * node.cfg.max_input_bytes + 65536)

    async def pod_action(request: web.Request) -> web.Response:
        params = await request_params(request)
        named = request.match_info.get("action")   # /POD/NAME: the same action as /POD/?action=NAME
        if named is not None and named not in ACTIONS:
            raise NotFound(f"Unknown action {named!r}; one of: {', '.join(ACTIONS)}")
        if named is not None and (params.get("action") or named) != named:
            raise BadRequest(f"the path names action {named!r} and the parameters {params['action']!r}")
        action = named or params.get("action")
        if not action:
            raise BadRequest(f"Missing parameter 'action'; one of: {', '.join(ACTIONS)}")
        handler = ACTIONS.get(action)
        if handler is None:
            raise BadRequest(f"Unknown action {action!r}; one of: {', '.join(ACTIONS)}")
        require(request, action_scope(action), action)
        connection.serve(request)
        return _json(await handler(node, params))

    async def status(request: web.Request) -> web.Response:
        require(request, STATUS_SCOPE, "/status")
        return _json(node.status_view())

    async def metrics(request: web.Request) -> web.Response:
        require(request, METRICS_SCOPE, "/metrics")
        body, content_type = node.metrics_text(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def health(request: web.Request) -> web.Response:
        """Open to anyone (a load balancer's probe): is the node up, and its role; nothing else."""
        return _json({"ok": True, "role": node.role()})

    openapi = _json(openapi_document()).body   # built once: a function of the code only

    async def openapi_json(request: web.Request) -> web.Response:
        """Open like /health: the API's description (api/openapi.py), no state of the cluster."""
        return web.Response(body=openapi, content_type="application/json")

    peer_auth = PeerVerifier(node.cfg.secret)

    async def check_peer(request: web.Request) -> None:
        """Refuse (401, before anything is read or changed) a peer request without a valid signature made with
        the cluster secret: fresh, of this method, path and body, its nonce not seen before."""
        body = await request.read()
        try:
            peer_auth.check(request.method, request.raw_path, body, request.headers)
        except PeerAuthError as exc:
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
            raise Unauthorized(f"internal route: {exc}") from None

    async def execution_output(request: web.Request) -> web.Response:
        await check_peer(request)
        try:
            exec_id = int(request.match_info["id"])
        except ValueError:
            raise BadRequest("execution id must be a whole number") from None
        output = node.local_output(exec_id)
        if output is None:
            raise NotFound(f"execution {exec_id} is not running on {node.cfg.node_id}")
        return _json({"stdout": output[0], "stderr": output[1]})

    async def join(request: web.Request) -> web.Response:
        """A new node asks to be added to the Raft cluster; it gets the members to start with."""
        await check_peer(request)
        params = await request_params(request)
        raft_addr = params.get("raftAddr", "")
        host, _, port = raft_addr.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise BadRequest("raftAddr must be HOST:PORT")
        if node.is_observer():  # an observer's view of the voters may lag: let the leader decide
            return _json(*(await node.forward_to_leader("/internal/join", params)))
        members = node.members()
        if node.join_role(params.get("node", ""), raft_addr) == "observer":  # launched, or voters full
            return _json({"members": members, "role": "observer"})
        members = await node.add_member(raft_addr)
        return _json({"members": members, "role": "voter"})

    async def promote(request: web.Request) -> web.Response:
        """The leader has made this observer a voter: restart its replica as one."""
        await check_peer(request)
        params = await request_params(request)
        members = [m for m in params.get("members", "").split(",") if m]
        if node.cfg.raft_addr not in members:
            raise BadRequest("members must include this node's Raft address")
        await node.promote(members)
        return _json({"role": node.status_view()["role"]})

    async def sync(request: web.Request) -> web.Response:
        """A member asks this node to apply everything committed so far (deleteToken: a deleted token is refused
        by every node once the deletion answers)."""
        await check_peer(request)
        await node.caught_up()
        return _json({"node": node.cfg.node_id})

    async def alive(request: web.Request) -> web.Response:
        """An observer tells the leader it is alive (observers are not Raft peers): what keeps it from being
        declared lost. One signature check and one clock update; nothing is committed."""
        await check_peer(request)
        params = await request_params(request)
        node.observer_alive(params.get("node", ""))
        return _json({"ok": True})

    async def prove(request: web.Request) -> web.Response:
        """A node about to join (found this one over zeroconf) checks it knows the cluster secret: the answer is
        an HMAC of its challenge, this node's id and URL; the secret itself is never sent, and nothing changes."""
        challenge = (await request_params(request)).get("challenge", "")
        if not (32 <= len(challenge) <= 128 and challenge.isascii() and challenge.isalnum()):
            raise BadRequest("challenge must be 32 to 128 letters or digits")
        if not node.cfg.secret:
            raise Unauthorized("this node has no cluster secret")
        return _json({"node": node.cfg.node_id, "url": node.cfg.http_url,
                      "proof": prove_answer(node.cfg.secret, challenge, node.cfg.node_id, node.cfg.http_url)})

    # No HEAD: aiohttp would answer it by running the GET handler, an action included (405 instead).
    for path in ("/POD/", "/POD"):
        app.router.add_get(path, pod_action, allow_head=False)
        app.router.add_post(path, pod_action)
    app.router.add_get("/POD/{action}", pod_action, allow_head=False)
    app.router.add_post("/POD/{action}", pod_action)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/status", status, allow_head=False)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/internal/executions/{id}/output", execution_output, allow_head=False)
    app.router.add_post("/internal/sync", sync)
    app.router.add_post("/internal/join", join)
    app.router.add_post("/internal/promote", promote)
    app.router.add_post("/internal/alive", alive)
    app.router.add_post("/internal/prove", prove)
    add_stream_routes(app, node, check_peer)
    add_status_page(app, node, check_peer)
    return app
