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
from .schemas import ANSWERS, COMPONENTS, ref
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
