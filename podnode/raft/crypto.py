"""AES-GCM for pysyncobj's Raft messages, in place of its Fernet: one AEAD pass a message, verified once.

pysyncobj encrypts every Raft message with Fernet (AES-CBC, then HMAC-SHA256, then base64) and, on receipt,
verifies the HMAC twice (`extract_timestamp`, then `decrypt`): for a 400-byte message here, 12 µs to seal and
38 µs to open, a third of a 20-node leader's CPU. `MessageCipher` has the same three methods pysyncobj calls
on `conn.encryptor` and does one AES-GCM pass each way (1.3 µs to seal, 1.6 µs to open), verifying each
message once.

Keys. The cluster password is stretched once per process as pysyncobj stretches it (PBKDF2-HMAC-SHA256,
100,000 iterations), with a salt of POD's own, so this key is not Fernet's; HKDF-SHA256 then derives from it
one *session* key per sender: each process (and each replica in it, and each child forked from it) draws 16
random bytes, its session id, and seals every message it sends under HKDF(master, salt=session id). The nonce
is a 64-bit counter of that session, so a nonce never repeats under one key: keys are never shared between
two senders (two equal 128-bit random ids have a chance of 2^-128 per pair) and a counter does not wrap. A
receiver derives a sender's session key on its first message and keeps it (only once the message opened
with it, so a stranger cannot fill the cache).

Wire format of a message (49 bytes more than its plaintext, against Fernet's 57 plus a third for base64):

    version (1) | timestamp (8) | session id (16) | counter (8) | AES-GCM ciphertext and tag (n + 16)

The first 33 bytes are the associated data, authenticated with the ciphertext; the counter is also the
nonce (4 zero bytes and the counter: 12 bytes). The version byte is 0xA1, never Fernet's 0x80.

Replays. A receiver keeps, for each sender's session, the highest counter it opened, and refuses any message
whose counter is not higher: each message opens once, on any connection (a sender sends to one receiver over
one connection at a time, in counter order). pysyncobj checks besides that the value `extract_timestamp`
returns never decreases on one connection: here the authenticated timestamp and the counter, timestamp *
2**64 + counter. (With Fernet, any message could be replayed within the second it was sent.) Replays into
another connection also fail on pysyncobj's random per-connection keys, inside the ciphertext. A session
dropped from a full cache (over MAX_SESSIONS senders) loses its highest counter.

Compatibility: nodes with Fernet (POD before this module, or pysyncobj's own `syncobj_admin`) and nodes
with this cannot talk: each drops the other's connection at its first message. Accepting both formats on
receipt would not help: pysyncobj gives every connection of a node the same encryptor, so a new node would
still send to an old one what it cannot read. Upgrade a cluster all at once (stop every node, upgrade,
start them): the journal and snapshots on disk do not change, only the wire.
"""

from __future__ import annotations

import itertools
import os
import struct
import weakref
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

VERSION = 0xA1
PBKDF2_SALT = b"POD raft AES-GCM v1 master key"
PBKDF2_ITERATIONS = 100_000
SESSION_INFO = b"POD raft AES-GCM v1 session key"
HEADER = struct.Struct(">BQ16sQ")          # version, timestamp, session id, counter
SESSION_BYTES = 16
TAG_BYTES = 16
MAX_SESSIONS = 4096                         # senders' keys a receiver keeps (the oldest dropped first)
COUNTER_AT = HEADER.size - 8               # where the counter starts in the header
NONCE_PAD = bytes(4)                        # 12-byte GCM nonce: 4 zero bytes and the 8-byte counter


class InvalidMessage(Exception):
    """A message that does not open: wrong key, altered, cut short, or not in this format."""


def master_key(password: str | bytes) -> bytes:
    if isinstance(password, str):
        password = password.encode()
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=PBKDF2_SALT,
                      iterations=PBKDF2_ITERATIONS).derive(password)


def session_key(master: bytes, session: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session, info=SESSION_INFO).derive(master)


_ciphers: weakref.WeakSet[MessageCipher] = weakref.WeakSet()


class MessageCipher:
    """pysyncobj's `encryptor`: `encrypt_at_time(data, t)`, `extract_timestamp(token)`, `decrypt(token)`.

    pysyncobj calls it from its Raft thread; the counter and the caches are also safe from other threads
    (itertools.count and tuple assignments are atomic; a cache miss only costs a second verification)."""

    def __init__(self, password: str | bytes, *, master: bytes | None = None):
        self._master = master if master is not None else master_key(password)
        self._peers: OrderedDict[bytes, list] = OrderedDict()   # session id -> [AESGCM, highest counter]
        self._opened: tuple[bytes, bytes] | None = None    # (token, plaintext) of the last extract_timestamp
        self._new_session()
        _ciphers.add(self)

    def _new_session(self) -> None:
        self._session = os.urandom(SESSION_BYTES)
        self._aead = AESGCM(session_key(self._master, self._session))
        self._counter = itertools.count(1)

    # ---- sending ----
    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        counter = next(self._counter)
        header = HEADER.pack(VERSION, max(0, int(current_time)), self._session, counter)
        return header + self._aead.encrypt(NONCE_PAD + counter.to_bytes(8, "big"), data, header)

    # ---- receiving ----
    def extract_timestamp(self, token: bytes) -> int:
        """Open the message (kept for the `decrypt` that follows) and return its stamp: the authenticated
        timestamp * 2**64 + the sender's counter, which grows with each message of a sender."""
        plaintext, timestamp, counter = self._open(token)
        self._opened = (token, plaintext)
        return (timestamp << 64) | counter

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        opened, self._opened = self._opened, None
        if opened is not None and opened[0] is token:
            return opened[1]
        return self._open(token)[0]

    def _open(self, token: bytes) -> tuple[bytes, int, int]:
        if len(token) < HEADER.size + TAG_BYTES:
            raise InvalidMessage("too short")
        version, timestamp, session, counter = HEADER.unpack_from(token)
        if version != VERSION:
            raise InvalidMessage(f"unknown format {version:#x}")
        peer = self._peers.get(session)     # [its key, the highest counter opened from it]
        if peer is not None and counter <= peer[1]:
            raise InvalidMessage("a message of this sender opened already (replayed, or out of order)")
        aead = peer[0] if peer is not None else AESGCM(session_key(self._master, session))
        try:
            # bytes slices: cryptography takes them faster than memoryviews (1.5 against 2.5 µs a message)
            plaintext = aead.decrypt(NONCE_PAD + token[COUNTER_AT:HEADER.size], token[HEADER.size:],
                                     token[:HEADER.size])
        except InvalidTag:
            raise InvalidMessage("does not open with the cluster's key") from None
        if peer is not None:
            peer[1] = counter
        else:   # only keys that opened a message are kept
            self._peers[session] = [aead, counter]
            if len(self._peers) > MAX_SESSIONS:
                self._peers.popitem(last=False)
        return plaintext, timestamp, counter


def _after_fork_in_child() -> None:
    """A forked child would go on with its parent's session and counter: nonces used twice under one key.
    It gets a session of its own."""
    for cipher in list(_ciphers):
        cipher._new_session()


os.register_at_fork(after_in_child=_after_fork_in_child)
