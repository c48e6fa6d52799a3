"""The action API: /POD/?action=NAME&... One small function per action; errors are raised, not returned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import Conflict, NotFound, Unavailable
from ..raft import commands as C
from ..raft.execution_index import result_ready
from ..raft.lifecycle import TERMINAL, WAITING
from ..raft.state import missing_execution
from ..waiting import Facts, Waiting
from . import params as P
from . import views
from .array_actions import ARRAY_ACTIONS
from .cluster_actions import CLUSTER_ACTIONS
from .connection import client_connected
from .node_api import NodeApi
from .spec import SPECS, ActionSpec, Args
from .token_actions import TOKEN_ACTIONS

Params = Mapping[str, str]
Action = Callable[["NodeApi", Params], Awaitable[dict[str, Any]]]
Handler = Callable[["NodeApi", Args], Awaitable[dict[str, Any]]]


async def new_activity(node: NodeApi, a: Args) -> dict[str, Any]:
    limits = {"timeoutS": a["timeoutS"], "memoryMB": a["memoryMB"], "maxProcesses": a["maxProcesses"]}
    cmd = C.ActivityNew(name=a["name"], url=a["installationScriptLocation"], maxAttempts=a["maxAttempts"],
                        now=time.time(), maxActivities=node.cfg.max_activities or None,
                        **{k: v for k, v in limits.items() if v is not None})
    result = await node.submit(cmd)
    return {"activity": views.activity(result["activity"], _node_limits(node)), "status": "installing"}


async def get_activity_status(node: NodeApi, a: Args) -> dict[str, Any]:
    name = a["name"]
    record = await node.read_or_sync(lambda s: s.activity(name))
    if record is None:
        raise NotFound(f"Activity {name!r} doesn't exist")
    return {"activity": views.activity(record, _node_limits(node))}


async def delete_activity(node: NodeApi, a: Args) -> dict[str, Any]:
    name = a["name"]
    result = await node.submit(C.ActivityDelete(name=name, now=time.time()))
    return {"activity": views.activity(result["activity"], _node_limits(node)), "status": "uninstalling"}


def _node_limits(node: NodeApi) -> dict[str, float | int | None]:
    """This node's default limits for executions, in the API's words (None: no limit)."""
    cfg = node.cfg
    return {"timeoutS": cfg.exec_timeout_s or None, "memoryMB": cfg.exec_memory_mb or None,
            "maxProcesses": cfg.exec_max_processes or None}


# A result collected for a newExecution&wait request is handed over or released within milliseconds of its end
# (server/settle.py), or when its node is found lost: another reader waits this long for that before a 409.
COLLECTED_GRACE_S = 2.0


async def new_execution(node: NodeApi, a: Args) -> dict[str, Any]:
    """Submit; with wait=S, also wait up to S seconds for the end and answer the result (reading it: it is
    handed over and deleted, as getExecutionStatus would), in one request and without a commit of its own for the
    delete (the node collects it: server/settle.py). Ended later: the execution as it stands, for any reader."""
    name, wait_s = a["name"], a["wait"]
    cmd = C.ExecNew(name=name, input=a["input"], requestId=a["requestId"],
                    now=time.time(), node=node.propose_placement(name),
                    maxWaiting=node.cfg.max_waiting_executions or None,
                    maxUnreadBytes=node.cfg.max_unread_result_bytes or None,
                    collector=node.cfg.node_id if wait_s > 0 else None)
    result = await node.submit(cmd)
    record = result["execution"]
    if wait_s <= 0:
        return {"execution": views.execution_summary(record)}
    # The entry's result may come after the execution has moved on (its changes are only woken on, not kept).
    record = node.read(lambda s: s.execution(record["id"])) or record
    if result.get("duplicate") or record.get("collector") != node.cfg.node_id or not node.claim(record["id"]):
        return await _read(node, record, wait_s)   # a repeated request: read it as any reader would
    return await _collect(node, record, wait_s)


async def _collect(node: NodeApi, record: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """The request that submitted the execution, which this node collects: wait for its end and hand it over."""
    exec_id, handed = record["id"], False
    try:
        record = await _wait_for_end(node, exec_id, record, wait_s, ready=_result_recorded)
        if _result_recorded(record) and record.get("collector") == node.cfg.node_id and client_connected():
            handed = True
            return {"execution": views.execution(record)}
    finally:
        node.settle(exec_id, handed=handed)
    if not _result_recorded(record):
        return await _current(node, record)
    if record.get("collector") != node.cfg.node_id:   # the cluster released it (this node was found lost)
        return await _hand_over(node, exec_id, record)
    return {"execution": views.execution(record)}     # its client has gone: released for the next reader


async def get_execution_status(node: NodeApi, a: Args) -> dict[str, Any]:
    exec_id = a["executionId"]
    record = await node.read_execution(exec_id)
    if record is None:
        raise NotFound(missing_execution(exec_id)["message"])
    return await _read(node, record, a["wait"])


async def _read(node: NodeApi, record: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """Wait up to wait_s for the execution to end, then hand its result over (delete it), or answer it as it is."""
    exec_id = record["id"]
    if record.get("outputPending"):  # terminated: its output is on the way from the worker
        wait_s = max(wait_s, min(node.cfg.kill_grace_s + 1.0, node.cfg.max_wait_s))
    if _result_recorded(record) and "collector" in record:   # being handed to the request that submitted it
        wait_s = max(wait_s, COLLECTED_GRACE_S)
    record = await _wait_for_end(node, exec_id, record, wait_s, ready=result_ready)
    if result_ready(record):
        if not client_connected():   # its client left while it waited: consume nothing nobody receives
            return {"execution": views.execution(record)}
        return await _hand_over(node, exec_id, record)
    if _result_recorded(record):
        raise Conflict(f"Execution {exec_id}'s result is being handed to the request that submitted it (newExecution "
                       f"with wait, through node {record.get('collector')}); read it again in a few seconds")
    return await _current(node, record)


async def _hand_over(node: NodeApi, exec_id: int, record: dict[str, Any]) -> dict[str, Any]:
    """Reading an ended execution hands its result over and deletes the record (the contract)."""
    try:
        result = await node.submit(C.ExecForget(id=exec_id))
    except Unavailable:
        # The delete may or may not commit; never lose the output over it. If it did not commit,
        # a later read returns the same result again.
        return {"execution": views.execution(record)}
    return {"execution": views.execution(result["execution"])}


async def _current(node: NodeApi, record: dict[str, Any]) -> dict[str, Any]:
    """A waiting or running execution as it stands (with its output so far, or why it waits)."""
    output = await node.live_output(record)
    return {"execution": views.execution(record, output=output, waiting=_waiting(node, record))}


def _result_recorded(record: dict[str, Any]) -> bool:
    """Ended, with its output recorded."""
    return record["status"] in TERMINAL and not record.get("outputPending")


def _waiting(node: NodeApi, record: dict[str, Any]) -> dict[str, Any] | None:
    """waitingReason and queuePosition of a waiting execution, as the state and this node see it now."""
    if record["status"] != WAITING:
        return None
    facts = node.waiting_facts()
    return node.read(lambda s: Waiting(s, facts).explain(record))


async def _wait_for_end(node: NodeApi, exec_id: int, record: dict, wait_s: float,
                        ready: Callable[[dict[str, Any]], bool]) -> dict:
    """The record once ready(record), or as it stands after wait_s; NotFound if it goes meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not ready(record) and loop.time() < deadline:
        await node.wait_execution(exec_id, deadline - loop.time())
        fresh = node.read(lambda s: s.execution(exec_id))
        if fresh is None:
            raise NotFound(missing_execution(exec_id)["message"])
        record = fresh
    return record


async def terminate_execution(node: NodeApi, a: Args) -> dict[str, Any]:
    exec_id = a["executionId"]
    result = await node.submit(C.ExecTerminate(id=exec_id, now=time.time()))
    return {"execution": {"id": result["execution"]["id"], "status": result["execution"]["status"]}}


async def get_all_executions(node: NodeApi, a: Args) -> dict[str, Any]:
    """A page of executions by increasing id (limit, cursor; filters status and activity), without output, and
    the counts per status (of the activity when filtered). O(limit) per page, read from the state's index.
    The first page of an unfiltered call is the old answer (`executions`), for the clients that predate pages."""
    limit, after = a["limit"], a["cursor"]
    status, activity = a["status"], a["activity"]
    await node.caught_up()  # the list reflects every write made before, through any node
    facts = node.waiting_facts()
    page = node.read(lambda s: execution_page(s, activity=activity, status=status, after=after, limit=limit,
                                              facts=facts))
    for view in page["executions"]:   # without output: read an execution for that
        del view["stdout"], view["stderr"]
    return page


def execution_page(state: Any, *, activity: str | None, status: str | None, after: int, limit: int,
                   facts: Facts | None = None) -> dict[str, Any]:
    """One page (views with output) from the state: ids above `after`, at most `limit`; nextCursor when more
    follow, else None; counts per status. With `facts`, a waiting execution has its waitingReason and
    queuePosition (one Waiting for the page: O(log n) each)."""
    table = state.execution_table
    ids = table.page(activity, status, after, limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    records = [state.execution(i) for i in ids]
    waiting = Waiting(state, facts) if facts is not None and any(r["status"] == WAITING for r in records) else None
    return {"executions": [views.execution(r, waiting=waiting.explain(r) if waiting else None) for r in records],
            "nextCursor": P.cursor_of(ids[-1]) if more else None,
            "counts": table.counts(activity)}


HANDLERS: dict[str, Handler] = {
    "newActivity": new_activity,
    "getActivityStatus": get_activity_status,
    "deleteActivity": delete_activity,
    "newExecution": new_execution,
    "getExecutionStatus": get_execution_status,
    "terminateExecution": terminate_execution,
    "getAllExecutions": get_all_executions,
    **CLUSTER_ACTIONS,
    **TOKEN_ACTIONS,
    **ARRAY_ACTIONS,
}


def bind(spec: ActionSpec, handler: Handler) -> Action:
    """The action as the HTTP layer calls it: its declared parameters parsed (api/spec.py), then its handler."""
    async def action(node: NodeApi, params: Params) -> dict[str, Any]:
        return await handler(node, spec.parse(params, node.cfg))
    action.__name__ = action.__qualname__ = handler.__name__
    return action


ACTIONS: dict[str, Action] = {name: bind(SPECS[name], handler) for name, handler in HANDLERS.items()}
