"""pysyncobj 0.3 cuts a large entry into chunks for followers and can mark the wrong chunk as the last (see
compat.chunking_breaks): every entry POD logs is encoded so that it never happens."""

from __future__ import annotations

import pytest
from pysyncobj import SyncObjConf
from pysyncobj import pickle as pysyncobj_pickle

from podnode.raft import commands as C
from podnode.raft.compat import CHUNK_BYTES, chunk_safe, chunking_breaks
from podnode.raft.state import State


def follower_receives(payload: bytes, index: int, term: int, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """pysyncobj's SyncObj.__sendAppendEntries and __onMessageReceived for one large entry, as written there:
    the chunks, each marked start/process/finish the way the sender marks them, joined until 'finish' and
    unpickled. Raises as the follower would on a cut-off buffer."""
    entry = pysyncobj_pickle.dumps((payload, index, term))
    received = b""
    for pos in range(0, len(entry), chunk_bytes):
        data = entry[pos:pos + chunk_bytes]
        if pos == 0:
            received = data
            continue
        received += data
        if pos + chunk_bytes >= len(payload):   # the sender's test: the payload's length, not the entry's
            return pysyncobj_pickle.loads(received)[0]
    return pysyncobj_pickle.loads(received)[0]


def test_the_chunk_size_is_pysyncobjs():
    assert SyncObjConf().appendEntriesBatchSizeBytes == CHUNK_BYTES


def test_the_emulation_finds_pysyncobjs_fault_on_a_plain_payload():
    """Without chunk_safe, some lengths just below a chunk boundary cannot reach a follower."""
    broken = []
    for length in range(2 * CHUNK_BYTES - 200, 2 * CHUNK_BYTES + 1):
        payload = b"x" * length
        try:
            ok = follower_receives(payload, 123456, 7) == payload
        except Exception:
            ok = False
        if not ok:
            broken.append(length)
            assert chunking_breaks(length), length       # the check sees each one
    assert broken


@pytest.mark.parametrize("boundary", [1, 2, 3, 17])
def test_chunk_safe_entries_always_reach_a_follower_and_apply_the_same(boundary):
    for size in range(boundary * CHUNK_BYTES - 300, boundary * CHUNK_BYTES + 40, 3):
        wire = C.ExecNew(name="a", input="i" * max(0, size - 40), now=1.0).to_wire()
        payload = chunk_safe(wire, C.encode)
        for index, term in ((1, 1), (2 ** 31, 2 ** 20), (2 ** 62, 2 ** 40)):
            assert follower_receives(payload, index, term) == payload, (size, len(payload))
        decoded = C.decode(payload)
        assert {k: v for k, v in decoded.items() if k != "pad"} == wire
        state, plain = State(), State()
        assert state.apply(decoded) == plain.apply(wire) and state.to_dict() == plain.to_dict()
