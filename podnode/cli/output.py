"""What `pod` prints: JSON, tables and the friendly views of activities, executions and nodes."""

from __future__ import annotations

import json
import sys
from typing import Any

from .client import EXIT_TERMINATED

TERMINAL = ("finished", "error", "terminated")


def emit_json(body: Any) -> None:
    print(json.dumps(body, indent=2), flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    """To stderr, every line as `pod: ...`."""
    print("\n".join(f"pod: {line}" for line in text.splitlines() or [""]), file=sys.stderr, flush=True)


def exit_code_of(ex: dict) -> int:
    """An ended execution as a process exit code: main.sh's own (128+N after signal N), 143 when terminated,
    1 for an error without one (it could not start, or its node was lost too often)."""
    code = ex.get("exitCode")
    if ex.get("status") == "terminated":
        return EXIT_TERMINATED
    if code is None:
        return 0 if ex.get("status") == "finished" else 1
    return 128 - code if code < 0 else code


def show_activity(act: dict) -> None:
    say(f"activity {act.get('name')}  status {act.get('status')}  id {act.get('id')}  "
        f"maxAttempts {act.get('maxAttempts')}")
    say(f"script    {act.get('installationScriptLocation')}")
    if act.get("limits"):
        say("limits    " + "  ".join(f"{k} {'none' if v is None else v}" for k, v in act["limits"].items()))
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
