"""podnode.raft.crypto: pysyncobj's Raft messages sealed with AES-GCM, opened once, refused when anything is off."""

from __future__ import annotations

import os
import time

import pytest
from pysyncobj.encryptor import getEncryptor

from podnode.raft import crypto
from podnode.raft.crypto import HEADER, InvalidMessage, MessageCipher


@pytest.fixture(scope="module")
def master() -> bytes:
    return crypto.master_key("the cluster secret")


@pytest.fixture
def pair(master) -> tuple[MessageCipher, MessageCipher]:
    """Two nodes of one cluster: a sender and a receiver (one PBKDF2 for the module: it is slow on purpose)."""
    return MessageCipher(b"", master=master), MessageCipher(b"", master=master)


def opened(receiver: MessageCipher, token: bytes) -> tuple[int, bytes]:
    """As pysyncobj's TcpConnection reads a message: the stamp, then the plaintext."""
    stamp = receiver.extract_timestamp(token)
    return stamp, receiver.decrypt(token)


def test_a_message_goes_round_and_its_stamp_carries_the_timestamp(pair):
    sender, receiver = pair
    token = sender.encrypt_at_time(b"an AppendEntries", 1234)
    stamp, plain = opened(receiver, token)
    assert plain == b"an AppendEntries"
    assert stamp >> 64 == 1234
    assert token[0] == crypto.VERSION
    assert len(token) == len(b"an AppendEntries") + HEADER.size + crypto.TAG_BYTES
    assert b"AppendEntries" not in token


def test_the_password_alone_makes_the_key():
    """Two processes given the same password talk; the derivation is pysyncobj's stretching (PBKDF2) and HKDF."""
    a, b = MessageCipher("pw"), MessageCipher("pw")
    assert opened(b, a.encrypt_at_time(b"x", 1))[1] == b"x"
    assert crypto.master_key("pw") == crypto.master_key(b"pw") != crypto.master_key("pw2")


def test_stamps_grow_with_each_message_of_a_sender_within_one_second(pair):
    sender, receiver = pair
    stamps = [opened(receiver, sender.encrypt_at_time(b"m", 7))[0] for _ in range(50)]
    assert stamps == sorted(set(stamps))
    assert opened(receiver, sender.encrypt_at_time(b"m", 8))[0] > stamps[-1]


@pytest.mark.parametrize("where", ["version", "timestamp", "session", "counter", "ciphertext", "tag"])
def test_any_flipped_bit_is_refused(pair, where):
    sender, receiver = pair
    token = bytearray(sender.encrypt_at_time(b"payload of some length", 99))
    at = {"version": 0, "timestamp": 8, "session": 10, "counter": 32, "ciphertext": HEADER.size + 3,
          "tag": len(token) - 1}[where]
    token[at] ^= 0x04
    with pytest.raises(InvalidMessage):
        receiver.extract_timestamp(bytes(token))


@pytest.mark.parametrize("keep", [0, 1, HEADER.size, HEADER.size + crypto.TAG_BYTES - 1, -1])
def test_a_cut_message_is_refused(pair, keep):
    sender, receiver = pair
    token = sender.encrypt_at_time(b"payload", 5)
    with pytest.raises(InvalidMessage):
        receiver.extract_timestamp(token[:keep] if keep >= 0 else token[:-1])


def test_another_key_or_fernet_or_a_bare_pickle_is_refused(pair):
    _, receiver = pair
    stranger = MessageCipher("a guessed password")
    fernet = getEncryptor("the cluster secret")   # pysyncobj's own format, even with the right password
    for token in (stranger.encrypt_at_time(b"x", 1), fernet.encrypt_at_time(b"x", 1), b"\x80\x04\x95 pickle"):
        with pytest.raises(InvalidMessage):
            receiver.extract_timestamp(token)
        with pytest.raises(InvalidMessage):
            receiver.decrypt(token)


def test_decrypt_verifies_a_token_other_than_the_one_just_opened(pair):
    """The plaintext kept between extract_timestamp and decrypt is only for that very token."""
    sender, receiver = pair
    good = sender.encrypt_at_time(b"good", 1)
    bad = bytearray(sender.encrypt_at_time(b"evil", 1))
    bad[-3] ^= 1
    receiver.extract_timestamp(good)
    with pytest.raises(InvalidMessage):
        receiver.decrypt(bytes(bad))
    again, other = sender.encrypt_at_time(b"again", 2), sender.encrypt_at_time(b"other", 2)
    receiver.extract_timestamp(again)
    assert receiver.decrypt(other) == b"other"


def test_each_message_is_verified_once(pair, monkeypatch):
    sender, receiver = pair
    token = sender.encrypt_at_time(b"once", 3)
    opens = []
    real = receiver._open
    monkeypatch.setattr(receiver, "_open", lambda t: opens.append(t) or real(t))
    assert opened(receiver, token)[1] == b"once"
    assert len(opens) == 1


def test_nonces_never_repeat_under_one_key(master):
    """(session, counter) is the key and nonce: unique over many messages and between ciphers of one password."""
    ciphers = [MessageCipher(b"", master=master) for _ in range(3)]
    seen = set()
    for cipher in ciphers:
        for _ in range(20_000):
            _, _, session, counter = HEADER.unpack_from(cipher.encrypt_at_time(b"", 0))
            seen.add((session, counter))
    assert len(seen) == 60_000
    assert len({s for s, _ in seen}) == 3


def test_a_forked_child_gets_a_session_of_its_own(pair):
    sender, receiver = pair
    parent_session = HEADER.unpack_from(sender.encrypt_at_time(b"", 0))[2]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, sender.encrypt_at_time(b"from the child", 0))
        finally:
            os._exit(0)
    os.close(w)
    token = os.read(r, 4096)
    os.close(r)
    os.waitpid(pid, 0)
    child_session = HEADER.unpack_from(token)[2]
    assert child_session != parent_session
    assert opened(receiver, token)[1] == b"from the child"
    assert HEADER.unpack_from(sender.encrypt_at_time(b"", 0))[2] == parent_session


def test_only_keys_that_opened_a_message_are_kept_and_they_are_bounded(pair, master, monkeypatch):
    sender, receiver = pair
    opened(receiver, sender.encrypt_at_time(b"x", 1))
    assert len(receiver._peers) == 1
    for _ in range(20):   # strangers' sessions: not kept
        token = bytearray(sender.encrypt_at_time(b"x", 1))
        token[10:26] = os.urandom(16)
        with pytest.raises(InvalidMessage):
            receiver.extract_timestamp(bytes(token))
    assert len(receiver._peers) == 1
    monkeypatch.setattr(crypto, "MAX_SESSIONS", 5)
    for _ in range(8):
        opened(receiver, MessageCipher(b"", master=master).encrypt_at_time(b"x", 1))
    assert len(receiver._peers) == 5


def test_sealing_and_opening_cost_a_few_microseconds(pair):
    """The reason for this module: Fernet took about 25 µs a message here; a generous bound for a shared machine."""
    sender, receiver = pair
    data = os.urandom(400)
    start = time.process_time()
    for _ in range(2000):
        opened(receiver, sender.encrypt_at_time(data, 1))
    assert (time.process_time() - start) / 2000 < 20e-6


def test_a_message_opens_once_and_a_sender_s_counter_only_grows(pair):
    sender, receiver = pair
    first, second = sender.encrypt_at_time(b"1", 1), sender.encrypt_at_time(b"2", 1)
    assert opened(receiver, first)[1] == b"1"
    with pytest.raises(InvalidMessage):
        receiver.extract_timestamp(first)            # the same message again
    assert opened(receiver, second)[1] == b"2"
    with pytest.raises(InvalidMessage):
        receiver.extract_timestamp(first)            # an older one after a newer one
    other = MessageCipher(b"", master=sender._master)
    assert opened(receiver, other.encrypt_at_time(b"3", 1))[1] == b"3"   # each sender has its own counter
