"""POD: processing on demand on a peer-to-peer Raft mesh."""

__version__ = "0.1.0"
