"""Cluster-wide quotas (replicated): the checks the state machine makes with the limits the proposer put in the
command (ExecNew.maxWaiting and maxUnreadBytes, ActivityNew.maxActivities; missing or 0: no limit, as for every
entry logged before quotas existed), against counters the tables keep up to date on every transition. Checked
in the apply case, a quota is exact under concurrency: of two requests racing for the last place, one is refused.

A full quota is a refusal, `too_many`, with a retry hint (retryAfterS) the API sends as Retry-After.
"""

from __future__ import annotations

from typing import Any

from .results import Result, refuse

WAITING_RETRY_S = 5.0       # executions start within seconds when slots free up
UNREAD_RETRY_S = 10.0       # results are read by their owners, or expire
ACTIVITIES_RETRY_S = 60.0   # only a deletion frees one


def limit(value: Any) -> int | float | None:
    """A quota as logged: a positive number, else None (no limit)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value
    return None


def output_bytes(execution: dict[str, Any]) -> int:
    """The size of an execution's recorded output (stdout and stderr, UTF-8)."""
    return _size(execution.get("stdout")) + _size(execution.get("stderr"))


def _size(text: Any) -> int:
    if isinstance(text, str):
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) if isinstance(text, bytes) else 0


def waiting_full(waiting: int, max_waiting: Any) -> Result | None:
    cap = limit(max_waiting)
    if cap is None or waiting < cap:
        return None
    return refuse("too_many", f"quota: {cap:.0f} executions are waiting cluster-wide (--max-waiting-executions); "
                              "try again when some have started", retry_after_s=WAITING_RETRY_S)


def unread_full(unread_bytes: int, max_unread_bytes: Any) -> Result | None:
    cap = limit(max_unread_bytes)
    if cap is None or unread_bytes < cap:
        return None
    return refuse("too_many", f"quota: {unread_bytes} bytes of ended executions' output are unread cluster-wide, "
                              f"the limit is {cap:.0f} (--max-unread-result-bytes); read results with "
                              "getExecutionStatus, or try again when they have expired",
                  retry_after_s=UNREAD_RETRY_S)


def activities_full(count: int, max_activities: Any) -> Result | None:
    cap = limit(max_activities)
    if cap is None or count < cap:
        return None
    return refuse("too_many", f"quota: {cap:.0f} activities exist cluster-wide (--max-activities); "
                              "delete one first", retry_after_s=ACTIVITIES_RETRY_S)
