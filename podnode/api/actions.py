"""The action API: /POD/?action=NAME&... One small function per action; errors are raised, not returned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import NotFound, Unavailable
from ..raft import commands as C
from ..raft.lifecycle import TERMINAL, WAITING
from ..raft.state import missing_execution
from ..waiting import Facts, Waiting
from . import params as P
from . import views
from .array_actions import ARRAY_ACTIONS
from .cluster_actions import CLUSTER_ACTIONS
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


async def new_execution(node: NodeApi, a: Args) -> dict[str, Any]:
    name = a["name"]
    cmd = C.ExecNew(name=name, input=a["input"], requestId=a["requestId"],
                    now=time.time(), node=node.propose_placement(name),
                    maxWaiting=node.cfg.max_waiting_executions or None,
                    maxUnreadBytes=node.cfg.max_unread_result_bytes or None)
    result = await node.submit(cmd)
    return {"execution": views.execution_summary(result["execution"])}


async def get_execution_status(node: NodeApi, a: Args) -> dict[str, Any]:
    exec_id = a["executionId"]
    wait_s = a["wait"]
    record = await node.read_execution(exec_id)
    if record is None:
        raise NotFound(missing_execution(exec_id)["message"])
    if record.get("outputPending"):  # terminated: its output is on the way from the worker
        wait_s = max(wait_s, min(node.cfg.kill_grace_s + 1.0, node.cfg.max_wait_s))
    record = await _wait_for_end(node, exec_id, record, wait_s)
    if record["status"] in TERMINAL and not record.get("outputPending"):
        # Reading an ended execution hands over its result and deletes the record (the contract).
        try:
            result = await node.submit(C.ExecForget(id=exec_id))
        except Unavailable:
            # The delete may or may not commit; never lose the output over it. If it did not commit,
            # a later read returns the same result again.
            return {"execution": views.execution(record)}
        return {"execution": views.execution(result["execution"])}
    output = await node.live_output(record)
    return {"execution": views.execution(record, output=output, waiting=_waiting(node, record))}


def _waiting(node: NodeApi, record: dict[str, Any]) -> dict[str, Any] | None:
    """waitingReason and queuePosition of a waiting execution, as the state and this node see it now."""
    if record["status"] != WAITING:
        return None
    facts = node.waiting_facts()
    return node.read(lambda s: Waiting(s, facts).explain(record))


async def _wait_for_end(node: NodeApi, exec_id: int, record: dict, wait_s: float) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (record["status"] not in TERMINAL or record.get("outputPending")) and loop.time() < deadline:
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
