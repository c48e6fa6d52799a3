"""Actions about API tokens (admin scope): newToken answers the token once; getTokens never shows one;
deleteToken takes effect on every node before it answers."""

from __future__ import annotations

import time
from typing import Any

from .. import tokens as T
from ..raft import commands as C
from .node_api import NodeApi
from .spec import Args


async def new_token(node: NodeApi, a: Args) -> dict[str, Any]:
    name, scope = a["name"], a["scope"]
    token, token_id, salt, digest = T.new_token()
    result = await node.submit(C.TokenNew(id=token_id, name=name, scope=scope, salt=salt, hash=digest,
                                          now=time.time()))
    # The only time the token is shown: the cluster keeps its salted hash.
    return {"token": {**result["token"], "token": token}}


async def get_tokens(node: NodeApi, a: Args) -> dict[str, Any]:
    await node.caught_up()
    return {"tokens": node.read(lambda s: s.token_table.listed())}


async def delete_token(node: NodeApi, a: Args) -> dict[str, Any]:
    result = await node.submit(C.TokenDelete(name=a["name"], now=time.time()))
    synced = await node.sync_everywhere()
    return {"token": result["token"], "status": "deleted", **synced}


TOKEN_ACTIONS = {"newToken": new_token, "getTokens": get_tokens, "deleteToken": delete_token}
