"""GET /openapi.json: the OpenAPI 3.1 document of the API, generated from the action definitions (api/spec.py)
and the answers' schemas (api/schemas.py), never written by hand. Pure: a function of those definitions.

The action API is `/POD/?action=NAME&...`. OpenAPI keys operations by path and method only (a path may not hold
a query string), so one operation per action needs one path per action: each action is also served at
`/POD/NAME` (the same handler, api/app.py), and that is the path documented. `/POD/?action=NAME` keeps working
and takes exactly the same parameters; the document says so in its description. Each action is documented for
GET (parameters in the query) and POST (a form or a JSON object body), as the node serves both.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .. import __version__
from ..tokens import STATUS_SCOPE
from .auth import STREAM_SCOPE
from .schemas import ANSWERS, COMPONENTS, Schema, ref
from .spec import COMMON_ERRORS, SPECS_LIST, ActionSpec, Param

SECURITY_SCHEME = "bearerToken"
ERRORS = {
    400: "Bad parameters or body: nothing was changed.",
    401: "No token, or an invalid one (WWW-Authenticate: Bearer).",
    403: "The token's scope does not allow this, or a cross-site request.",
    404: "What the request names does not exist.",
    409: "Conflicts with the current state (exists already, not in a state that allows it).",
    413: "The request, an input or an array is over its limit.",
    414: "The URL is over the limit: send the parameters in a POST body.",
    429: "A quota is full; retry after Retry-After seconds.",
    431: "A request header is over the limit.",
    503: "No leader, or the node is catching up; retry after Retry-After seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_DESCRIPTION = """POD's HTTP API. Every action is served at `/POD/NAME` (documented here) and, equally, at
`/POD/?action=NAME` (the original POD's form): same parameters, same answers. Parameters come in the query (GET),
in a form body or in a JSON object body (POST; a JSON body's non-string values count as their JSON text, so
numbers and lists may be sent as such). Every answer is JSON; every refusal is `{"error": message}` with a 4xx
code (503: retry later) and changes nothing. Every action and /status need `Authorization: Bearer TOKEN`; each
action needs a scope (read < submit < admin), given in its security requirement and in `x-pod-scope`."""


def _error_responses(codes: tuple[int, ...]) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in sorted(set(codes))}


def _error_components() -> dict[str, Any]:
    """One response per error code, `{"error": message}`; 429 and 503 say when to retry."""
    answers = {}
    for code, description in ERRORS.items():
        answer: dict[str, Any] = {"description": description,
                                  "content": {"application/json": {"schema": ref("Error")}}}
        if code in (429, 503):
            answer["headers"] = _RETRY_AFTER
        answers[f"E{code}"] = answer
    return answers


def _query(param: Param) -> dict[str, Any]:
    return {"name": param.name, "in": "query", "required": param.required, "description": param.description,
            "schema": param.schema, "example": param.example}


def _body_example(param: Param, json_body: bool) -> Any:
    """The example as a body carries it: a JSON body holds a list itself, not its JSON text."""
    if json_body and param.json_schema is not None and isinstance(param.example, str) and \
            param.example.startswith("["):
        return json.loads(param.example)
    return param.example


def _body_schema(spec: ActionSpec, *, json_body: bool) -> dict[str, Any]:
    props = {}
    for p in spec.params:
        schema = dict(p.json_schema if json_body and p.json_schema is not None else p.schema)
        props[p.name] = {**schema, "description": p.description, "examples": [_body_example(p, json_body)]}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = [p.name for p in spec.params if p.required]
    if required:
        schema["required"] = required
    return schema


def _operation(spec: ActionSpec, method: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": spec.name if method == "post" else f"{spec.name}ViaGet",
        "summary": spec.summary,
        "description": " ".join(s for s in (spec.description, f"Needs a token of the {spec.scope} scope.") if s),
        "tags": ["actions"],
        "security": [{SECURITY_SCHEME: [spec.scope]}],
        "x-pod-scope": spec.scope,
        "responses": {"200": {"description": "Done.",
                              "content": {"application/json": {"schema": ref(spec.answer)}}},
                      **_error_responses(COMMON_ERRORS + spec.errors)},
    }
    if method == "get":
        op["parameters"] = [_query(p) for p in spec.params]
    elif spec.params:
        op["requestBody"] = {"required": any(p.required for p in spec.params), "content": {
            "application/x-www-form-urlencoded": {"schema": _body_schema(spec, json_body=False)},
            "application/json": {"schema": _body_schema(spec, json_body=True)}}}
    return op


def _read_route(operation_id: str, summary: str, content_type: str, schema: Schema, *, codes: tuple[int, ...],
                parameters: list[dict[str, Any]] | None = None, stream: bool = False,
                scope: str = STATUS_SCOPE) -> dict[str, Any]:
    """A GET route outside the action API (the read scope unless told)."""
    op: dict[str, Any] = {
        "operationId": operation_id, "summary": summary, "tags": ["nodes"],
        "security": [{SECURITY_SCHEME: [scope]}], "x-pod-scope": scope,
        "responses": {"200": {"description": summary, "content": {content_type: {"schema": schema}}},
                      **_error_responses(codes)}}
    if parameters:
        op["parameters"] = parameters
    if stream:
        op["x-pod-stream"] = True   # Server-Sent Events: the answer goes on while there is something to say
    return {"get": op}


def _stream_and_page_paths() -> dict[str, Any]:
    """Live output, the metrics and the status page's data (api/stream.py, app.py, api/ui_feed.py)."""
    events = {"type": "object", "required": ["data"], "description": "one event: `attempt` {attempt, workerId, "
              "reason, message}, `output` {stream, text}, `end` (the final record), `gone`, `snapshot`; ids "
              "ATTEMPT:STDOUTBYTES:STDERRBYTES", "properties": {
                  "event": {"enum": ["attempt", "output", "end", "gone", "snapshot"]},
                  "data": {"type": "string", "description": "a JSON object"}, "id": {"type": "string"}}}
    summaries = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
    return {
        "/POD/executions/{id}/stream": _read_route(
            "streamExecution", "An execution's stdout and stderr as they are written, through any node (SSE); "
                               "consumes nothing (output is a result: the submit scope)", "text/event-stream",
            events, stream=True, scope=STREAM_SCOPE,
            codes=(400, 401, 403, 404, 414, 431, 503), parameters=[
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                {"name": "follow", "in": "query", "schema": {"enum": ["0", "1"]},
                 "description": "1 (default): until the end; 0: what is there now, then the stream ends"},
                {"name": "lastEventId", "in": "query", "schema": {"type": "string", "pattern": r"^\d+:\d+:\d+$"},
                 "description": "resume after this event id (the Last-Event-ID header does the same)"}]),
        "/metrics": _read_route(
            "metrics", "Prometheus metrics of the cluster as this node applied them, and of this node",
            "text/plain", {"type": "string"}, codes=(401, 403, 414, 431, 503)),
        "/status/summary": _read_route(
            "statusSummary", "The status page's data: nodes, queue head with reasons, running, activities, scaling, "
                             "spend, throughput", "application/json", {"type": "object"},
            codes=(401, 403, 414, 431, 503)),
        "/status/feed": _read_route(
            "statusFeed", "The status page's data as Server-Sent Events, one summary a second (ends after 60 s: "
                          "reconnect)", "text/event-stream", summaries, stream=True,
            codes=(401, 403, 414, 431, 503)),
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy: callers may change it)."""
    paths: dict[str, Any] = {f"/POD/{spec.name}": {"get": _operation(spec, "get"), "post": _operation(spec, "post")}
                             for spec in SPECS_LIST}
    paths["/status"] = {"get": {
        "operationId": "status", "summary": "This node, the leader, Raft's figures, peers, slots, what runs here.",
        "tags": ["nodes"], "security": [{SECURITY_SCHEME: [STATUS_SCOPE]}], "x-pod-scope": STATUS_SCOPE,
        "responses": {"200": {"description": "The node's status.",
                              "content": {"application/json": {"schema": ref("Status")}}},
                      **_error_responses((401, 403, 414, 431, 503))}}}
    paths["/health"] = {"get": {
        "operationId": "health", "summary": "Is the node up, and its role (open: a load balancer's probe).",
        "tags": ["nodes"], "security": [],
        "responses": {"200": {"description": "Up.", "content": {"application/json": {"schema": ref("Health")}}},
                      **_error_responses((400, 414, 431))}}}
    paths.update(_stream_and_page_paths())
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document (open, like /health: it holds no cluster state).",
        "tags": ["nodes"], "security": [],
        "responses": {"200": {"description": "The OpenAPI document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      **_error_responses((400, 414, 431))}}}
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "POD", "version": __version__, "description": _DESCRIPTION},
        "tags": [{"name": "actions", "description": "The action API (/POD/NAME, or /POD/?action=NAME)."},
                 {"name": "nodes", "description": "One node's own routes."}],
        "paths": paths,
        "components": {
            "schemas": {**COMPONENTS, **ANSWERS},
            "responses": _error_components(),
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer", "bearerFormat": "pod_<id>_<key>",
                "description": "A POD token (`pod up` writes the admin token to pod-data/token; newToken makes "
                               "others). Scopes: read < submit < admin."}},
        },
        "security": [{SECURITY_SCHEME: []}],
    })
