"""How records look to clients: the original POD's field names, plus a few additions."""

from __future__ import annotations

from typing import Any

_ACTIVITY_FIELDS = ("id", "name", "installationScriptLocation", "status", "maxAttempts", "errorDescription")
_INSTALLATION_FIELDS = ("workerId", "status", "errorDescription")


def ms(t: float | None) -> int | None:
    """Times are milliseconds since the epoch, like the original POD's Java timestamps."""
    return None if t is None else int(round(t * 1000))


def activity(record: dict[str, Any]) -> dict[str, Any]:
    view = {k: record[k] for k in _ACTIVITY_FIELDS if k in record}
    view["createdAt"] = ms(record.get("createdAt"))
    if "installations" in record:
        view["installations"] = [{k: i[k] for k in _INSTALLATION_FIELDS if k in i} for i in record["installations"]]
    return view


def execution(record: dict[str, Any], *, output: tuple[str, str] | None = None) -> dict[str, Any]:
    stdout, stderr = output if output is not None else (record.get("stdout", ""), record.get("stderr", ""))
    view = {
        "id": record["id"],
        "stdin": record["stdin"],
        "stdout": stdout,
        "stderr": stderr,
        "status": record["status"],
        "activityId": record["activityId"],
        "activityName": record["activityName"],
        "submitTime": ms(record.get("submitTime")),
        "startTime": ms(record.get("startTime")),
        "finishTime": ms(record.get("finishTime")),
        "exitCode": record.get("exitCode"),
        "workerId": record.get("workerId"),
        "attempts": record.get("attempt", 0),
    }
    for key in ("errorDescription", "requestId", "lastError"):
        if record.get(key):
            view[key] = record[key]
    for key in ("stdoutTruncated", "stderrTruncated"):
        if record.get(key):
            view[key] = True
    if record.get("outputPending"):
        view["outputPending"] = True
    return view


def execution_summary(record: dict[str, Any]) -> dict[str, Any]:
    """newExecution's answer: what the contract lists."""
    return {k: record[k] for k in ("id", "stdin", "status", "activityId", "activityName")}
