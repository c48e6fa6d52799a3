"""Local processes: free ports, process groups, stopping with a grace period, and every descendant.

`pod up`, LocalCluster (tests, benchmarks) and the local provider start podnode processes on this machine,
each in a session of its own so that a signal reaches the node and nothing else. Each execution's main.sh
also runs in a session of its own, so a node's group does not hold its executions: whoever must stop
*everything* walks the process tree in /proc instead (see `descendants`), and a `pod up` that is a child
subreaper (`become_subreaper`) keeps every such process in its tree even after its parent died.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36   # linux/prctl.h


# ---------------------------------------------------------------------------------------------------- ports

def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all sockets stay bound until every port is picked (free_port twice in a
    row can return the same port)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can this port be bound now? SO_REUSEADDR as the nodes use it: a port in TIME_WAIT counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------------- /proc

def cmdline(pid: int) -> list[str]:
    """A process's argv, [] when it is gone (or a zombie, whose cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids() -> list[int]:
    """Every process id this user can see, but this process's."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid()]


def cwd(pid: int) -> Path | None:
    """A process's working directory, None when it is gone or not ours to read."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def within(path: Path | None, root: Path) -> bool:
    return path is not None and (path == root or root in path.parents)


def working_in(root: Path, *, part: str | None = None) -> list[int]:
    """Live processes whose working directory is in `root` (and, if `part` is given, has a directory of that
    name below `root`): an execution runs in its activity's directory, in a session of its own."""
    root = root.resolve()
    found = []
    for pid in pids():
        where = cwd(pid)
        if within(where, root) and (part is None or part in where.relative_to(root).parts) and alive(pid):
            found.append(pid)
    return found


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()   # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    """Running (or stopped), neither gone nor a zombie waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def is_node_process(pid: int, node_id: str | None = None) -> bool:
    """Whether `pid` is a live podnode process (of `node_id`, if given): not a zombie, not a reused pid."""
    args = cmdline(pid)
    if not alive(pid) or not any(a == "podnode" or a.endswith("/podnode") for a in args):
        return False
    return node_id is None or node_id in args


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process this user can see."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                kids.setdefault(stat[0], []).append(int(entry))
    return kids


def children(pid: int | None = None) -> list[int]:
    """The processes whose parent is `pid` (default: this one)."""
    return children_map().get(os.getpid() if pid is None else pid, [])


def descendants(pid: int | None = None) -> list[int]:
    """Every process below `pid` (default: this one) in the process tree, parents before children."""
    kids, out, todo = children_map(), [], [os.getpid() if pid is None else pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def become_subreaper() -> bool:
    """Make this process the child subreaper of its tree (Linux): a descendant whose parent dies, even one
    that called setsid or double-forked, is re-parented here instead of to init, so `descendants` still
    finds it. The caller must then reap such orphans (`reap_orphans`). False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: Iterable[int] = ()) -> list[tuple[int, int]]:
    """Reap this process's exited children except `keep` (children a Popen waits for: reaping them here would
    rob Popen of their exit code). Returns (pid, exit code) of each one reaped."""
    keep, reaped = set(keep), []
    for child in children():
        if child in keep:
            continue
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            continue
        if pid:
            reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped


# ---------------------------------------------------------------------------------------------------- signals

def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group; a gone group is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_pid(pid: int, sig: int) -> None:
    """Signal one process; a gone one is fine."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(pgid: int) -> None:
    """SIGCONT then SIGTERM to a group: a stopped (SIGSTOPped) process would not act on SIGTERM."""
    signal_group(pgid, signal.SIGCONT)
    signal_group(pgid, signal.SIGTERM)


def wait_gone(pids: Iterable[int], timeout_s: float, *, poll: Callable[[], object] | None = None,
              interval_s: float = 0.05) -> list[int]:
    """Poll until none of `pids` is alive or `timeout_s` passed; `poll` runs each round (to reap). Returns
    the pids still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while True:
        if poll is not None:
            poll()
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(interval_s)


def stop_popen(proc: subprocess.Popen, grace_s: float) -> bool:
    """SIGTERM the group led by `proc` (a child started with start_new_session), wait up to `grace_s`, then
    SIGKILL the group and reap (blocking). True if it had to be killed."""
    if proc.poll() is not None:
        return False
    terminate_group(proc.pid)
    try:
        proc.wait(timeout=grace_s)
        return False
    except subprocess.TimeoutExpired:
        pass
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return True


def stop_groups(pgids: Iterable[int], grace_s: float, *, poll: Callable[[], object] | None = None) -> list[int]:
    """SIGTERM each group (leaders that may not be our children), wait up to `grace_s` for the leaders to go,
    SIGKILL the groups of those still there. Returns the leaders that had to be killed."""
    pgids = list(pgids)
    for pgid in pgids:
        terminate_group(pgid)
    killed = wait_gone(pgids, grace_s, poll=poll)
    for pgid in killed:
        signal_group(pgid, signal.SIGKILL)
    wait_gone(killed, 5.0, poll=poll)
    return killed


def stop_foreign_node(pid: int, node_id: str, grace_s: float) -> bool:
    """Stop a podnode process that is not our child (launched by an earlier leader on this machine), if `pid`
    still is node `node_id`; a reused pid is left alone. True if it was that node."""
    if not is_node_process(pid, node_id):
        return False
    stop_groups([pid], grace_s)
    return True


def kill_tree(root: int | None = None, *, keep: Iterable[int] = (), rounds: int = 20) -> int:
    """SIGKILL every descendant of `root` (default: this process) and its group, over and over until none is
    left (a dying parent's children re-parent and must be found again). Returns how many were signalled."""
    killed: set[int] = set()
    for _ in range(rounds):
        reap_orphans(keep)
        live = [p for p in descendants(root) if alive(p)]
        if not live:
            break
        for pid in live:
            signal_pid(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.05)
    return len(killed)


def kill_until_gone(find: Callable[[], Iterable[int]], timeout_s: float = 10.0) -> list[int]:
    """SIGKILL whatever `find` returns, again and again, until it returns nothing or `timeout_s` passed (for
    clean-ups that must leave nothing behind). Returns what was still found at the end."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = list(find())
        if not left or time.monotonic() >= deadline:
            return left
        for pid in left:
            signal_pid(pid, signal.SIGKILL)
        time.sleep(0.1)
