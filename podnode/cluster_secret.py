"""The cluster secret: kept in a file only its owner reads, and proven between peers without being sent.

Every cluster has one from birth (`pod up` keeps it in DATA/secret, a loopback node started without one makes
its own in its data dir, pod-bootstrap records it in cluster.json). It is the Raft port's password and what
peer requests prove. It never travels: a peer request carries an HMAC of itself (method, path, body,
timestamp, nonce) in PEER_AUTH_HEADER, checked in constant time within a freshness window, each nonce once;
a member found over zeroconf proves it knows the secret by answering a challenge (`prove_answer`) before a
joining node sends it anything. Each use has its own key derived from the secret, so an answer of one kind
is never valid as another. Pure: no I/O but the secret file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from .tokens import TOKEN_FILE, admin_token

PEER_AUTH_HEADER = "X-Pod-Peer-Auth"
FRESH_S = 60.0                  # a signed peer request is accepted this long before or after its timestamp
MAX_NONCES = 100_000            # nonces remembered (only of requests whose signature was right)
SECRET_FILE = "secret"          # in a data dir
_REQUEST_KEY = b"pod/peer-request/v1"
_PROVE_KEY = b"pod/prove/v1"


class PeerAuthError(Exception):
    """A peer request without a valid proof of the cluster secret (the message says which part was wrong)."""


def new_secret() -> str:
    """A fresh cluster secret (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def load_or_create(path: str | Path) -> tuple[str, bool]:
    """The secret kept in `path`, creating it (mode 600, its directory 700 if new) when there is none;
    (secret, created). A file others may read is made 600; an empty one is an error (ValueError)."""
    path = Path(path)
    created = write_private(path, new_secret(), replace=False)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path} is empty: remove it to make a new cluster secret, or put the cluster's in it")
    return secret, created


def write_private(path: str | Path, text: str, *, replace: bool = True) -> bool:
    """Write `text` (and a newline) to `path`, mode 600 from its first byte, its directory 700 if new; atomically:
    a reader sees the old file or the new one. With replace=False an existing file is left as it is. Was it
    written?"""
    path = Path(path)
    if not replace and path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)      # never replaces a file another process wrote first
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def keep_admin_token(directory: str | Path, secret: str) -> Path:
    """DIR/token holding the cluster's birth admin token (derived from `secret`), mode 600: written when it is
    missing or holds another; its path."""
    path = Path(directory) / TOKEN_FILE
    token = admin_token(secret)
    if not path.exists() or path.read_text().strip() != token:
        write_private(path, token)
    return path


def _key(secret: str, purpose: bytes) -> bytes:
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


def _request_mac(secret: str, method: str, path: str, body: bytes, ts: int, nonce: str) -> str:
    message = b"\n".join([method.upper().encode(), path.encode(), str(ts).encode(), nonce.encode(),
                          hashlib.sha256(body).hexdigest().encode()])
    return hmac.new(_key(secret, _REQUEST_KEY), message, hashlib.sha256).hexdigest()


def sign_request(secret: str, method: str, path: str, body: bytes = b"", *, now: float | None = None) -> dict[str, str]:
    """The header that proves a request (method, path with its query, body) comes from a member."""
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    mac = _request_mac(secret, method, path, body, ts, nonce)
    return {PEER_AUTH_HEADER: f"v1 ts={ts} nonce={nonce} mac={mac}"}


def _parse(header: str) -> tuple[int, str, str]:
    version, _, rest = header.partition(" ")
    fields = dict(part.partition("=")[::2] for part in rest.split())
    ts, nonce, mac = fields.get("ts", ""), fields.get("nonce", ""), fields.get("mac", "")
    if version != "v1" or not (ts.isascii() and ts.isdigit() and len(ts) < 16) or not nonce or len(nonce) > 64 \
            or not mac.isascii():
        raise PeerAuthError(f"malformed {PEER_AUTH_HEADER} header")
    return int(ts), nonce, mac


class PeerVerifier:
    """The receiving side: checks a signed request, remembering each nonce for as long as its timestamp is
    fresh so that a captured request cannot be replayed."""

    def __init__(self, secret: str | None, *, fresh_s: float = FRESH_S, max_nonces: int = MAX_NONCES):
        self.secret = secret
        self.fresh_s = fresh_s
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}
        self._prune_at = min(1024, max_nonces)

    def check(self, method: str, path: str, body: bytes, headers: Mapping[str, str], *,
              now: float | None = None) -> None:
        """Raise PeerAuthError unless the request carries a fresh, unused, valid proof of the secret."""
        if not self.secret:
            raise PeerAuthError("this node has no cluster secret: it takes no peer requests")
        header = headers.get(PEER_AUTH_HEADER)
        if not header:
            raise PeerAuthError(f"no {PEER_AUTH_HEADER} header: peer routes need the cluster secret")
        if not header.isascii():
            raise PeerAuthError(f"malformed {PEER_AUTH_HEADER} header")
        ts, nonce, mac = _parse(header)
        now = time.time() if now is None else now
        if abs(now - ts) > self.fresh_s:
            raise PeerAuthError(f"stale {PEER_AUTH_HEADER} (more than {self.fresh_s:g} s from this node's clock)")
        if not hmac.compare_digest(mac, _request_mac(self.secret, method, path, body, ts, nonce)):
            raise PeerAuthError("wrong cluster secret")
        self._forget(now)
        if nonce in self._seen:
            raise PeerAuthError("replayed peer request")
        self._seen[nonce] = ts

    def _forget(self, now: float) -> None:
        """Drop the nonces whose timestamps are no longer fresh (a replay of them is stale anyway), now and then."""
        if len(self._seen) < self._prune_at:
            return
        self._seen = {n: ts for n, ts in self._seen.items() if abs(now - ts) <= self.fresh_s}
        while len(self._seen) >= self.max_nonces:   # a flood of valid requests: the oldest go first
            self._seen.pop(next(iter(self._seen)))
        self._prune_at = min(self.max_nonces, max(1024, 2 * len(self._seen)))


def new_challenge() -> str:
    """A random nonce a joining node sends a member it found, to be answered with `prove_answer`."""
    return secrets.token_hex(32)


def prove_answer(secret: str, challenge: str, node_id: str, http_url: str) -> str:
    """A member's proof that it knows the secret: HMAC of the challenge, its node id and its own URL (so that a
    rogue relaying the challenge to a real member gets an answer for the member's URL, not its own)."""
    message = "\n".join([challenge, node_id, http_url]).encode()
    return hmac.new(_key(secret, _PROVE_KEY), message, hashlib.sha256).hexdigest()


def check_proof(secret: str, challenge: str, node_id: str, http_url: str, proof: str) -> bool:
    """Does `proof` answer `challenge` for that node id and URL? In constant time."""
    if not isinstance(proof, str) or not proof.isascii():
        return False
    return hmac.compare_digest(proof, prove_answer(secret, challenge, node_id, http_url))
