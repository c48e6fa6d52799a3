"""`pod status`, `pod worker list|drain` and `pod policy ...`: the cluster itself."""

from __future__ import annotations

import argparse
import time

from .client import Api
from .output import emit_json, say, show_status, table


def cmd_status(args: argparse.Namespace, api: Api) -> int:
    status = api.get_json(f"{api.url}/status", 10.0)
    body = api.action("getWorkers")
    workers = body.get("workers", [])
    if args.json:
        emit_json({"status": status, "workers": workers})
        return 0
    show_status(status)
    say()
    show_workers(body)
    if status.get("scaling"):
        say(f"scaling     {status['scaling'].get('reason')}")
    return 0


def show_workers(body: dict, *, show_left: bool = False) -> None:
    """The nodes in the cluster; those that left only counted, unless `show_left` (`pod worker list --all`)."""
    workers = body.get("workers", [])
    members = [w for w in workers if w.get("status") != "left"]
    left = sorted((w for w in workers if w.get("status") == "left"), key=lambda w: w.get("leftTime") or 0)
    rows = [["WORKER", "STATUS", "URL", "SLOTS", "BUSY", "PROVIDER", "PRICE/H", "CONNECTED"]]
    rows += [[str(w.get("id")), str(w.get("status", "up")), str(w.get("httpUrl")), str(w.get("slots")),
              str(w.get("busy")), str(w.get("provider", "static")), f"{w.get('hourlyPrice') or 0:g}",
              "yes" if w.get("connected") else "no"] for w in members]
    table(rows)
    if left and show_left:
        say(f"\nleft the cluster ({len(left)}):")
        table([["WORKER", "LEFT", "URL", "PROVIDER", "PRICE/H"]] +
              [[str(w.get("id")), _ago(w.get("leftTime")), str(w.get("httpUrl")), str(w.get("provider", "static")),
                f"{w.get('hourlyPrice') or 0:g}"] for w in left])
    elif left:
        say(f"\nleft        {len(left)} {'node' if len(left) == 1 else 'nodes'} (the last: {left[-1].get('id')}, "
            f"{_ago(left[-1].get('leftTime'))}); see them with: pod worker list --all")
    say(f"\nspend       {body.get('spendPerHour', 0):g}/h now, {body.get('spentSoFar', 0):.4g} so far"
        + (f"; launching {', '.join(n['id'] for n in body['launching'])}" if body.get("launching") else ""))
    failures = body.get("launchFailures") or {}
    if failures.get("count"):
        say(f"failed launches {failures['count']}, the last of {failures.get('lastNode')}: "
            f"{failures.get('lastReason') or 'no reason given'}")


def _ago(time_ms: int | None) -> str:
    if time_ms is None:
        return "?"
    seconds = max(0.0, time.time() - time_ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def cmd_worker_list(args: argparse.Namespace, api: Api) -> int:
    body = api.action("getWorkers")
    emit_json(body) if args.json else show_workers(body, show_left=args.all)
    return 0


def cmd_worker_drain(args: argparse.Namespace, api: Api) -> int:
    body = api.action("drainWorker", workerId=args.id, deadline=args.deadline)
    emit_json(body) if args.json else say(
        f"worker {args.id} is draining: it takes no new work, finishes what it runs"
        + (f" (requeued after {args.deadline:g} s)" if args.deadline is not None else "") + ", then leaves")
    return 0


# ---- policies -----------------------------------------------------------------------------------------
def show_policies(policies: list[dict]) -> None:
    if not policies:
        say("no policies (the cluster keeps the nodes it has)")
        return
    table([["POLICY", "ACTIVE", "RULES"]] +
          [[p["name"], "yes" if p.get("active") else "", p["rules"]] for p in policies])


def cmd_policy_create(args: argparse.Namespace, api: Api) -> int:
    body = api.action("newPolicy", name=args.name, rules=args.rules)
    if args.apply:
        body = api.action("applyPolicy", name=args.name)
    emit_json(body) if args.json else say(
        f"policy {args.name} {'created and applied' if args.apply else 'created'}: {body['policy']['rules']}"
        + ("" if args.apply else f"\n(make it the active one with: pod policy apply {args.name})"))
    return 0


def cmd_policy_apply(args: argparse.Namespace, api: Api) -> int:
    body = api.action("applyPolicy", name=args.name)
    emit_json(body) if args.json else say(f"policy {args.name} is active: {body['policy']['rules']}")
    return 0


def cmd_policy_delete(args: argparse.Namespace, api: Api) -> int:
    body = api.action("deletePolicy", name=args.name)
    emit_json(body) if args.json else say(f"policy {args.name} deleted")
    return 0


def cmd_policy_list(args: argparse.Namespace, api: Api) -> int:
    body = api.action("getPolicies")
    emit_json(body) if args.json else show_policies(body["policies"])
    return 0


def cmd_policy_active(args: argparse.Namespace, api: Api) -> int:
    body = api.action("getActivePolicy")
    if args.json:
        emit_json(body)
    elif body.get("policy"):
        say(f"policy {body['policy']['name']} is active: {body['policy']['rules']}")
    else:
        say("no policy is active (the cluster keeps the nodes it has)")
    return 0


def cmd_policy_reset(args: argparse.Namespace, api: Api) -> int:
    body = api.action("resetPolicies")
    removed = body["removed"]
    emit_json(body) if args.json else say(
        f"removed {len(removed)} {'policy' if len(removed) == 1 else 'policies'}"
        + (f" ({', '.join(removed)})" if removed else "") + "; none is active")
    return 0


def add_cluster(sub) -> None:
    sub.add_parser("status", help="this node's view of the cluster, and the workers").set_defaults(func=cmd_status)

    worker = sub.add_parser("worker", help="list the cluster's nodes or drain one")
    wsub = sub.add_subparsers(worker, "worker_command")
    p = wsub.add_parser("list", help="every node: status, slots, provider, price; and the spend")
    p.add_argument("--all", action="store_true", help="also list the nodes that left the cluster")
    p.set_defaults(func=cmd_worker_list)
    p = wsub.add_parser("drain", help="a node takes no new work, finishes what it runs, and leaves")
    p.add_argument("id", help="the node's id (see pod worker list)")
    p.add_argument("--deadline", type=float, default=None, metavar="S",
                   help="requeue what still runs after S seconds (default 300)")
    p.set_defaults(func=cmd_worker_drain)

    policy = sub.add_parser("policy", help="scaling policies: when to add and remove nodes")
    psub = sub.add_subparsers(policy, "policy_command")
    p = psub.add_parser("create", help="a named set of rules")
    p.add_argument("name")
    p.add_argument("rules", help="name=value,...: fixedWorkers, minWorkers, maxWorkers, maxWait (ms), "
                                 "terminationTime (ms), cooldown (ms), maxCostPerHour")
    p.add_argument("--apply", action="store_true", help="make it the active policy too")
    p.set_defaults(func=cmd_policy_create)
    psub.add_named("apply", cmd_policy_apply, "make a policy the active one")
    psub.add_named("delete", cmd_policy_delete, "delete a policy that is not active")
    psub.add_parser("list", help="every policy, and which is active").set_defaults(func=cmd_policy_list)
    psub.add_parser("active", help="the active policy").set_defaults(func=cmd_policy_active)
    psub.add_parser("reset", help="delete every policy").set_defaults(func=cmd_policy_reset)
