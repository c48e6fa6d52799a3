"""`pod activity create|status|delete`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .client import EXIT_TIMEOUT, EXIT_USAGE, Api, CliError, retrying
from .output import emit_json, say, show_activity, warn


def script_url(value: str) -> str:
    """A bare local path becomes a file:// URL of its absolute path."""
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise CliError(f"no such install script: {value} (give a file or an http(s):// URL)", EXIT_USAGE)
    return path.as_uri()


def cmd_activity_create(args: argparse.Namespace, api: Api) -> int:
    body = api.action("newActivity", name=args.name, installationScriptLocation=script_url(args.script),
                      maxAttempts=args.max_attempts, timeoutS=args.timeout_s, memoryMB=args.memory_mb,
                      maxProcesses=args.max_processes)
    if not args.wait:
        emit_json(body) if args.json else say(f"activity {args.name} created; installing "
                                              f"(check with: pod activity status {args.name})")
        return 0
    act = wait_activity(api, args.name, args.timeout)
    emit_json({"activity": act}) if args.json else show_activity(act)
    if act["status"] == "rejected":
        warn(f"activity {args.name} was rejected: {act.get('errorDescription') or 'no reason given'}")
        return 1
    return 0


def wait_activity(api: Api, name: str, timeout_s: float | None) -> dict:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        act = retrying(lambda: api.action("getActivityStatus", name=name))["activity"]
        if act.get("status") in ("approved", "rejected", "uninstalling"):
            return act
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"gave up after {timeout_s:g} s: activity {name} is still {act.get('status')}",
                           EXIT_TIMEOUT)
        time.sleep(0.3)


def cmd_activity_status(args: argparse.Namespace, api: Api) -> int:
    body = api.action("getActivityStatus", name=args.name)
    emit_json(body) if args.json else show_activity(body["activity"])
    return 0


def cmd_activity_delete(args: argparse.Namespace, api: Api) -> int:
    body = api.action("deleteActivity", name=args.name)
    emit_json(body) if args.json else say(f"activity {args.name} is being uninstalled")
    return 0


def add_activity(sub) -> None:
    act = sub.add_parser("activity", help="create, inspect or delete activities")
    asub = sub.add_subparsers(act, "activity_command")
    p = asub.add_parser("create", help="install an activity on every node")
    p.add_argument("name")
    p.add_argument("--script", required=True, help="install script: http(s):// or file:// URL, or a local file")
    p.add_argument("--max-attempts", type=int, default=None, help="tries per execution (1 to 100)")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="each execution is killed (error) after S seconds (0: none; unset: --exec-timeout-s)")
    p.add_argument("--memory-mb", type=int, default=None,
                   help="memory limit of each execution, MB (0: none; unset: the node's --exec-memory-mb)")
    p.add_argument("--max-processes", type=int, default=None,
                   help="processes and threads per execution (0: none; unset: the node's --exec-max-processes)")
    p.add_argument("--wait", action="store_true", help="wait until approved or rejected")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds")
    p.set_defaults(func=cmd_activity_create)
    asub.add_named("status", cmd_activity_status, "an activity and its installations")
    asub.add_named("delete", cmd_activity_delete, "uninstall an activity everywhere")
