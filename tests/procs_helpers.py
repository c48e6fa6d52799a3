"""Ports and processes of the tests that start `pod up` (or pod-bootstrap) as a user would, on podnode.local.procs.

Such a test cannot know every pid it causes: pod up launches nodes for a policy and the nodes start executions
in sessions of their own. So it picks a free range of ports for `--port`, and at the end it finds what is left
by the test's data dir (a node's command line names it, an execution runs in it) and kills it until none is left.
"""

from __future__ import annotations

import random
import signal
import subprocess
from pathlib import Path

from podnode.local.procs import alive, cmdline, cwd, kill_until_gone, pids, port_free, signal_group, within

BASE_PORTS = range(20000, 50000)   # below RAFT_OFFSET + 65535 and clear of the kernel's usual ephemeral ports
RAFT_OFFSET = 1000                  # `pod up --port P`: node i serves HTTP on P+i and Raft on P+1000+i


def free_base(nodes: int) -> int:
    """A base port P with P..P+nodes (HTTP, and one to spare) and P+1000.. (Raft) all free, as `pod up --port P`
    needs."""
    for _ in range(200):
        base = random.choice(BASE_PORTS)
        if all(port_free(base + i) and port_free(base + RAFT_OFFSET + i) for i in range(nodes + 1)):
            return base
    raise AssertionError("no free port range found")


def processes_in(data_dir: Path, *, marker: str | None = None) -> list[int]:
    """Every live process whose working directory or command line is in `data_dir`, or (with `marker`, a
    `NAME=value` the test put in the environment it started things with) whose environment holds `marker`."""
    root = data_dir.resolve()
    found = []
    for pid in pids():
        if not alive(pid):
            continue
        if within(cwd(pid), root) or any(str(root) in arg for arg in cmdline(pid)) or \
                (marker is not None and _has_in_environ(pid, marker)):
            found.append(pid)
    return found


def _has_in_environ(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def stop_pod_up(proc: subprocess.Popen | None, data_dir: Path, *, ask: int | None = None, ask_s: float = 30.0,
                marker: str | None = None) -> None:
    """Stop a `pod up` a test started and everything of its cluster, pass or fail: signal `ask` to it first
    (SIGINT: Ctrl-C, as its user would) and wait up to `ask_s`, then SIGKILL it and its group, and every process
    in `data_dir` (see processes_in) until none is left. Fails the test if something cannot be killed."""
    if proc is not None and proc.poll() is None and ask is not None:
        proc.send_signal(ask)
        try:
            proc.wait(timeout=ask_s)
        except subprocess.TimeoutExpired:
            pass
    if proc is not None and proc.poll() is None:
        signal_group(proc.pid, signal.SIGKILL)   # pod up started in a session of its own leads its group
        proc.kill()
        proc.wait(timeout=10)
    left = kill_until_gone(lambda: processes_in(data_dir, marker=marker), timeout_s=15.0)
    assert not left, f"could not kill {[(pid, cmdline(pid)) for pid in left]}"

