"""Arrays: newExecutions submits many inputs of one activity in one request and one Raft entry, all or none;
getExecutionResults reads many ended executions at once (by ids, or the next ended ones of an activity), each
handed over and deleted exactly once, the deletes in one Raft entry.

Both take their list either as a JSON body (POST, Content-Type application/json: {"name": ..., "inputs": [...]},
see app.request_params) or as a parameter holding JSON text (inputs=["a","b"], executionIds=[1,2]; executionIds
also as 1,2,3), so a form or a query works too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..errors import BadRequest, NotFound, Unavailable
from ..raft import commands as C
from ..raft.execution_index import result_ready
from ..raft.quotas import output_bytes
from . import views
from .connection import client_connected
from .node_api import NodeApi
from .params import MAX_ARRAY  # noqa: F401 (the limit is the parameters' own: api/params.py; named here too)
from .spec import Args

MAX_JSON_BODY_BYTES = 16 * 1024 * 1024   # a JSON body (newExecutions' inputs and all); over it: 413
MAX_RESULT_BYTES = 32 * 1024 * 1024      # output handed over by one getExecutionResults (at least one result)
_WAIT_POLL_S = 0.1                       # activity=NAME&wait=S: how often it looks for newly ended ones


async def new_executions(node: NodeApi, a: Args) -> dict[str, Any]:
    name = a["name"]
    cmd = C.ExecNewMany(name=name, inputs=a["inputs"], requestId=a["requestId"], now=time.time(),
                        node=node.propose_placement(name), maxWaiting=node.cfg.max_waiting_executions or None,
                        maxUnreadBytes=node.cfg.max_unread_result_bytes or None)
    result = await node.submit(cmd)
    answer = {"activityName": name, "executionIds": result["ids"], "count": len(result["ids"])}
    if result.get("duplicate"):
        answer["duplicate"] = True
    return answer


async def get_execution_results(node: NodeApi, a: Args) -> dict[str, Any]:
    """By ids: {"executions": [ended ones, handed over], "pending": [{"id", "status"}], "notFound": [ids],
    "deferred": [ids over the size budget, ended, not consumed]}. By activity: {"executions": [...], "more"}."""
    ids, activity, limit, wait_s = a["executionIds"], a["activity"], a["limit"], a["wait"]
    if ids is not None:
        if activity is not None:
            raise BadRequest("give executionIds or activity, not both")
        return await _results_by_ids(node, ids, wait_s)
    if activity is None:
        raise BadRequest("Missing parameter 'executionIds' (or 'activity' with 'limit')")
    return await _results_of_activity(node, activity, limit, wait_s)


def _ready(record: dict[str, Any] | None) -> bool:
    """Ended, with its output recorded, not collected by a node for its request: a read hands it over."""
    return record is not None and result_ready(record)


async def _results_by_ids(node: NodeApi, ids: list[int], wait_s: float) -> dict[str, Any]:
    records = await _read_all(node, ids)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not any(isinstance(r, dict) for r in records.values()) and loop.time() < deadline:
        pending = [i for i in ids if records[i] is not None][:32]
        if not pending:
            break
        waits = [asyncio.ensure_future(node.wait_execution(i, deadline - loop.time())) for i in pending]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        records = node.read(lambda s: _look(s, ids))
    ready, deferred = _budget([r for r in records.values() if isinstance(r, dict)])
    if not client_connected():   # its client left while it waited: consume nothing nobody receives
        ready, deferred = [], ready + deferred
    handed, gone = await _forget(node, ready)
    handed_ids = {e["id"] for e in handed}
    return {"executions": handed,
            "pending": [{"id": i, "status": r} for i, r in records.items() if isinstance(r, str)],
            "notFound": [i for i, r in records.items() if r is None or i in gone and i not in handed_ids],
            "deferred": [r["id"] for r in deferred]}


def _look(state: Any, ids: list[int]) -> dict[int, dict[str, Any] | str | None]:
    """Each id's record if it is ready to hand over, else its status if it exists, else None (under the lock:
    only the ready ones are copied)."""
    executions = state.executions
    found: dict[int, dict[str, Any] | str | None] = {}
    for exec_id in ids:
        record = executions.get(exec_id)
        if record is None:
            found[exec_id] = None
        elif result_ready(record):   # (not one collected for the newExecution&wait request that submitted it)
            found[exec_id] = dict(record)
        else:
            found[exec_id] = record["status"]
    return found


async def _read_all(node: NodeApi, ids: list[int]) -> dict[int, dict[str, Any] | str | None]:
    """_look at the ids; if one is missing that this node may not have applied yet, catch up first."""
    records, next_id = node.read(lambda s: (_look(s, ids), s.next_execution_id))
    if any(r is None and i >= next_id for i, r in records.items()):
        await node.caught_up()
        records = node.read(lambda s: _look(s, ids))
    return records


async def _results_of_activity(node: NodeApi, activity: str, limit: int, wait_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    exists = await node.read_or_sync(lambda s: True if activity in s.activities else None)
    handed: list[dict[str, Any]] = []
    more = False
    for _ in range(3):  # again when others read some first (this node's state lagged): they are gone now
        want = limit - len(handed)
        while True:
            records = node.read(lambda s: [s.execution(i) for i in s.execution_table.ended_ids(activity, want + 1)])
            ready = [r for r in records if _ready(r)]
            if ready or handed or loop.time() >= deadline or not exists:   # no activity: no new results to wait for
                break
            await asyncio.sleep(min(_WAIT_POLL_S, deadline - loop.time()))
        chosen, deferred = _budget(ready[:want])
        if not client_connected():   # its client left while it waited: consume nothing nobody receives
            break
        got, gone = await _forget(node, chosen)
        handed += got
        more = bool(deferred) or len(ready) > want
        if not gone or len(handed) >= limit or deferred:
            break
    if not handed and not exists:
        raise NotFound(f"Activity {activity!r} doesn't exist and has no results to read")
    return {"executions": handed, "more": more}


def _budget(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records whose output fits in one answer (at least one), and the rest."""
    total = 0
    for n, record in enumerate(records):
        total += output_bytes(record)
        if total > MAX_RESULT_BYTES and n > 0:
            return records[:n], records[n:]
    return records, []


async def _forget(node: NodeApi, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[int]]:
    """Delete the read executions in one entry: the views of those this request deleted (each is handed over
    once: another reader that deleted it first gets it instead), and the ids gone meanwhile."""
    if not records:
        return [], set()
    ids = [r["id"] for r in records]
    try:
        result = await node.submit(C.ExecForgetMany(ids=ids, now=time.time()))
    except Unavailable:
        # As getExecutionStatus: the delete may or may not commit; never lose the output over it (a later read
        # returns the same results again if it did not).
        return [views.execution(r) for r in records], set()
    handed, gone = [], set()
    for exec_id, one in zip(ids, result.get("results") or []):
        if "error" in one:
            gone.add(exec_id)
        else:
            handed.append(views.execution(one["execution"]))
    return handed, gone


ARRAY_ACTIONS = {
    "newExecutions": new_executions,
    "getExecutionResults": get_execution_results,
}
