"""API tokens: what they look like, how they are checked, and which scope each action needs. Pure: no I/O.

A token is `pod_<id>_<key>`: `id` names it (8 lowercase hex digits), `key` is 256 random bits (URL-safe base64).
The replicated state keeps, for each token, its name, scope, creation time, a random salt and
SHA-256(salt + key): never the token itself. A key of 256 random bits needs no slow hash; the salt keeps two
clusters' records of one token apart. Checking a token is one dict lookup by id and one SHA-256, compared in
constant time: its cost does not grow with the number of tokens.

Every cluster has an admin token from birth, derived from the cluster secret (HMAC with its own purpose key), so
that whoever made the secret (`pod up`, `pod-bootstrap`, a loopback node) can write the token next to it without
asking the cluster; its id is ADMIN_ID. It is listed by getTokens like any other and can be deleted (the state
then remembers that it was), after which only tokens made with newToken work. Knowing it does not reveal the
secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

SCOPES = ("read", "submit", "admin")   # each includes the ones before it
ADMIN_ID = "00000000"                  # the birth admin token's id
ADMIN_NAME = "admin"
TOKEN_FILE = "token"                   # in a `pod up` data dir, next to the secret
_ADMIN_KEY = b"pod/admin-token/v1"
_TOKEN = re.compile(r"pod_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")

# The scope each action needs. read: reads that consume nothing; submit: run work and read its results;
# admin: everything else (code that runs on the cluster, its policies, nodes and tokens).
ACTION_SCOPES: dict[str, str] = {
    "getActivityStatus": "read",
    "getAllExecutions": "read",
    "getWorkers": "read",
    "getActivePolicy": "read",
    "getPolicies": "read",
    "newExecution": "submit",
    "getExecutionStatus": "submit",      # reading an ended execution consumes its result
    "terminateExecution": "submit",
    "newExecutions": "submit",
    "getExecutionResults": "submit",     # consumes the results it reads
    "newActivity": "admin",
    "deleteActivity": "admin",
    "newPolicy": "admin",
    "deletePolicy": "admin",
    "applyPolicy": "admin",
    "resetPolicies": "admin",
    "drainWorker": "admin",
    "newToken": "admin",
    "getTokens": "admin",
    "deleteToken": "admin",
}
STATUS_SCOPE = "read"


def allows(scope: str, needed: str) -> bool:
    """Does a token of `scope` allow what needs `needed`? (An unknown scope allows nothing.)"""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


def action_scope(action: str) -> str:
    """The scope an action needs; an action not in the table (a new one, an unknown name) needs admin."""
    return ACTION_SCOPES.get(action, "admin")


def admin_token(secret: str) -> str:
    """The cluster's birth admin token, derived from its secret."""
    mac = hmac.new(secret.encode(), _ADMIN_KEY, hashlib.sha256).digest()
    return f"pod_{ADMIN_ID}_{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def parse(token: str) -> tuple[str, str] | None:
    """(id, key) of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def key_hash(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def new_token() -> tuple[str, str, str, str]:
    """A fresh token: (token, id, salt, hash of its key). Only the last three go into the state."""
    token_id = secrets.token_hex(4)
    while token_id == ADMIN_ID:
        token_id = secrets.token_hex(4)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    salt = secrets.token_hex(16)
    return f"pod_{token_id}_{key}", token_id, salt, key_hash(salt, key)


def matches(record: dict, key: str) -> bool:
    """Is `key` the key of the token whose state record this is? Constant time in the key."""
    return hmac.compare_digest(key_hash(str(record.get("salt", "")), key), str(record.get("hash", "")))


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None for anything else."""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
