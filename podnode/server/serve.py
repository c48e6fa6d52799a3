"""Serving: make sure of the cluster secret, join if asked to, start the node, run until SIGINT or SIGTERM, stop it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

from .. import cluster_secret, logs, tls
from ..config import NodeConfig, is_loopback
from .heap import freeze_startup_heap
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


def with_secret(cfg: NodeConfig) -> NodeConfig:
    """The config with its cluster secret. POD_SECRET leaves this process's environment, so that nothing it
    starts (an install script, an execution) inherits it. A node whose Raft binds loopback and that was given
    no secret uses the one in its data dir (DATA/secret, 600), made there the first time; others must be given
    one (check_secure says so)."""
    os.environ.pop("POD_SECRET", None)
    if cfg.secret or not is_loopback(cfg.raft_host):
        return cfg
    path = Path(cfg.data_dir) / cluster_secret.SECRET_FILE
    try:
        secret, created = cluster_secret.load_or_create(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"podnode: cannot read or make the cluster secret in {path}: {exc}") from None
    log.info("no POD_SECRET given: %s the cluster secret in %s (mode 600); a node joining this one needs it "
             "in its POD_SECRET", "made" if created else "using", path)
    token_file = cluster_secret.keep_admin_token(cfg.data_dir, secret)
    log.info("the cluster's admin token is in %s (mode 600)", token_file)
    return dataclasses.replace(cfg, secret=secret)


async def serve(cfg: NodeConfig) -> None:
    use_pidfd_child_watcher(asyncio.get_running_loop())
    cfg = with_secret(cfg)
    if cfg.secret:   # never in the log, nor the admin token derived from it
        logs.redact(cfg.secret, cluster_secret.admin_token(cfg.secret))
    cfg.check_secure()
    tls.check(cfg)     # a TLS file that cannot be used stops the node now, saying which, before it joins
    cfg = await joined(cfg)
    node = PodNode(cfg)
    await node.start()
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", cfg.node_id)
    await node.stop()
