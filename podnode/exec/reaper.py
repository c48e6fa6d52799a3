"""The node's reaper: `python -m podnode.exec.reaper NODE_PID [CGROUP_DIR...]`, one per node (sandbox.py).

It waits until the node is gone: a pidfd of the node becomes readable, or its stdin (a pipe only the node
holds) reaches EOF, or the parent-death signal arrives. A SIGKILLed node can clean nothing up, so then the
reaper kills every process in the node's cgroup directories (every cell below them) until they are empty and
removes them; without cgroups, every session the node told it of on stdin (`+PGID` / `-PGID` lines) and the
descendants of their leaders. Then it exits. A node that stops normally closes the pipe: the same cleanup
finds nothing left to kill and removes the directories.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
CLEANUP_S = 10.0


def _stats() -> dict[int, list[str]]:
    """Every process's /proc/PID/stat fields after the command name: state, ppid, pgrp, session, ..."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = text[text.rindex(")") + 2:].split()   # the name may hold spaces and parentheses
    return out


def session_members(sids: set[int]) -> set[int]:
    """Processes in these sessions or groups, and every descendant of their leaders."""
    stats = _stats()
    found = {pid for pid, f in stats.items() if int(f[2]) in sids or int(f[3]) in sids}
    kids: dict[int, list[int]] = {}
    for pid, f in stats.items():
        kids.setdefault(int(f[1]), []).append(pid)
    todo = list(found | sids)
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cells(node_dirs: list[Path]) -> list[Path]:
    out = []
    for d in node_dirs:
        with contextlib.suppress(OSError):
            out += [c for c in d.iterdir() if c.is_dir()]
    return out


def _procs(d: Path) -> list[int]:
    try:
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def cleanup(node_dirs: list[Path], sessions: set[int]) -> None:
    deadline = time.monotonic() + CLEANUP_S
    while time.monotonic() < deadline:
        left = False
        for cell in _cells(node_dirs):
            with contextlib.suppress(OSError):
                if (cell / "cgroup.kill").exists():     # v2 on 5.14+: every process at once
                    (cell / "cgroup.kill").write_text("1")
            pids = _procs(cell)
            _kill(pids)
            if pids:
                left = True
            else:
                with contextlib.suppress(OSError):
                    cell.rmdir()
        if sessions:
            members = session_members(sessions)
            _kill(members)
            left = left or bool(members)
        if not left and not _cells(node_dirs):
            break
        time.sleep(0.05)
    for d in node_dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


def main(argv: list[str]) -> None:
    node_pid, node_dirs = int(argv[0]), [Path(a) for a in argv[1:]]
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C to the terminal is the node's to handle
    dead = []
    signal.signal(signal.SIGTERM, lambda *_: dead.append(True))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    try:
        pidfd = os.pidfd_open(node_pid)
    except (OSError, AttributeError):
        pidfd = None
    sessions: set[int] = set()
    stdin = sys.stdin.buffer.raw
    watch = [stdin] + ([pidfd] if pidfd is not None else [])
    pending = b""
    while not dead and os.getppid() == node_pid:
        try:
            ready, _, _ = select.select(watch, [], [], 1.0)
        except InterruptedError:
            continue
        if pidfd is not None and pidfd in ready:
            break
        if stdin in ready:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line[:1] == b"+":
                    sessions.add(int(line[1:]))
                elif line[:1] == b"-":
                    sessions.discard(int(line[1:]))
    cleanup(node_dirs, sessions)


if __name__ == "__main__":
    main(sys.argv[1:])
