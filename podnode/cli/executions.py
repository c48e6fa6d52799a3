"""`pod run` and `pod execution status|terminate`."""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from .arrays import cmd_run_inputs
from .client import EXIT_INTERRUPTED, EXIT_SERVER, EXIT_TIMEOUT, Api, CliError, retrying
from .output import TERMINAL, emit_json, exit_code_of, say, show_execution, table, warn

POLL_WAIT_S = 30


def cmd_run(args: argparse.Namespace, api: Api) -> int:
    if args.inputs is not None:
        return cmd_run_inputs(args, api)
    request_id = uuid.uuid4().hex
    body = retrying(lambda: api.action("newExecution", post=True, name=args.name, input=args.input,
                                       requestId=request_id))
    ex = body["execution"]
    if not args.wait:
        emit_json(body) if args.json else say(f"execution {ex['id']}  status {ex['status']}\n"
                                              f"(see its result with: pod execution status {ex['id']} --wait 60)")
        return 0
    try:
        final = wait_execution(api, ex["id"], args.timeout)
    except KeyboardInterrupt:
        warn(f"interrupted; execution {ex['id']} goes on: pod execution status {ex['id']}")
        return EXIT_INTERRUPTED
    if final.get("status") not in TERMINAL:
        warn(f"gave up after {args.timeout:g} s: execution {ex['id']} is still {final.get('status')}; "
             f"see it later with: pod execution status {ex['id']}")
        return EXIT_TIMEOUT
    return finish_run(final, args.json)


def wait_execution(api: Api, exec_id: int, timeout_s: float | None) -> dict:
    """Long-poll getExecutionStatus until the execution ends or `timeout_s` passes; return the last record."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = POLL_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
        wait = min(POLL_WAIT_S, left)
        ex = retrying(lambda: api.action("getExecutionStatus", executionId=exec_id, wait=f"{wait:.1f}",
                                         timeout_s=wait + 30))["execution"]
        if ex.get("status") in TERMINAL and not ex.get("outputPending"):
            return ex
        if deadline is not None and time.monotonic() >= deadline:
            return ex


def finish_run(ex: dict, as_json: bool) -> int:
    if as_json:
        emit_json({"execution": ex})
    else:
        sys.stdout.write(ex.get("stdout") or "")
        sys.stdout.flush()
        sys.stderr.write(ex.get("stderr") or "")
        sys.stderr.flush()
        if ex.get("status") != "finished" and ex.get("exitCode") is None:
            warn(f"execution {ex['id']} {ex['status']}: {ex.get('errorDescription') or 'no reason given'}")
    return exit_code_of(ex)


def cmd_execution_status(args: argparse.Namespace, api: Api) -> int:
    if args.wait:
        ex = wait_execution(api, args.id, args.wait)
    else:
        ex = api.action("getExecutionStatus", executionId=args.id)["execution"]
    if args.json:
        emit_json({"execution": ex})
    else:
        show_execution(ex)
        if ex.get("waitingReason"):
            say(f"waiting: {ex['waitingReason']} (queue position {ex.get('queuePosition')}: 0 starts next)")
    return exit_code_of(ex) if ex.get("status") in TERMINAL else 0


def cmd_execution_terminate(args: argparse.Namespace, api: Api) -> int:
    body = api.action("terminateExecution", executionId=args.id)
    ex = body["execution"]
    emit_json(body) if args.json else say(f"execution {ex['id']}  status {ex['status']}")
    return 0


def cmd_execution_list(args: argparse.Namespace, api: Api) -> int:
    """Page through getAllExecutions (limit, cursor; until nextCursor is null), filtered by the node; a node that
    sends no nextCursor (an older one) answers everything at once, and the filters are applied here."""
    query = {"limit": args.limit, "status": args.status, "activity": args.activity}
    executions: list[dict] = []
    counts = None
    cursor, seen = None, set()
    while True:
        body = retrying(lambda: api.action("getAllExecutions", cursor=cursor, **query))
        page = body.get("executions", [])
        paged = "nextCursor" in body
        if not paged:
            page = [e for e in page if args.activity in (None, e.get("activityName"))
                    and args.status in (None, e.get("status"))]
        executions += page
        counts = body.get("counts", counts)
        cursor = body.get("nextCursor") if paged else None
        if cursor is None:
            break
        if cursor in seen:
            raise CliError(f"the node answered the cursor {cursor!r} twice; stopping", EXIT_SERVER)
        seen.add(cursor)
    if args.json:
        emit_json({"executions": executions, **({"counts": counts} if counts is not None else {})})
        return 0
    if not executions:
        say("no executions" + (f" of {args.activity}" if args.activity else "") +
            (f" {args.status}" if args.status else ""))
    else:
        table([["ID", "ACTIVITY", "STATUS", "WORKER", "ATTEMPTS", "EXIT", "QUEUE", "REASON"]] +
              [[str(e["id"]), str(e.get("activityName")), str(e.get("status")), str(e.get("workerId") or "-"),
                str(e.get("attempts", 0)), "-" if e.get("exitCode") is None else str(e["exitCode"]),
                "-" if e.get("queuePosition") is None else str(e["queuePosition"]), e.get("waitingReason") or "-"]
               for e in executions])
    say(summary_line(len(executions), counts))
    return 0


def summary_line(listed: int, counts: dict | None) -> str:
    """`N listed; by status: waiting 3, in progress 2, ...` (the counts as the node gives them, if it does)."""
    line = f"{listed} listed"
    if counts:
        line += "; by status: " + ", ".join(f"{status} {n}" for status, n in counts.items())
    return line


def add_run(sub) -> None:
    p = sub.add_parser("run", help="start an execution of an activity")
    p.add_argument("name")
    p.add_argument("input", nargs="?", default=None, help="the execution's input (main.sh gets it as $1)")
    p.add_argument("--wait", action="store_true", help="wait for the end; print its output; exit with its code")
    p.add_argument("--timeout", type=float, default=None,
                   help="with --wait or --inputs: give up after S seconds (exit 124)")
    p.add_argument("--inputs", default=None, metavar="FILE",
                   help="run one execution per line of FILE (- for stdin), submitted in arrays; print each result "
                        "as a JSON line as it ends; exit 0 if all finished, else the worst exit code")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="with --inputs: write ID.stdout, ID.stderr and ID.json per execution into DIR instead")
    p.set_defaults(func=cmd_run)


def add_execution(sub) -> None:
    ex = sub.add_parser("execution", help="list, inspect or terminate executions")
    esub = sub.add_subparsers(ex, "execution_command")
    p = esub.add_parser("list", help="the executions the cluster holds (without output; reading none)")
    p.add_argument("--activity", default=None, metavar="NAME", help="only this activity's")
    p.add_argument("--status", default=None, choices=["waiting", "in progress", "finished", "error", "terminated"],
                   help="only those in this status")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="executions per request (default 1000)")
    p.set_defaults(func=cmd_execution_list)
    p = esub.add_parser("status", help="an execution's status and output (an ended one is then deleted)",
                        description="Print an execution's status and output. An ended execution is then deleted. "
                                    "Exits 0 while it waits or runs; once it has ended, like `pod run --wait`: "
                                    "main.sh's exit code (0 when finished), 143 when terminated, 1 for an error "
                                    "without an exit code.")
    p.add_argument("id", type=int)
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the end")
    p.set_defaults(func=cmd_execution_status)
    p = esub.add_parser("terminate", help="stop an execution")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_execution_terminate)
