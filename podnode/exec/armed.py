"""Spawns armed ahead of executions: the slow part of starting one done before it is asked for.

Each execution runs in a cell of its own (sandbox.py), which pod-spawn joins before exec'ing main.sh. On cgroup v1
the first move of a process into a cgroup after a pause waits for an RCU grace period: 8-11 ms on an idle machine
against 0.14 ms back to back (`python -m podnode.bench.cgroup_attach`), most of an idle execution's time. So the
node keeps one pod-spawn per slot *armed* (`pod-spawn -a`, spawn.c): started in a session of its own with a clean
environment, it has acquired a cell with the node's default limits and joined it, and waits, still root, on a unix
socket only the node holds the other end of. An execution takes one (`launch`): the node sets the cell's limits to
the activity's (a write or two where they differ), makes the stdout and stderr pipes and sends them with the job
(directory, environment, rlimits and user, argv); the helper dups them, changes directory, sets the rlimits, drops
to the run-as user and execs main.sh, as a fresh pod-spawn would. The runner adopts the process as it adopts a
fresh spawn. A used cell is released as usual (never handed to another armed spawn while in use); a new spawn is
armed in the background after each use.

What holds as without arming: the socket is close-on-exec in the helper and closed before the exec, and the
node's end is close-on-exec too, so no execution can reach an armed spawn; they are root until their job, so no
execution (the run-as user) can signal or trace them; the environment is the job's only; a node that dies takes
them along (PR_SET_PDEATHSIG, cleared before the exec; the reaper kills whatever is in the node's cgroups, or, without
cgroups, the sessions it was told of); a helper that died or failed is never used, the execution is spawned fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .sandbox import Cell, Limits, Sandbox, spawn_options

log = logging.getLogger(__name__)

ARM_ENV = "POD_SANDBOX_ARM"   # "off": spawn every execution fresh (for comparisons)
MAX_ARMED = 16                # spawns kept armed per node at most, whatever its slots
MAX_FAILURES = 3              # arming that fails this many times in a row stops (the node spawns fresh)
SEND_TIMEOUT_S = 2.0          # a job is handed to a process waiting for it: it never takes this long


@dataclass
class Armed:
    """One pod-spawn waiting for its execution."""
    proc: subprocess.Popen
    sock: socket.socket
    cgroup: str | None    # its cell's name in the node's cgroups (None: no cgroups)
    ready: bool = False


def job_bytes(cwd: Path, env: dict[str, str], options: list[str], command: list[str]) -> bytes | None:
    """The job as pod-spawn -a reads it: CWD, the environment entries, an empty string, the options, --, the
    command; each NUL-terminated. None when a string holds a NUL (Popen refuses those: the fresh spawn says so)."""
    strings = [str(cwd), *(f"{k}={v}" for k, v in env.items()), "", *options, "--", *command]
    data = [os.fsencode(x) for x in strings]
    if any(b"\0" in x for x in data) or any("=" in k or not k for k in env):
        return None
    return b"\0".join(data) + b"\0"


class ArmedPool:
    """The node's armed spawns, `count` of them kept ready (refilled after each use)."""

    def __init__(self, sandbox: Sandbox, count: int, loop: asyncio.AbstractEventLoop):
        self.sandbox = sandbox
        self.count = count
        self.loop = loop
        self.armed: list[Armed] = []      # arming or ready
        self.failures = 0
        self.closed = False
        self.used = 0                     # executions launched armed (for the bench and the tests)

    @classmethod
    def start(cls, sandbox: Sandbox, count: int) -> ArmedPool | None:
        """Arm `count` spawns for the sandbox (in the running loop's thread: the parent-death signal follows the
        thread that spawned them); None where arming brings nothing or is off: no pod-spawn, or $POD_SANDBOX_ARM."""
        if sandbox.helper is None or count <= 0 or os.environ.get(ARM_ENV, "on") == "off":
            return None
        if sandbox.armed is not None:
            sandbox.armed.close()
        pool = sandbox.armed = cls(sandbox, min(count, MAX_ARMED), asyncio.get_running_loop())
        pool.refill()
        return pool

    # ---- arming -------------------------------------------------------------------------------------
    def refill(self) -> None:
        while not self.closed and len(self.armed) < self.count and self.failures < MAX_FAILURES:
            if not self._arm_one():
                return

    def _arm_one(self) -> bool:
        sb = self.sandbox
        cgroup, procs = None, []
        try:
            if sb.cgroups is not None:
                cgroup, _ = sb.cgroups.acquire(sb.defaults)
                procs = sb.cgroups.cell_procs(cgroup)
        except OSError as exc:
            self._failed(f"cannot make a cell: {exc}")
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sb.helper, "-a", str(theirs.fileno()), "-P", str(os.getpid())]
            for f in procs:
                argv += ["-c", f]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), cwd="/",
                                    env={}, start_new_session=True)
        except OSError as exc:
            ours.close()
            self._release(cgroup)
            self._failed(f"cannot start {sb.helper}: {exc}")
            return False
        finally:
            theirs.close()
        armed = Armed(proc=proc, sock=ours, cgroup=cgroup)
        sb.reaper_note("+", proc.pid)   # without cgroups, the reaper kills its session if the node dies
        self.armed.append(armed)
        ours.setblocking(False)
        return True

    def _is_ready(self, armed: Armed) -> bool | None:
        """Has it said "R" (True), not yet (False), or failed (None: discarded, why logged)? Looked at when one is
        needed, not watched: a wake-up of the loop less per execution."""
        if armed.ready:
            return True
        try:
            said = armed.sock.recv(4096)
        except BlockingIOError:
            return False
        except OSError as exc:
            said = str(exc).encode()
        if said == b"R":
            armed.ready = True
            self.failures = 0
            return True
        self._discard(armed)
        self._failed(said.decode(errors="replace").strip() or f"exited {armed.proc.returncode}")
        return None

    def poll(self) -> int:
        """How many are ready now (failed ones discarded and re-armed)."""
        ready = sum(1 for a in list(self.armed) if self._is_ready(a))
        if len(self.armed) < self.count:
            self.refill()
        return ready

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            log.warning("arming pod-spawn failed %d times (%s): executions are spawned fresh", self.failures, why)
        else:
            log.info("arming pod-spawn failed: %s", why)

    def _discard(self, armed: Armed) -> None:
        """Disarm: close its socket (it exits at the EOF), kill it to be sure, reap it, release its cell."""
        with contextlib.suppress(ValueError):
            self.armed.remove(armed)
        armed.sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(armed.proc.pid, signal.SIGKILL)
        armed.proc.wait()
        self.sandbox.reaper_note("-", armed.proc.pid)
        self._release(armed.cgroup)

    def _release(self, cgroup: str | None) -> None:
        cg = self.sandbox.cgroups
        if cgroup is not None and cg is not None:
            dirs = [d / cgroup for d in cg.node_dirs]
            for _ in range(100):   # the killed helper is reaped: its cell is empty at once, or nearly
                if cg.release(cgroup, dirs):
                    return
                with contextlib.suppress(OSError):
                    os.sched_yield()

    # ---- using one --------------------------------------------------------------------------------------
    def take(self) -> Armed | None:
        """A ready armed spawn (alive), or None; a new one is armed in the background."""
        for armed in list(self.armed):
            if not self._is_ready(armed):
                continue
            self.armed.remove(armed)
            self.loop.call_soon(self.refill)
            if armed.proc.poll() is None:
                return armed
            self._discard(armed)
        if len(self.armed) < self.count:   # failed ones were discarded
            self.loop.call_soon(self.refill)
        return None

    def launch(self, name: str, limits: Limits, command: list[str], cwd: Path,
               env: dict[str, str]) -> tuple[Cell, subprocess.Popen] | None:
        """Run `command` through an armed spawn: its cell with `limits`, a Popen of it whose stdout and stderr are
        the new pipes; None when none is ready or the hand-over failed (nothing ran: spawn fresh)."""
        sb = self.sandbox
        options = spawn_options(rlimits=None if sb.cgroups is not None else limits, run_as=sb.run_as,
                                as_root=os.geteuid() == 0)
        job = job_bytes(cwd, env, options, command)
        if job is None or self.closed:
            return None
        armed = self.take()
        if armed is None:
            return None
        try:
            cell = sb.cell(name, limits, cgroup=armed.cgroup)
        except OSError as exc:
            log.warning("could not set the limits of an armed cell: %s", exc)
            self._discard(armed)
            return None
        pipes = [os.pipe(), os.pipe()]
        try:
            armed.sock.settimeout(SEND_TIMEOUT_S)
            sent = socket.send_fds(armed.sock, [job], [pipes[0][1], pipes[1][1]])
            if sent < len(job):
                armed.sock.sendall(job[sent:])
            # The job ends at EOF: shutdown, not close alone, which a copy of the socket in a child the node
            # forked meanwhile (pysyncobj's snapshot writer) would hold back.
            armed.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.warning("could not hand a job to an armed pod-spawn: %s", exc)
            for r, w in pipes:
                os.close(r)
                os.close(w)
            cell.dirs = []   # released by _discard, once the helper is gone
            self._discard(armed)
            return None
        finally:
            armed.sock.close()
        proc = armed.proc
        proc.stdout, proc.stderr = (os.fdopen(r, "rb", buffering=0) for r, _ in pipes)
        for _, w in pipes:
            os.close(w)
        self.used += 1
        return cell, proc

    def close(self) -> None:
        """At the node's stop: every armed spawn goes, its cell too."""
        self.closed = True
        for armed in list(self.armed):
            self._discard(armed)
