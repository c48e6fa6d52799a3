"""Command builders and helpers shared by the pure state-machine tests. The builders give typed commands (which
State.apply applies as their wire form); the tests that check the wire form itself write dicts."""

from __future__ import annotations

import copy
from typing import Any

from podnode.raft import commands as C
from podnode.raft.state import State

NOW = 1000.0


def activity_new(name: str, now: float = NOW, **kw: Any) -> C.ActivityNew:
    return C.ActivityNew(name=name, url=f"http://scripts/{name}.sh", now=now, **kw)


def assign(*pairs: tuple[str, str], now: float = NOW) -> C.InstallAssign:
    return C.InstallAssign(assignments=[list(p) for p in pairs], now=now)


def install_done(name: str, node: str, ok: bool = True, error: str | None = None, now: float = NOW) -> C.InstallDone:
    return C.InstallDone(name=name, node=node, ok=ok, error=error, now=now)


def node_up(node: str, slots: int = 2, now: float = NOW, incarnation: str | None = None,
            role: str | None = None) -> C.NodeUp:
    extra = {} if incarnation is None else {"incarnation": incarnation}
    return C.NodeUp(node=node, raftAddr=f"{node}:4000", httpUrl=f"http://{node}:8000", slots=slots, version="1",
                    now=now, role=role, **extra)


def ok(state: State, cmd: Any) -> dict:
    """Apply a command that must succeed; its result."""
    result = state.apply(cmd)
    assert "error" not in result, (cmd, result)
    return result


def snapshot(state: State) -> dict:
    return copy.deepcopy(state.to_dict())


def approved_state(nodes: dict[str, int] | None = None, name: str = "act", max_attempts: int | None = None,
                   incarnations: dict[str, str] | None = None) -> State:
    """Nodes up, one activity verified on the first node and installed on all of them."""
    nodes = nodes or {"n1": 2, "n2": 2}
    incarnations = incarnations or {}
    state = State()
    for node, slots in nodes.items():
        ok(state, node_up(node, slots, incarnation=incarnations.get(node)))
    extra = {} if max_attempts is None else {"maxAttempts": max_attempts}
    ok(state, activity_new(name, **extra))
    first, *rest = nodes
    ok(state, assign((name, first)))
    ok(state, install_done(name, first))
    if rest:
        ok(state, assign(*((name, n) for n in rest)))
        for node in rest:
            ok(state, install_done(name, node))
    return state
