"""`pod`: the command-line client of a POD cluster, and `pod up` to run one on this machine.

Talks to the HTTP action API with the standard library only. Exit codes: 0 ok, 1 the job failed
(rejected activity, execution error without a code), 2 a 4xx answer or bad usage, 3 a 5xx answer or an
unreachable node, 124 gave up waiting, 130 interrupted; `pod run --wait` exits with the execution's code.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

TERMINAL = ("finished", "error", "terminated")
EXIT_USAGE, EXIT_SERVER, EXIT_TIMEOUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 3, 124, 130, 143
RETRY_BUDGET_S = 10.0
POLL_WAIT_S = 30


class CliError(Exception):
    """Ends the command: the message goes to stderr as `pod: ...`, the process exits with `code`."""

    def __init__(self, message: str, code: int, *, http_status: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """Worth retrying: the node is unreachable or answered 503."""
        return self.http_status is None or self.http_status == 503


# ---- HTTP ---------------------------------------------------------------------------------------------
class Api:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def action(self, action: str, *, timeout_s: float = 30.0, post: bool = False, **params: Any) -> dict:
        query = {"action": action, **{k: str(v) for k, v in params.items() if v is not None}}
        data = urllib.parse.urlencode(query)
        if post:  # inputs can be large: send them in the body, not the URL
            return self.get_json(f"{self.url}/POD/", timeout_s, data.encode())
        return self.get_json(f"{self.url}/POD/?{data}", timeout_s)

    def get_json(self, url: str, timeout_s: float, body: bytes | None = None) -> dict:
        try:
            with urllib.request.urlopen(url, data=body, timeout=timeout_s) as resp:
                return _decode(resp.read())
        except urllib.error.HTTPError as err:
            raise _http_error(err) from None
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise CliError(f"cannot reach {self.url}: {reason}", EXIT_SERVER) from None


def _decode(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise CliError(f"the node answered something that is not JSON: {raw[:200]!r}", EXIT_SERVER) from None


def _http_error(err: urllib.error.HTTPError) -> CliError:
    raw = err.read()
    try:
        message = json.loads(raw or b"{}").get("error") or f"HTTP {err.code}"
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip() or f"HTTP {err.code} {err.reason}"
    retry_after = err.headers.get("Retry-After") if err.headers else None
    try:
        retry_s = float(retry_after) if retry_after else None
    except ValueError:
        retry_s = None
    return CliError(message, EXIT_USAGE if err.code < 500 else EXIT_SERVER, http_status=err.code,
                    retry_after_s=retry_s)


def retrying(call: Callable[[], dict], budget_s: float = RETRY_BUDGET_S) -> dict:
    """Run `call`, retrying 503s and connection failures for up to `budget_s`, honoring Retry-After."""
    deadline = time.monotonic() + budget_s
    pause = 0.25
    while True:
        try:
            return call()
        except CliError as err:
            left = deadline - time.monotonic()
            if not err.transient or left <= 0:
                raise
            time.sleep(min(err.retry_after_s or pause, left))
            pause = min(pause * 2, 2.0)


# ---- output -------------------------------------------------------------------------------------------
def emit_json(body: Any) -> None:
    print(json.dumps(body, indent=2), flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(f"pod: {text}", file=sys.stderr, flush=True)


def show_activity(act: dict) -> None:
    say(f"activity {act.get('name')}  status {act.get('status')}  id {act.get('id')}  "
        f"maxAttempts {act.get('maxAttempts')}")
    say(f"script    {act.get('installationScriptLocation')}")
    insts = act.get("installations") or []
    if insts:
        say("nodes     " + ", ".join(f"{i.get('workerId')} {i.get('status')}" for i in insts))
    if act.get("errorDescription"):
        say(f"error     {act['errorDescription']}")
    for inst in insts:
        if inst.get("errorDescription") and inst["errorDescription"] != act.get("errorDescription"):
            say(f"error on {inst.get('workerId')}: {inst['errorDescription']}")


def show_execution(ex: dict) -> None:
    parts = [f"execution {ex.get('id')}", f"activity {ex.get('activityName')}", f"status {ex.get('status')}"]
    if ex.get("exitCode") is not None:
        parts.append(f"exit code {ex['exitCode']}")
    if ex.get("workerId"):
        parts.append(f"worker {ex['workerId']}")
    say("  ".join(parts))
    if ex.get("errorDescription"):
        say(f"error: {ex['errorDescription']}")
    for stream in ("stdout", "stderr"):
        if ex.get(stream):
            say(f"--- {stream}" + (" (truncated)" if ex.get(f"{stream}Truncated") else ""))
            sys.stdout.write(ex[stream] if ex[stream].endswith("\n") else ex[stream] + "\n")
    if ex.get("status") in TERMINAL and not ex.get("outputPending"):
        say("(result retrieved: the node has now deleted this execution's record)")


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


# ---- activity -----------------------------------------------------------------------------------------
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
                      maxAttempts=args.max_attempts)
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


# ---- executions ---------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, api: Api) -> int:
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


def exit_code_of(ex: dict) -> int:
    code = ex.get("exitCode")
    if ex.get("status") == "terminated":
        return EXIT_TERMINATED
    if code is None:
        return 0 if ex.get("status") == "finished" else 1
    return 128 - code if code < 0 else code


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
    emit_json({"execution": ex}) if args.json else show_execution(ex)
    return 0


def cmd_execution_terminate(args: argparse.Namespace, api: Api) -> int:
    body = api.action("terminateExecution", executionId=args.id)
    ex = body["execution"]
    emit_json(body) if args.json else say(f"execution {ex['id']}  status {ex['status']}")
    return 0


# ---- status -------------------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, api: Api) -> int:
    status = api.get_json(f"{api.url}/status", 10.0)
    body = api.action("getWorkers")
    workers = body.get("workers", [])
    if args.json:
        emit_json({"status": status, "workers": workers})
        return 0
    show_status(status)
    say()
    rows = [["WORKER", "STATUS", "URL", "SLOTS", "BUSY", "PROVIDER", "PRICE/H", "CONNECTED"]]
    rows += [[str(w.get("id")), str(w.get("status", "up")), str(w.get("httpUrl")), str(w.get("slots")),
              str(w.get("busy")), str(w.get("provider", "static")), f"{w.get('hourlyPrice') or 0:g}",
              "yes" if w.get("connected") else "no"] for w in workers]
    table(rows)
    say(f"\nspend       {body.get('spendPerHour', 0):g}/h now, {body.get('spentSoFar', 0):.4g} so far"
        + (f"; launching {', '.join(l['id'] for l in body['launching'])}" if body.get("launching") else ""))
    if status.get("scaling"):
        say(f"scaling     {status['scaling'].get('reason')}")
    return 0


def show_status(s: dict) -> None:
    peers = s.get("peers") or []
    connected = sum(1 for p in peers if p.get("connected"))
    slots = s.get("slots") or {}
    say(f"node        {s.get('node')}  ({s.get('role')})")
    say(f"leader      {s.get('leader') or '(none: no leader elected)'}")
    say(f"term        {s.get('term')}  commit index {s.get('commitIndex')}")
    say(f"peers       {connected}/{len(peers)} connected  " +
        ", ".join(f"{p.get('id') or p.get('address')} {'up' if p.get('connected') else 'DOWN'}" for p in peers))
    say(f"slots       {slots.get('busy')}/{slots.get('total')} busy")
    say(f"activities  {', '.join(f'{k} {v}' for k, v in (s.get('activities') or {}).items()) or '(none)'}")
    say(f"version     {s.get('version')}  pid {s.get('pid')}  up {s.get('uptimeSeconds')} s")


# ---- pod up -------------------------------------------------------------------------------------------
class _Stop(Exception):
    """SIGINT or SIGTERM: stop the cluster. Set explicitly: a shell starts background jobs with SIGINT ignored."""


def check_ports(base: int, nodes: int) -> None:
    for i in range(nodes):
        for port, what in ((base + i, "HTTP"), (base + 1000 + i, "Raft")):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the nodes do: TIME_WAIT is fine
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError as err:
                    raise CliError(f"port {port} (n{i + 1} {what}) is not free: {err.strerror}; "
                                   f"pick another base with --port", EXIT_USAGE) from None


def cmd_up(args: argparse.Namespace, api: Api) -> int:
    from .localcluster import LocalCluster

    if args.nodes < 1 or not 0 < args.port <= 65536 - 1000 - args.nodes:
        raise CliError("--nodes must be >= 1 and the ports must fit below 65536", EXIT_USAGE)
    check_ports(args.port, args.nodes)
    cluster = LocalCluster(args.data_dir, nodes=args.nodes, base_port=args.port, slots=args.slots,
                           extra_args=["--provider", "local"],
                           log_dir=args.data_dir)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_cluster(cluster, args.data_dir)
    except (KeyboardInterrupt, _Stop):
        say("stopping POD...")
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not leave nodes behind
            signal.signal(sig, signal.SIG_IGN)
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def run_cluster(cluster, data_dir: str) -> int:
    say(f"starting {len(cluster.nodes)} nodes...")
    try:
        cluster.start(timeout_s=60)
    except (RuntimeError, TimeoutError) as err:
        warn(f"POD did not start: {err}; logs in {data_dir}/")
        return EXIT_SERVER
    leader = cluster.leader()
    for node in cluster.nodes:
        say(f"{node.node_id}  {node.url}" + ("  (leader)" if leader is node else ""))
    say(f"POD is up: {len(cluster.nodes)} nodes. Ctrl-C to stop. Logs in {data_dir}/")
    while True:
        for node in cluster.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                warn(f"{node.node_id} exited with code {node.proc.returncode}; stopping the others "
                     f"(see {cluster.log_dir / (node.node_id + '.log')})")
                return 1
        time.sleep(0.5)


# ---- arguments ----------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    """--url and --json are accepted after the command too (`pod status --json`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="a node's URL")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON")
    return common


class _Sub:
    """Subparsers whose every parser also takes the common options."""

    def __init__(self, actions):
        self.actions = actions

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.actions.add_parser(name, parents=[_common()], **kwargs)

    def add_subparsers(self, parser: argparse.ArgumentParser, dest: str) -> "_Sub":
        return _Sub(parser.add_subparsers(dest=dest, required=True, metavar="ACTION"))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pod", description="Client of a POD cluster (processing on demand).")
    ap.add_argument("--url", default=os.environ.get("POD_URL", "http://localhost:8080"),
                    help="a node's URL (default: env POD_URL or http://localhost:8080)")
    ap.add_argument("--json", action="store_true", help="print the raw JSON answers")
    sub = _Sub(ap.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    add_up(sub)
    add_activity(sub)
    add_run(sub)
    add_execution(sub)
    sub.add_parser("status", help="this node's view of the cluster, and the workers").set_defaults(func=cmd_status)
    return ap


def add_up(sub) -> None:
    p = sub.add_parser("up", help="run a local cluster in the foreground until Ctrl-C")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=8080,
                   help="node i serves HTTP on PORT+i and Raft on PORT+1000+i (default 8080)")
    p.add_argument("--data-dir", default="./pod-data", help="data and logs (default ./pod-data)")
    p.add_argument("--slots", type=int, default=None, help="concurrent executions per node (default: CPUs)")
    p.set_defaults(func=cmd_up)


def add_activity(sub) -> None:
    act = sub.add_parser("activity", help="create, inspect or delete activities")
    asub = sub.add_subparsers(act, "activity_command")
    p = asub.add_parser("create", help="install an activity on every node")
    p.add_argument("name")
    p.add_argument("--script", required=True, help="install script: http(s):// or file:// URL, or a local file")
    p.add_argument("--max-attempts", type=int, default=None, help="tries per execution (1 to 100)")
    p.add_argument("--wait", action="store_true", help="wait until approved or rejected")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds")
    p.set_defaults(func=cmd_activity_create)
    for name, func, text in (("status", cmd_activity_status, "an activity and its installations"),
                             ("delete", cmd_activity_delete, "uninstall an activity everywhere")):
        p = asub.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(func=func)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="start an execution of an activity")
    p.add_argument("name")
    p.add_argument("input", nargs="?", default=None, help="the execution's input (main.sh gets it as $1)")
    p.add_argument("--wait", action="store_true", help="wait for the end; print its output; exit with its code")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds (exit 124)")
    p.set_defaults(func=cmd_run)


def add_execution(sub) -> None:
    ex = sub.add_parser("execution", help="inspect or terminate an execution")
    esub = sub.add_subparsers(ex, "execution_command")
    p = esub.add_parser("status", help="an execution's status and output (an ended one is then deleted)")
    p.add_argument("id", type=int)
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the end")
    p.set_defaults(func=cmd_execution_status)
    p = esub.add_parser("terminate", help="stop an execution")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_execution_terminate)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (the `pod` script exits with it)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args, Api(args.url))
    except CliError as err:
        warn(err.message)
        code = err.code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
