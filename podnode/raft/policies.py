"""Replicated scaling policies: named rule sets, one of them active. A mixin of State (pure, no I/O).

The API checks the rules' meaning (podnode.scaling.policy.parse_rules); here they are checked for shape
only, so a malformed entry is refused instead of raising inside the replicated method.
"""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]


def _refuse(kind: str, message: str) -> Result:
    return {"error": kind, "message": message}


class PolicyCommands:
    policies: dict[str, dict[str, Any]]
    active_policy: str | None

    def _policy_new(self, cmd: dict) -> Result:
        name, rules, now = str(cmd["name"]), cmd["rules"], cmd["now"]
        if not isinstance(rules, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in rules.items()):
            return _refuse("bad_request", "rules must map names to numbers")
        if name in self.policies:
            return _refuse("conflict", f"Policy {name!r} already exists; delete it first or pick another name")
        self.policies[name] = {"name": name, "rules": dict(rules), "createdAt": now}
        return {"ok": True, "policy": dict(self.policies[name])}

    def _policy_delete(self, cmd: dict) -> Result:
        name = cmd["name"]
        if name not in self.policies:
            return _refuse("not_found", f"Policy {name!r} doesn't exist")
        if self.active_policy == name:
            return _refuse("conflict", f"Policy {name!r} is active; apply another one or resetPolicies first")
        return {"ok": True, "policy": self.policies.pop(name)}

    def _policy_apply(self, cmd: dict) -> Result:
        name = cmd["name"]
        if name not in self.policies:
            return _refuse("not_found", f"Policy {name!r} doesn't exist")
        self.active_policy = name
        return {"ok": True, "policy": dict(self.policies[name])}

    def _policy_reset(self, cmd: dict) -> Result:
        removed = sorted(self.policies)
        self.policies.clear()
        self.active_policy = None
        return {"ok": True, "removed": removed}
