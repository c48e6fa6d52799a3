"""Actions about API tokens (admin scope): newToken answers the token once; getTokens never shows one;
deleteToken takes effect on every node before it answers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .. import tokens as T
from ..errors import BadRequest
from ..raft import commands as C
from . import params as P
from .node_api import NodeApi

Params = Mapping[str, str]


async def new_token(node: NodeApi, p: Params) -> dict[str, Any]:
    name = P.name(p, "name", "token")
    scope = P.required(p, "scope")   # no default: what a credential may do is said, never assumed
    if scope not in T.SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(T.SCOPES)}, not {scope[:50]!r}")
    token, token_id, salt, digest = T.new_token()
    result = await node.submit(C.TokenNew(id=token_id, name=name, scope=scope, salt=salt, hash=digest,
                                          now=time.time()))
    # The only time the token is shown: the cluster keeps its salted hash.
    return {"token": {**result["token"], "token": token}}


async def get_tokens(node: NodeApi, p: Params) -> dict[str, Any]:
    await node.caught_up()
    return {"tokens": node.read(lambda s: s.token_table.listed())}


async def delete_token(node: NodeApi, p: Params) -> dict[str, Any]:
    name = P.name(p, "name", "token")
    result = await node.submit(C.TokenDelete(name=name, now=time.time()))
    synced = await node.sync_everywhere()
    return {"token": result["token"], "status": "deleted", **synced}


TOKEN_ACTIONS = {"newToken": new_token, "getTokens": get_tokens, "deleteToken": delete_token}
