"""The aiohttp application: routes, and the one place that maps errors to HTTP codes."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import BadRequest, Conflict, NotFound, PodError, TooLarge, Unavailable
from .actions import ACTIONS

if TYPE_CHECKING:
    from ..node import PodNode

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[PodError], int] = {
    BadRequest: 400, NotFound: 404, Conflict: 409, TooLarge: 413, Unavailable: 503,
}


def _json(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    """A JSON response (status and headers optional)."""
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PodError as exc:
        status = STATUS_CODES.get(type(exc), 500)
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s or 1)))} if status == 503 else None
        return _json({"error": exc.message}, status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason if exc.status != 413 else
                      f"request too large ({exc.text})"}, exc.status)
    except Exception:
        log.exception("unhandled error on %s", request.path_qs)
        return _json({"error": "internal error; see the node's log"}, 500)


def build_app(node: PodNode) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=4 * node.cfg.max_input_bytes + 65536)

    async def pod_action(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        action = params.get("action")
        if not action:
            raise BadRequest(f"Missing parameter 'action'; one of: {', '.join(ACTIONS)}")
        handler = ACTIONS.get(action)
        if handler is None:
            raise BadRequest(f"Unknown action {action!r}; one of: {', '.join(ACTIONS)}")
        return _json(await handler(node, params))

    async def status(request: web.Request) -> web.Response:
        return _json(node.status_view())

    async def execution_output(request: web.Request) -> web.Response:
        node.check_peer_secret(request)
        try:
            exec_id = int(request.match_info["id"])
        except ValueError:
            raise BadRequest("execution id must be a whole number") from None
        output = node.agent.output_of(exec_id)
        if output is None:
            raise NotFound(f"execution {exec_id} is not running on {node.cfg.node_id}")
        return _json({"stdout": output[0], "stderr": output[1]})

    async def join(request: web.Request) -> web.Response:
        """A new node asks to be added to the Raft cluster; it gets the members to start with."""
        node.check_peer_secret(request)
        params = dict(request.query) | {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        raft_addr = params.get("raftAddr", "")
        host, _, port = raft_addr.rpartition(":")
        if not host or not port.isdigit():
            raise BadRequest("raftAddr must be HOST:PORT")
        if node.replica.observer:  # an observer's view of the voters may lag: let the leader decide
            return _json(*(await node.forward_to_leader("/internal/join", params)))
        members = node.replica.members()
        if raft_addr not in members and len(members) >= node.cfg.max_voters:
            return _json({"members": members, "role": "observer"})
        members = await node.add_member(raft_addr)
        return _json({"members": members, "role": "voter"})

    async def promote(request: web.Request) -> web.Response:
        """The leader has made this observer a voter: restart its replica as one."""
        node.check_peer_secret(request)
        params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        members = [m for m in params.get("members", "").split(",") if m]
        if node.cfg.raft_addr not in members:
            raise BadRequest("members must include this node's Raft address")
        await node.promote(members)
        return _json({"role": node.status_view()["role"]})

    for path in ("/POD/", "/POD"):
        app.router.add_get(path, pod_action)
        app.router.add_post(path, pod_action)
    app.router.add_get("/status", status)
    app.router.add_get("/internal/executions/{id}/output", execution_output)
    app.router.add_post("/internal/join", join)
    app.router.add_post("/internal/promote", promote)
    return app
