"""pysyncobj's wire format, made cheaper while every peer still reads it.

Compression: pysyncobj 0.3 compresses every Raft message with zlib at level 3. Raft messages here are a few hundred
bytes (a heartbeat, an AppendEntries with a command or two), so compression saves nothing worth having
while setting up a deflate stream for every message costs more than pickling it: on the benchmark it was
3% of all CPU. Level 0 writes a valid zlib stream without compressing, so peers still decompress it with
plain zlib.decompress: nodes with and without this change talk to each other unchanged. Large messages
(an execution's output, a snapshot being sent to a node that fell behind) are still compressed, at the
fastest level, where the bytes saved on the network are worth it.

Pickles: pysyncobj pickles messages and commands with protocol 2 (for Python 2 peers), which stores each
bytes object as a call to _codecs.encode on a latin-1 string; every Raft entry here carries a msgpack
command as bytes, so loading a message cost several microseconds. Protocol 4 stores bytes as bytes; any
Python 3 peer loads it (pickle.loads reads every protocol), and journals written with protocol 2 still load.
"""

from __future__ import annotations

import zlib

from . import compat

SMALL_BYTES = 4096        # messages up to this size go out stored (level 0)...
LARGE_LEVEL = 1           # ...larger ones compressed at this level
PICKLE_PROTOCOL = 4


class _StoredZlib:
    """Stands in for the zlib module inside pysyncobj.tcp_connection."""

    decompress = staticmethod(zlib.decompress)
    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0 if len(data) <= SMALL_BYTES else LARGE_LEVEL)


def install() -> None:
    """Make pysyncobj store small messages uncompressed and pickle with protocol 4 (idempotent). Call after
    compat.check(): both are module globals of pysyncobj's."""
    compat.set_message_zlib(_StoredZlib)
    compat.set_pickle_protocol(PICKLE_PROTOCOL)
