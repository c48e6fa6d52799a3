"""The scaling policies (replicated): named rule sets for growing and shrinking the cluster, one of them
active. The autoscaler reads the active one (podnode/scaling/).

The API checks the rules' meaning (podnode.scaling.policy.parse_rules); here they are checked for shape
only, so a malformed entry is refused instead of raising inside the replicated method.
"""

from __future__ import annotations

from typing import Any

from . import commands as C
from .results import Result, refuse


class ScalingPolicyTable:
    """The policies by name, and the name of the active one. Pure: no I/O, no clock."""

    def __init__(self) -> None:
        self.policies: dict[str, dict[str, Any]] = {}
        self.active_policy: str | None = None

    def load(self, data: dict[str, Any]) -> None:
        self.policies = data.get("policies", {})
        self.active_policy = data.get("active_policy")

    # ---- apply cases ----------------------------------------------------------------------------
    def policy_new(self, cmd: C.PolicyNew) -> Result:
        name, rules, now = str(cmd.name), cmd.rules, cmd.now
        if not isinstance(rules, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in rules.items()):
            return refuse("bad_request", "rules must map names to numbers")
        if name in self.policies:
            return refuse("conflict", f"Policy {name!r} already exists; delete it first or pick another name")
        self.policies[name] = {"name": name, "rules": dict(rules), "createdAt": now}
        return {"ok": True, "policy": dict(self.policies[name])}

    def policy_delete(self, cmd: C.PolicyDelete) -> Result:
        name = cmd.name
        if name not in self.policies:
            return refuse("not_found", f"Policy {name!r} doesn't exist")
        if self.active_policy == name:
            return refuse("conflict", f"Policy {name!r} is active; apply another one or resetPolicies first")
        return {"ok": True, "policy": self.policies.pop(name)}

    def policy_apply(self, cmd: C.PolicyApply) -> Result:
        name = cmd.name
        if name not in self.policies:
            return refuse("not_found", f"Policy {name!r} doesn't exist")
        self.active_policy = name
        return {"ok": True, "policy": dict(self.policies[name])}

    def policy_reset(self, cmd: C.PolicyReset) -> Result:
        removed = sorted(self.policies)
        self.policies.clear()
        self.active_policy = None
        return {"ok": True, "removed": removed}
