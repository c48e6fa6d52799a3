"""Actions about the cluster itself: scaling policies (the original POD's), workers, draining."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequest
from ..raft import commands as C
from ..scaling.policy import PolicyError, format_rules, parse_rules
from . import params as P
from .node_api import NodeApi

Params = Mapping[str, str]


def _policy_view(policy: dict[str, Any], active: str | None) -> dict[str, Any]:
    return {"name": policy["name"], "rules": format_rules(policy["rules"]), "values": dict(policy["rules"]),
            "active": policy["name"] == active}


async def new_policy(node: NodeApi, p: Params) -> dict[str, Any]:
    name = P.name(p, "name", "policy")
    try:
        rules = parse_rules(P.required(p, "rules"))
    except PolicyError as exc:
        raise BadRequest(f"Invalid rules: {exc}") from None
    result = await node.submit(C.PolicyNew(name=name, rules=rules, now=time.time()))
    return {"policy": _policy_view(result["policy"], None)}


async def delete_policy(node: NodeApi, p: Params) -> dict[str, Any]:
    result = await node.submit(C.PolicyDelete(name=P.name(p, "name", "policy")))
    return {"policy": _policy_view(result["policy"], None), "status": "deleted"}


async def apply_policy(node: NodeApi, p: Params) -> dict[str, Any]:
    result = await node.submit(C.PolicyApply(name=P.name(p, "name", "policy"), now=time.time()))
    return {"policy": _policy_view(result["policy"], result["policy"]["name"]), "status": "applied"}


async def get_active_policy(node: NodeApi, p: Params) -> dict[str, Any]:
    await node.caught_up()

    def read(s):
        return _policy_view(s.policies[s.active_policy], s.active_policy) if s.active_policy else None
    return {"policy": node.read(read)}


async def get_policies(node: NodeApi, p: Params) -> dict[str, Any]:
    await node.caught_up()
    return {"policies": node.read(lambda s: [_policy_view(pol, s.active_policy)
                                             for _, pol in sorted(s.policies.items())])}


async def reset_policies(node: NodeApi, p: Params) -> dict[str, Any]:
    result = await node.submit(C.PolicyReset(now=time.time()))
    return {"removed": result["removed"], "status": "reset"}


async def get_workers(node: NodeApi, p: Params) -> dict[str, Any]:
    await node.caught_up()
    return node.workers_view()


async def drain_worker(node: NodeApi, p: Params) -> dict[str, Any]:
    worker = P.name(p, "workerId", "worker")
    deadline_s = P.seconds(p, "deadline", default=300.0, cap_s=7 * 24 * 3600.0)
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
