"""The record a node that left the cluster keeps in its data dir.

The node's agent writes it when the node is drained and leaves; `pod up` reads it (and writes it when it finds
out otherwise) so that it neither restarts that node nor starts it again on the next run: a node that is no
longer a Raft member would stand for election forever. Both sides import it from here, so the node does not
depend on pod up's supervisor.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

LEFT_MARKER = "left.json"        # in the node's data dir


def read_left(data_dir: Path) -> dict | None:
    """The node's record of having left the cluster, or None."""
    try:
        return json.loads((data_dir / LEFT_MARKER).read_text())
    except (OSError, ValueError):
        return None


def mark_left(data_dir: Path, node_id: str, why: str) -> None:
    """Record that the node left (once: the first reason stays)."""
    path = data_dir / LEFT_MARKER
    if not path.exists():
        path.write_text(json.dumps({"node": node_id, "leftAt": time.time(), "why": why}))
