"""Arrays of executions (replicated): many inputs of one activity submitted in one entry, all or none
(ExecNewMany), and many read executions deleted in one entry (ExecForgetMany).

ExecNewMany checks everything that could refuse any one of its inputs before the first execution is made (the
activity, the request ids, the inputs, the quotas for all of them at once), then makes each one with
ExecutionTable.exec_new, the one place executions are created, so every index and counter the table keeps stays
right. A refusal changes nothing. With a requestId R, input i is recorded under the request id `R#i` (a
newExecution requestId cannot hold '#', so the two never meet): the same array again answers the same ids,
and the request ids expire like newExecution's.

Pure and deterministic like every apply case: no clock, no I/O, never raises for a bad command.
"""

from __future__ import annotations

from typing import Any

from . import commands as C
from .activities import ActivityTable
from .executions import ExecutionTable
from .lifecycle import APPROVED, VERIFYING
from .quotas import WAITING_RETRY_S, limit, unread_full
from .results import Result, refuse


def element_request_id(request_id: str, index: int) -> str:
    """The request id input `index` of an array submitted with `request_id` is recorded under."""
    return f"{request_id}#{index}"


def exec_new_many(activities: ActivityTable, executions: ExecutionTable, cmd: C.ExecNewMany) -> Result:
    """Make one execution per input, in order, or none: {"ok", "ids", "duplicate"?} or a refusal."""
    inputs = cmd.inputs if cmd.inputs is not None else []
    if not isinstance(inputs, list):
        return refuse("bad_request", "inputs must be a list")
    for index, value in enumerate(inputs):
        if not isinstance(value, str):
            return refuse("bad_request", f"inputs[{index}] is not a string")
    if not inputs:
        return refuse("bad_request", "inputs is empty")
    name, request_id = cmd.name, cmd.requestId
    if request_id:
        seen = _earlier(executions, request_id, name, len(inputs))
        if seen is not None:
            return seen
    activity = activities.get(name)
    if activity is None:
        return refuse("not_found", f"Activity {name!r} doesn't exist")
    if activity["status"] not in (VERIFYING, APPROVED):
        return refuse("conflict", f"Activity {name!r} is {activity['status']}; it cannot run executions")
    full = _waiting_full(executions.waiting, len(inputs), cmd.maxWaiting) or \
        unread_full(executions.unread_bytes, cmd.maxUnreadBytes)
    if full:
        return full
    ids = []
    for index, value in enumerate(inputs):
        rid = element_request_id(request_id, index) if request_id else None
        result = executions.exec_new(C.ExecNew(name=name, now=cmd.now, input=value, requestId=rid, node=cmd.node))
        if "error" in result:  # cannot happen after the checks above; never half silently
            return {**result, "message": f"inputs[{index}]: {result.get('message')} (after {len(ids)} were made: "
                                         f"{ids[:10]}...)", "ids": ids}
        ids.append(result["execution"]["id"])
    return {"ok": True, "ids": ids}


def _earlier(executions: ExecutionTable, request_id: str, name: str, count: int) -> Result | None:
    """The answer to an array whose requestId was seen before (the same ids), a refusal if it was used for
    something else, or None if it is new."""
    known = executions.request_ids
    first = known.get(element_request_id(request_id, 0))
    if first is None:
        for index in range(1, count):
            if element_request_id(request_id, index) in known:  # never written alone; refuse rather than mix
                return refuse("conflict", f"requestId {request_id!r} was used for another array")
        return None
    ids = []
    for index in range(count):
        seen = known.get(element_request_id(request_id, index))
        if seen is None:
            return refuse("conflict", f"requestId {request_id!r} was used for an array of {index} inputs, "
                                      f"not {count}")
        ids.append(seen[0])
    if element_request_id(request_id, count) in known:
        return refuse("conflict", f"requestId {request_id!r} was used for an array of more than {count} inputs")
    for exec_id in ids:
        execution = executions.executions.get(exec_id)
        if execution is not None and execution["activityName"] != name:
            return refuse("conflict", f"requestId {request_id!r} was used for activity "
                                      f"{execution['activityName']!r}")
    return {"ok": True, "ids": ids, "duplicate": True}


def _waiting_full(waiting: int, count: int, max_waiting: Any) -> Result | None:
    """The waiting quota for `count` more: refused unless all of them fit."""
    cap = limit(max_waiting)
    if cap is None or waiting + count <= cap:
        return None
    room = max(0, int(cap - waiting))
    return refuse("too_many", f"quota: {waiting} executions are waiting cluster-wide and the limit is {cap:.0f} "
                              f"(--max-waiting-executions): room for {room}, not {count}; nothing was submitted. "
                              "Try again when some have started, or submit fewer at once",
                  retry_after_s=WAITING_RETRY_S)


def exec_forget_many(executions: ExecutionTable, cmd: C.ExecForgetMany) -> Result:
    """Delete each ended execution as ExecForget does: {"ok", "results": [ExecForget's result per id]}."""
    ids = cmd.ids if cmd.ids is not None else []
    if not isinstance(ids, list):
        return refuse("bad_request", "ids must be a list")
    for exec_id in ids:  # all checked before the first changes anything
        if not isinstance(exec_id, int) or isinstance(exec_id, bool):
            return refuse("bad_request", f"execution id {exec_id!r} is not a whole number")
    return {"ok": True, "results": [executions.exec_forget(C.ExecForget(id=exec_id, now=cmd.now))
                                    for exec_id in ids]}
