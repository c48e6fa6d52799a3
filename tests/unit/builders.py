"""Command builders shared by the pure state-machine tests."""

from __future__ import annotations

from typing import Any

from podnode.raft import commands as C

NOW = 1000.0


def activity_new(name: str, now: float = NOW, **kw: Any) -> dict:
    return {"t": C.ACTIVITY_NEW, "name": name, "url": f"http://scripts/{name}.sh", "now": now, **kw}


def assign(*pairs: tuple[str, str], now: float = NOW) -> dict:
    return {"t": C.INSTALL_ASSIGN, "assignments": [list(p) for p in pairs], "now": now}


def install_done(name: str, node: str, ok: bool = True, error: str | None = None, now: float = NOW) -> dict:
    return {"t": C.INSTALL_DONE, "name": name, "node": node, "ok": ok, "error": error, "now": now}
