"""What the cluster costs: the spend rate now and the spend so far, from the replicated node records (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..raft.lifecycle import NODE_LEFT_STATUS


def spend(nodes: Iterable[dict[str, Any]], launches: Iterable[dict[str, Any]], now: float) -> tuple[float, float]:
    """(per hour now, total so far) in the providers' currency. A node is billed from its launch (or join)
    until it left; a lost node is still billed until it is destroyed and leaves."""
    rate = total = 0.0
    for rec in nodes:
        price = float(rec.get("hourlyPrice") or 0.0)
        end = rec.get("leftAt") if rec.get("status") == NODE_LEFT_STATUS else None
        if end is None:
            rate += price
        total += price * max(0.0, (end or now) - rec.get("joinedAt", now)) / 3600.0
    for launch in launches:
        rate += float(launch.get("hourlyPrice") or 0.0)
        total += float(launch.get("hourlyPrice") or 0.0) * max(0.0, now - launch["launchedAt"]) / 3600.0
    return rate, total
