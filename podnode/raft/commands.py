"""Replicated command types and their wire form.

A command is a plain dict with a type `t`; it is packed with msgpack before it enters the Raft log, so
the log holds data, not pickled code. Types are append-only: never rename or reuse one.
Time (`now`, seconds since the epoch) and every other choice are made by the proposer.
"""

from __future__ import annotations

from typing import Any

import msgpack

NODE_UP = "node_up"
ACTIVITY_NEW = "activity_new"
ACTIVITY_DELETE = "activity_delete"
INSTALL_ASSIGN = "install_assign"
INSTALL_DONE = "install_done"
UNINSTALL_DONE = "uninstall_done"
EXEC_NEW = "exec_new"
EXEC_PLACE = "exec_place"
EXEC_FINISH = "exec_finish"
EXEC_TERMINATE = "exec_terminate"
EXEC_FORGET = "exec_forget"
EXEC_EXPIRE = "exec_expire"
SYNC = "sync"
NODE_LOST = "node_lost"
EXEC_LOST = "exec_lost"
REINSTALL = "reinstall"
POLICY_NEW = "policy_new"
POLICY_DELETE = "policy_delete"
POLICY_APPLY = "policy_apply"
POLICY_RESET = "policy_reset"
NODE_DRAIN = "node_drain"
NODE_LEFT = "node_left"
NODE_LAUNCHED = "node_launched"
NODE_LAUNCH_FAILED = "node_launch_failed"
BATCH = "batch"
NODE_LAUNCH_REF = "node_launch_ref"


def encode(cmd: dict[str, Any]) -> bytes:
    return msgpack.packb(cmd, use_bin_type=True)


def decode(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def batch(cmds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"t": BATCH, "cmds": cmds}
