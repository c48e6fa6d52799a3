"""pysyncobj's wire format, made cheaper without changing it.

pysyncobj 0.3 compresses every Raft message with zlib at level 3. Raft messages here are a few hundred
bytes (a heartbeat, an AppendEntries with a command or two), so compression saves nothing worth having
while setting up a deflate stream for every message costs more than pickling it: on the benchmark it was
3% of all CPU. Level 0 writes a valid zlib stream without compressing, so peers still decompress it with
plain zlib.decompress: nodes with and without this change talk to each other unchanged.
"""

from __future__ import annotations

import zlib

from pysyncobj import tcp_connection

LEVEL = 0


class _StoredZlib:
    """Stands in for the zlib module inside pysyncobj.tcp_connection."""

    decompress = staticmethod(zlib.decompress)
    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, LEVEL)


def install() -> bool:
    """Make pysyncobj's connections write uncompressed zlib streams; False if its layout is unexpected."""
    if getattr(tcp_connection, "zlib", None) not in (zlib, _StoredZlib):
        return False
    tcp_connection.zlib = _StoredZlib
    return True
