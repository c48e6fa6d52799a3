"""A token made through one node, used at once at another that has not applied its entry yet: the node looks it
up again as changes arrive (briefly, with local waits only) instead of answering 401 at once."""

from __future__ import annotations

import types

import pytest
from aiohttp.test_utils import make_mocked_request

from podnode import tokens as T
from podnode.api import auth as A
from podnode.config import NodeConfig
from podnode.errors import Unauthorized


def authenticator(tokens: dict, on_wait) -> A.Authenticator:
    cfg = NodeConfig(node_id="n1", secret="s" * 40)
    state = types.SimpleNamespace(tokens=tokens, admin_revoked=False)
    return A.Authenticator(cfg, lambda fn: fn(state), wait_change=on_wait)


def request(token: str):
    return make_mocked_request("GET", "/POD/?action=getWorkers", headers={"Authorization": f"Bearer {token}"})


def made() -> tuple[str, dict]:
    token, token_id, salt, digest = T.new_token()
    return token, {token_id: {"name": "t", "scope": "read", "salt": salt, "hash": digest}}


async def test_a_token_that_arrives_while_it_waits_is_accepted():
    token, record = made()
    tokens: dict = {}
    waits = []

    async def on_wait(timeout_s: float) -> None:
        waits.append(timeout_s)
        tokens.update(record)          # the node applies the newToken entry
    assert await authenticator(tokens, on_wait).scope_when_known(request(token)) == "read"
    assert len(waits) == 1 and 0 < waits[0] <= A.TOKEN_ARRIVAL_S


async def test_a_made_up_token_is_refused_after_the_bounded_wait(monkeypatch):
    monkeypatch.setattr(A, "TOKEN_ARRIVAL_S", 0.05)
    waits = []

    async def on_wait(timeout_s: float) -> None:
        import asyncio
        waits.append(timeout_s)
        await asyncio.sleep(timeout_s)
    with pytest.raises(Unauthorized):
        await authenticator({}, on_wait).scope_when_known(request(made()[0]))
    assert waits and sum(waits) <= 0.05 + 1e-6


@pytest.mark.parametrize("token", ["garbage", T.admin_token("x" * 40)])
async def test_a_malformed_token_or_a_wrong_admin_token_is_refused_without_waiting(token):
    async def on_wait(timeout_s: float) -> None:
        raise AssertionError("waited")
    with pytest.raises(Unauthorized):
        await authenticator({}, on_wait).scope_when_known(request(token))


async def test_a_known_token_with_a_wrong_key_is_refused_without_waiting():
    token, record = made()
    other = token[:-5] + ("AAAAA" if not token.endswith("AAAAA") else "BBBBB")

    async def on_wait(timeout_s: float) -> None:
        raise AssertionError("waited")
    with pytest.raises(Unauthorized):
        await authenticator(record, on_wait).scope_when_known(request(other))
