"""pod-bootstrap's cluster record (`<state-dir>/cluster.json`, with the secret) and what every mode shares:
BootstrapError, probing members, waiting, and printing the cluster."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import __version__
from ..cluster_secret import keep_admin_token
from ..local.cluster import get_json
from ..scaling import userdata
from ..tokens import TOKEN_FILE, admin_token

T = TypeVar("T")
Out = Callable[[str], None]

STATE_FILE = "cluster.json"
MODES = ("local", "ssh", "cloud")


class BootstrapError(Exception):
    """Something the user must fix or decide; main prints the message and exits 1."""


def say(text: str = "") -> None:
    """Print one line of output right away."""
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------- state


def state_path(state_dir: str | Path) -> Path:
    """Where the cluster record lives."""
    return Path(state_dir) / STATE_FILE


def new_secret() -> str:
    """A fresh cluster secret."""
    return secrets.token_urlsafe(32)


def new_state(name: str, mode: str, secret: str) -> dict[str, Any]:
    """An empty cluster record."""
    return {"name": name, "mode": mode, "secret": secret, "status": "new", "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "members": []}


def load_state(state_dir: str | Path) -> dict[str, Any] | None:
    """The recorded cluster, or None when the state dir has none."""
    path = state_path(state_dir)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise BootstrapError(f"cannot read {path}: {err}") from None
    if not isinstance(state, dict) or state.get("mode") not in MODES or not state.get("secret"):
        raise BootstrapError(f"{path} is not a cluster record (no mode or secret); move it away")
    return state


def save_state(state_dir: str | Path, state: dict[str, Any]) -> None:
    """Write the record atomically, readable by the owner only (it holds the secret)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, state_path(directory))
    keep_admin_token(directory, state["secret"])


# ---------------------------------------------------------------------------------------------------- probing


def member_status(url: str | None, secret: str) -> dict[str, Any] | None:
    """A member's /status (asked with the admin token of the cluster of `secret`), or None if it does not
    answer 200."""
    if not url:
        return None
    try:
        code, body = get_json(url.rstrip("/") + "/status", timeout_s=2.0, token=admin_token(secret))
    except (OSError, ValueError):
        return None
    return body if code == 200 else None


def answering(state: dict[str, Any]) -> dict[str, Any] | None:
    """The /status of the first recorded member that knows a leader, else None."""
    for member in state.get("members", []):
        status = member_status(member.get("url"), state["secret"])
        if status and status.get("leader"):
            return status
    return None


def workers(url: str, secret: str) -> dict[str, str]:
    """{worker id: status} as the member at `url` sees it ({} when it does not answer)."""
    try:
        code, body = get_json(url.rstrip("/") + "/POD/?action=getWorkers", timeout_s=5.0, token=admin_token(secret))
    except (OSError, ValueError):
        return {}
    return {w["id"]: w.get("status", "") for w in body.get("workers", [])} if code == 200 else {}


def poll(check: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Call `check` until it returns something truthy; BootstrapError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BootstrapError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def existing_cluster(state: dict[str, Any] | None, mode: str, force: bool, state_dir: str | Path) -> str:
    """What to do about the recorded cluster: "new" (none), "running" (it answers: start nothing) or "restart"
    (it does not answer; local mode, or --force). Refuses with BootstrapError otherwise."""
    if state is None:
        return "new"
    where = state_path(state_dir)
    if state["mode"] != mode:
        raise BootstrapError(f"{where} records a {state['mode']} cluster {state['name']!r}, not a {mode} one; "
                             f"use another --state-dir, or stop that cluster and move the file away")
    if answering(state):
        return "running"
    if mode == "local" or force:
        return "restart"
    raise BootstrapError(
        f"{where} records the {mode} cluster {state['name']!r} ({len(state['members'])} members), but no member "
        f"answers with a leader. Check the servers (systemctl status {userdata.UNIT_NAME}, journalctl -u "
        f"{userdata.UNIT_NAME}); rerun with --force to deploy again with the same secret"
        + (" (this destroys the recorded servers first)" if mode == "cloud" else ""))


# ---------------------------------------------------------------------------------------------------- output


def member_where(member: dict[str, Any]) -> str:
    """Where a member runs, for the listing: its pid, host or cloud server."""
    if member.get("pid"):
        return f"pid {member['pid']}"
    if member.get("server"):
        return f"server {member['server']}"
    return f"host {member.get('host', '?')}"


def report(state: dict[str, Any], state_dir: str | Path, out: Out = say) -> None:
    """Print the members and how to reach the API."""
    status = answering(state)
    leader = status.get("leader") if status else None
    members = state["members"]
    out(f"POD cluster {state['name']!r} ({state['mode']}, {len(members)} members, secret "
        f"{'set' if state['secret'] else 'none'})" + (f", leader {leader}" if leader else ", no leader answering"))
    for m in members:
        out(f"  {m['id']:<5} {m.get('url') or '(no URL yet)':<30} {member_where(m)}"
            + ("  (leader)" if m["id"] == leader else ""))
    url = (status or {}).get("httpUrl") or next((m["url"] for m in members if m.get("url")), None)
    token_file = (Path(state_dir) / TOKEN_FILE).resolve()
    if url:
        out(f"API:   export POD_URL={url} POD_TOKEN=$(cat {token_file})")
        out(f"       pod status   # or: curl -H \"Authorization: Bearer $POD_TOKEN\" '{url}/POD/?action=getWorkers'")
    out(f"State: {state_path(state_dir).resolve()} (mode 600, holds the cluster secret)")
    out(f"Token: {token_file} (mode 600, the cluster's admin token)")


def already_running(state: dict[str, Any], state_dir: str | Path, out: Out) -> int:
    """The recorded cluster answers: say so and start nothing."""
    out(f"POD cluster {state['name']!r} is already running; starting nothing.")
    report(state, state_dir, out)
    return 0
