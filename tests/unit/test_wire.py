"""Tests for podnode.raft.wire: pysyncobj messages go out as uncompressed zlib streams any peer reads."""

from __future__ import annotations

import pickle
import zlib

import pytest
from pysyncobj import tcp_connection

from podnode.raft import compat, wire


@pytest.fixture(autouse=True)
def installed():
    """As a replica does when it starts (after compat.check)."""
    compat.check()
    wire.install()


def test_install_is_idempotent():
    wire.install()
    assert tcp_connection.zlib is wire._StoredZlib
    assert compat.pickle_protocol() == wire.PICKLE_PROTOCOL


def test_messages_are_stored_not_compressed_and_plain_zlib_reads_them():
    message = {"type": "append_entries", "entries": [(b"\x01" + b"x" * 500, 7, 3)], "term": 3}
    data = tcp_connection.zlib.compress(pickle.dumps(message), 3)
    assert len(data) > 500  # level 0: nothing squeezed
    assert pickle.loads(zlib.decompress(data)) == message


def test_compressed_messages_from_other_peers_still_decode():
    message = {"type": "next_node_idx", "next_node_idx": 12, "success": True}
    assert pickle.loads(tcp_connection.zlib.decompress(zlib.compress(pickle.dumps(message), 3))) == message


def test_pickles_use_protocol_4_and_protocol_2_still_loads():
    from pysyncobj import pickle as pysyncobj_pickle
    command = (0, (b"\x81\xa1t\xa8exec_new",), {})
    data = pysyncobj_pickle.dumps(command)
    assert data[:2] == b"\x80\x04"
    assert pysyncobj_pickle.loads(data) == command
    assert pysyncobj_pickle.loads(pickle.dumps(command, 2)) == command  # an old journal or peer


def test_large_messages_are_still_compressed():
    message = {"type": "append_entries", "entries": [(b"\x01" + b"hello world\n" * 2000, 8, 3)], "term": 3}
    raw = pickle.dumps(message)
    assert len(raw) > wire.SMALL_BYTES
    data = tcp_connection.zlib.compress(raw, 3)
    assert len(data) < len(raw) / 10
    assert pickle.loads(zlib.decompress(data)) == message

