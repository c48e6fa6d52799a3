"""What the state machine's apply cases return, and the checks they share.

An apply case never raises for a bad command: it returns a refusal, {"error": kind, "message": ...}, which is
recorded as the entry's result, so that one bad entry can never wedge the Raft log.
"""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]


def refuse(kind: str, message: str, *, retry_after_s: float | None = None) -> Result:
    """A refusal; `retry_after_s`: when trying again may succeed (a full quota), recorded as retryAfterS."""
    if retry_after_s is None:
        return {"error": kind, "message": message}
    return {"error": kind, "message": message, "retryAfterS": retry_after_s}


def pairs(items: Any) -> list[tuple[Any, Any]]:
    """Unpack [[a, b], ...] in full before anything changes, so a malformed entry refuses the whole command
    instead of leaving it half applied. Raises for an entry that is not a pair of hashable values."""
    unpacked = [(a, b) for a, b in items or []]
    for pair in unpacked:
        hash(pair)
    return unpacked


def maps_with_hashable_ids(reports: Any) -> list[Any]:
    """Check a list of reports ({"id": ...} maps) in full before the first changes anything. Raises for an
    entry that is not a map or whose id is not hashable."""
    reports = list(reports or [])
    for report in reports:
        if not isinstance(report, dict):
            raise TypeError(f"report is not a map: {report!r}")
        hash(report.get("id"))
    return reports
