"""The API tokens (replicated): name, scope, creation time, and a salted hash of each token's key, never the
token itself (podnode/tokens.py says what a token is and how it is checked). The birth admin token is derived
from the cluster secret and has no record here until it is deleted: `admin_revoked` then says so, for good.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from typing import Any

from .. import tokens as T
from . import commands as C
from .results import Result, refuse

_HEX = re.compile(r"[0-9a-f]+")
MAX_TOKENS = 1000


class TokenTable:
    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}   # token id -> {id, name, scope, salt, hash, createdAt}
        self.admin_revoked = False                    # the birth admin token was deleted
        self._by_name: dict[str, str] = {}

    def load(self, data: dict[str, Any]) -> None:
        self.tokens = data.get("tokens", {})
        self.admin_revoked = bool(data.get("admin_revoked", False))
        self._by_name = {rec["name"]: token_id for token_id, rec in self.tokens.items()}

    def names(self) -> set[str]:
        return set(self._by_name) | (set() if self.admin_revoked else {T.ADMIN_NAME})

    # ---- apply cases ----------------------------------------------------------------------------
    def token_new(self, cmd: C.TokenNew) -> Result:
        token_id, name, scope, salt, digest = cmd.id, cmd.name, cmd.scope, cmd.salt, cmd.hash
        if not all(isinstance(v, str) for v in (token_id, name, scope, salt, digest)):
            return refuse("bad_request", "malformed token")
        if len(token_id) != 8 or not _HEX.fullmatch(token_id) or token_id == T.ADMIN_ID or \
                not _HEX.fullmatch(salt) or len(digest) != 64 or not _HEX.fullmatch(digest):
            return refuse("bad_request", "malformed token")
        if scope not in T.SCOPES:
            return refuse("bad_request", f"scope must be one of {', '.join(T.SCOPES)}")
        if name in self.names() or (name == T.ADMIN_NAME):
            return refuse("conflict", f"a token named {name!r} exists; delete it first or pick another name")
        if token_id in self.tokens:
            return refuse("conflict", "token id taken; ask again")
        if len(self.tokens) >= MAX_TOKENS:
            return refuse("too_many", f"quota: {MAX_TOKENS} tokens exist; delete some first")
        record = {"id": token_id, "name": name, "scope": scope, "salt": salt, "hash": digest,
                  "createdAt": cmd.now}
        self.tokens[token_id] = record
        self._by_name[name] = token_id
        return {"ok": True, "token": view(record)}

    def token_delete(self, cmd: C.TokenDelete) -> Result:
        name = cmd.name
        if name == T.ADMIN_NAME and not self.admin_revoked:
            self.admin_revoked = True
            return {"ok": True, "token": admin_view()}
        token_id = self._by_name.pop(name, None) if isinstance(name, str) else None
        if token_id is None:
            return refuse("not_found", f"Token {name!r} doesn't exist")
        return {"ok": True, "token": view(self.tokens.pop(token_id))}

    # ---- reads ----------------------------------------------------------------------------------
    def listed(self) -> list[dict[str, Any]]:
        """Every token, by name: name, scope, creation time; never the token, its hash or salt."""
        records = [view(rec) for rec in self.tokens.values()]
        if not self.admin_revoked:
            records.append(admin_view())
        return sorted(records, key=lambda r: r["name"])


def view(record: dict[str, Any]) -> dict[str, Any]:
    return {"name": record["name"], "scope": record["scope"], "createdAt": record.get("createdAt")}


def admin_view() -> dict[str, Any]:
    """The birth admin token (in DATA/token of `pod up`, derived from the cluster secret)."""
    return {"name": T.ADMIN_NAME, "scope": "admin", "createdAt": None, "birth": True}
