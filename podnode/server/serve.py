"""Serving: join if asked to, start the node, run until SIGINT or SIGTERM, stop it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from ..config import NodeConfig
from .join import joined
from .node import PodNode

log = logging.getLogger("podnode")


def use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for each child in a thread of its own; a pidfd watcher needs none (3.12+ does this)."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(loop)


async def serve(cfg: NodeConfig) -> None:
    use_pidfd_child_watcher(asyncio.get_running_loop())
    cfg = await joined(cfg)
    node = PodNode(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", cfg.node_id)
    await node.stop()
