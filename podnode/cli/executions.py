"""`pod run` and `pod execution status|terminate`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import uuid

from .arrays import cmd_run_inputs
from .client import EXIT_INTERRUPTED, EXIT_SERVER, EXIT_TIMEOUT, Api, CliError, retrying
from .follow import follow
from .output import TERMINAL, emit_json, exit_code_of, say, show_execution, table, warn

POLL_WAIT_S = 30


def cmd_run(args: argparse.Namespace, api: Api) -> int:
    if args.inputs is not None:
        return cmd_run_inputs(args, api)
    request_id = uuid.uuid4().hex
    if args.wait and not args.follow:
        return run_and_wait(args, api, request_id)
    body = retrying(lambda: api.action("newExecution", post=True, name=args.name, input=args.input,
                                       requestId=request_id))
    ex = body["execution"]
    if args.follow:
        return follow_run(api, ex["id"], args.timeout)
    emit_json(body) if args.json else say(f"execution {ex['id']}  status {ex['status']}\n"
                                          f"(see its result with: pod execution status {ex['id']} --wait 60)")
    return 0


def run_and_wait(args: argparse.Namespace, api: Api, request_id: str) -> int:
    """`pod run --wait`: submit and wait in one request (newExecution with wait: the result comes in its answer),
    then, for a longer run, long-poll getExecutionStatus until the end or --timeout."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    wait = POLL_WAIT_S if args.timeout is None else min(POLL_WAIT_S, args.timeout)
    try:
        ex = retrying(lambda: api.action("newExecution", post=True, name=args.name, input=args.input,
                                         requestId=request_id, wait=f"{wait:.1f}", timeout_s=wait + 30))["execution"]
    except KeyboardInterrupt:
        warn("interrupted while submitting: the execution may have been submitted; see pod execution list")
        return EXIT_INTERRUPTED
    if ex.get("status") in TERMINAL and not ex.get("outputPending"):
        return finish_run(ex, args.json)
    try:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        final = wait_execution(api, ex["id"], left)
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


class _GaveUp(Exception):
    pass


@contextlib.contextmanager
def _give_up_after(timeout_s: float | None):
    """Raise _GaveUp in the main thread once timeout_s has passed (a blocking stream read included)."""
    if timeout_s is None:
        yield
        return

    def alarm(signum, frame):
        raise _GaveUp()
    before = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def follow_run(api: Api, exec_id: int, timeout_s: float | None = None) -> int:
    """`pod run --follow`: print the output as it comes; at the end, read the result (which hands it over and
    deletes it, as `pod run --wait` does) and exit with main.sh's code; after --timeout, exit 124 and leave it."""
    try:
        with _give_up_after(timeout_s):
            end = follow(api, exec_id)
    except _GaveUp:
        warn(f"gave up after {timeout_s:g} s: execution {exec_id} goes on; see it later with: "
             f"pod execution logs {exec_id} -f")
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        warn(f"interrupted; execution {exec_id} goes on: pod execution logs {exec_id} -f")
        return EXIT_INTERRUPTED
    try:
        final = retrying(lambda: api.action("getExecutionStatus", executionId=exec_id))["execution"]
    except CliError as err:
        if err.http_status != 404:
            raise
        final = end   # read meanwhile by another client: the stream's end event says how it ended
    return _ended(final)


def _ended(ex: dict) -> int:
    if ex.get("status") != "finished" and ex.get("exitCode") is None:
        warn(f"execution {ex['id']} {ex['status']}: {ex.get('errorDescription') or 'no reason given'}")
    return exit_code_of(ex)


def cmd_execution_logs(args: argparse.Namespace, api: Api) -> int:
    """Print an execution's output (with -f, as it comes until it ends) without reading its result: the
    execution is not deleted. Exits with main.sh's code once it has ended, 0 before."""
    try:
        end = follow(api, args.id, keep_following=args.follow)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0 if end is None else _ended(end)


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
    p.add_argument("--follow", "-f", action="store_true",
                   help="print the output as it comes (stdout to stdout, stderr to stderr); exit with its code")
    p.add_argument("--timeout", type=float, default=None,
                   help="with --wait, --follow or --inputs: give up after S seconds (exit 124)")
    p.add_argument("--inputs", default=None, metavar="FILE",
                   help="run one execution per line of FILE (- for stdin), submitted in arrays; print each result "
                        "as a JSON line as it ends; exit 0 if all finished, else the worst exit code")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="with --inputs: a progress bar on stderr (done, running, waiting, failed; rate; ETA); "
                        "default: on when stderr is a terminal. The summary is printed at the end either way")
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
    p = esub.add_parser("logs", help="an execution's output, with -f as it comes (reading nothing: it stays)",
                        description="Print an execution's output so far (stdout to stdout, stderr to stderr); with "
                                    "-f, go on as it comes, through moves to other nodes, until it ends. The "
                                    "result is not read: see it (and delete it) with pod execution status. Exits "
                                    "with main.sh's code once it has ended, 0 before.")
    p.add_argument("id", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="go on until the execution ends")
    p.set_defaults(func=cmd_execution_logs)
    p = esub.add_parser("terminate", help="stop an execution")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_execution_terminate)
