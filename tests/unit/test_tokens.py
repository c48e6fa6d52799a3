"""Tokens without a network: their form, scopes, the birth admin token, and the replicated records."""

from __future__ import annotations

import pytest

from podnode import tokens as T
from podnode.raft import commands as C
from podnode.raft.state import State


def test_a_new_token_parses_and_only_its_own_key_matches_its_record():
    token, token_id, salt, digest = T.new_token()
    assert T.parse(token) == (token_id, token[len("pod_") + 9:]) and token_id != T.ADMIN_ID
    record = {"salt": salt, "hash": digest}
    assert T.matches(record, T.parse(token)[1])
    other = T.parse(T.new_token()[0])[1]
    assert not T.matches(record, other) and not T.matches({"salt": "x", "hash": digest}, T.parse(token)[1])
    assert token not in digest and T.parse(token)[1] not in digest


@pytest.mark.parametrize("text", ["", "pod_", "pod_0000000_" + "a" * 43, "pod_00000000_" + "a" * 42,
                                  "pod_0000000g_" + "a" * 43, "POD_00000000_" + "a" * 43, "pod_00000000_" + "é" * 43,
                                  "pod_00000000_" + "a" * 43 + "\n", "pod_00000000_" + "a" * 42 + "٣"])
def test_malformed_tokens_do_not_parse(text):
    assert T.parse(text) is None


def test_the_admin_token_is_derived_from_the_secret_and_does_not_show_it():
    a, b = T.admin_token("s" * 40), T.admin_token("t" * 40)
    assert a == T.admin_token("s" * 40) and a != b and T.parse(a)[0] == T.ADMIN_ID
    assert "s" * 8 not in a


def test_scopes_include_the_narrower_ones_and_unknown_actions_need_admin():
    assert T.allows("admin", "read") and T.allows("admin", "submit") and T.allows("submit", "read")
    assert not T.allows("read", "submit") and not T.allows("submit", "admin") and not T.allows("nope", "read")
    assert T.action_scope("newExecution") == "submit" and T.action_scope("getWorkers") == "read"
    assert T.action_scope("newActivity") == "admin" and T.action_scope("someFutureAction") == "admin"


def test_bearer_header():
    assert T.bearer("Bearer abc") == "abc" and T.bearer("bearer  abc ") == "abc"
    assert T.bearer("Basic abc") is None and T.bearer("Bearer") is None and T.bearer("") is None


def _new(state: State, name: str, scope: str = "read") -> dict:
    token, token_id, salt, digest = T.new_token()
    result = state.apply(C.TokenNew(id=token_id, name=name, scope=scope, salt=salt, hash=digest, now=5.0))
    return {**result, "plain": token, "id": token_id}


def test_the_state_keeps_records_without_the_token_and_deletes_by_name():
    state = State()
    made = _new(state, "ci")
    assert made["token"] == {"name": "ci", "scope": "read", "createdAt": 5.0}
    record = state.tokens[made["id"]]
    assert T.matches(record, T.parse(made["plain"])[1]) and made["plain"] not in str(state.to_dict())
    assert state.apply(C.TokenDelete(name="ci"))["token"]["name"] == "ci" and state.tokens == {}
    assert state.apply(C.TokenDelete(name="ci"))["error"] == "not_found"


def test_refusals_change_nothing():
    state = State()
    _new(state, "ci")
    before = state.to_dict()
    token, token_id, salt, digest = T.new_token()
    for bad in (dict(name="ci"), dict(name="admin"), dict(scope="root"), dict(id=T.ADMIN_ID), dict(id="xyz"),
                dict(hash="00"), dict(salt="not hex"), dict(name=7)):
        fields = {"id": token_id, "name": "new", "scope": "read", "salt": salt, "hash": digest, "now": 1.0, **bad}
        assert "error" in state.apply(C.TokenNew(**fields)), bad
    assert state.apply({"t": "token_new", "name": "x"})["error"] == "internal"   # missing fields: recorded refusal
    assert state.to_dict() == before


def test_the_birth_admin_token_is_listed_until_deleted_and_stays_deleted_across_a_snapshot():
    state = State()
    assert state.token_table.listed() == [{"name": "admin", "scope": "admin", "createdAt": None, "birth": True}]
    assert state.apply(C.TokenDelete(name="admin"))["token"]["birth"] is True
    assert state.admin_revoked and state.token_table.listed() == []
    _new(state, "ops", "admin")
    restored = State()
    restored.load_dict(C.decode(C.encode(state.to_dict())))
    assert restored.admin_revoked and [t["name"] for t in restored.token_table.listed()] == ["ops"]
    assert _new(restored, "ops")["error"] == "conflict"      # names still indexed after a load
