"""Actions about the cluster itself: scaling policies (the original POD's), workers, draining."""

from __future__ import annotations

import time
from typing import Any

from ..raft import commands as C
from ..scaling.policy import format_rules
from .node_api import NodeApi
from .spec import Args


def _policy_view(policy: dict[str, Any], active: str | None) -> dict[str, Any]:
    return {"name": policy["name"], "rules": format_rules(policy["rules"]), "values": dict(policy["rules"]),
            "active": policy["name"] == active}


async def new_policy(node: NodeApi, a: Args) -> dict[str, Any]:
    result = await node.submit(C.PolicyNew(name=a["name"], rules=a["rules"], now=time.time()))
    return {"policy": _policy_view(result["policy"], None)}


async def delete_policy(node: NodeApi, a: Args) -> dict[str, Any]:
    result = await node.submit(C.PolicyDelete(name=a["name"]))
    return {"policy": _policy_view(result["policy"], None), "status": "deleted"}


async def apply_policy(node: NodeApi, a: Args) -> dict[str, Any]:
    result = await node.submit(C.PolicyApply(name=a["name"], now=time.time()))
    return {"policy": _policy_view(result["policy"], result["policy"]["name"]), "status": "applied"}


async def get_active_policy(node: NodeApi, a: Args) -> dict[str, Any]:
    await node.caught_up()

    def read(s):
        return _policy_view(s.policies[s.active_policy], s.active_policy) if s.active_policy else None
    return {"policy": node.read(read)}


async def get_policies(node: NodeApi, a: Args) -> dict[str, Any]:
    await node.caught_up()
    return {"policies": node.read(lambda s: [_policy_view(pol, s.active_policy)
                                             for _, pol in sorted(s.policies.items())])}


async def reset_policies(node: NodeApi, a: Args) -> dict[str, Any]:
    result = await node.submit(C.PolicyReset(now=time.time()))
    return {"removed": result["removed"], "status": "reset"}


async def get_workers(node: NodeApi, a: Args) -> dict[str, Any]:
    await node.caught_up()
    return node.workers_view()


async def drain_worker(node: NodeApi, a: Args) -> dict[str, Any]:
    worker, deadline_s = a["workerId"], a["deadline"]
    result = await node.submit(C.NodeDrain(node=worker, deadlineS=deadline_s, reason="drain requested",
                                           now=time.time()))
    return {"worker": {"id": worker, "status": result["node"]["status"]}, "status": "draining"}


CLUSTER_ACTIONS = {
    "newPolicy": new_policy,
    "deletePolicy": delete_policy,
    "applyPolicy": apply_policy,
    "getActivePolicy": get_active_policy,
    "getPolicies": get_policies,
    "resetPolicies": reset_policies,
    "getWorkers": get_workers,
    "drainWorker": drain_worker,
}
