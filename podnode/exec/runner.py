"""Running one execution of an activity's ``main.sh``.

The process runs in its own process group so that it and every child it
starts can be signalled together.  stdout and stderr are read concurrently
into memory, capped at a byte limit per stream; anything beyond the cap is
drained and discarded so the process never blocks on a full pipe.  Memory,
not files: the cap bounds it (2 x cap x slots per node), the result goes into
the replicated state anyway, and files cost a directory, four opens and three
deletions per execution on the hot path.

The process is spawned with subprocess.Popen (vfork on Linux) and watched on the event loop directly: a
reader on each pipe and on a pidfd for the exit. asyncio's subprocess layer (a transport, two pipe
transports and protocols, stream readers and two reader tasks per process) took about 0.1 ms more CPU per
execution on the benchmark, a twentieth of everything the three nodes spend on one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .sandbox import Cell, Limits, Sandbox, plain

CHUNK_BYTES = 64 * 1024
MAIN_SCRIPT_NAME = "main.sh"
_STREAMS = ("stdout", "stderr")


@dataclass
class ExecutionResult:
    """Outcome of one execution attempt."""

    exit_code: int | None  # None when it could not start; -N when killed by signal N
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    terminated: bool  # terminate() was called
    error: str | None  # e.g. "could not start main.sh: <reason>"


class ExecutionRun:
    """One run of ``main.sh "$input"`` inside an activity directory."""

    def __init__(
        self,
        *,
        execution_id: int,
        attempt: int,
        activity: str,
        activity_dir: Path,
        input: str,  # noqa: A002 - name fixed by the API
        output_cap_bytes: int,
        kill_grace_s: float,
        extra_env: dict[str, str] | None = None,
        sandbox: Sandbox | None = None,
        limits: Limits | None = None,  # this activity's own; the sandbox's defaults fill what is not set
    ) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.activity = activity
        self.activity_dir = Path(activity_dir).absolute()
        self.input = input
        self.output_cap_bytes = output_cap_bytes
        self.kill_grace_s = kill_grace_s
        self.extra_env = dict(extra_env or {})
        self.sandbox = sandbox or plain()
        self.limits = (limits or Limits()).over(self.sandbox.defaults)
        self._cell: Cell | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._proc: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exited: asyncio.Future[int] | None = None     # the exit code, once main.sh has exited
        self._eof: asyncio.Future[None] | None = None       # both pipes closed
        self._pipes: dict[int, tuple[str, object]] = {}     # open pipe fd -> (stream name, file object)
        self._group_gone = False
        self._truncated = {name: False for name in _STREAMS}
        self._buffers = {name: bytearray() for name in _STREAMS}
        self._started = False
        self._terminated = False
        self._error: str | None = None
        self._finish_task: asyncio.Task[ExecutionResult] | None = None
        self._output_waiters: list[asyncio.Future[None]] = []   # followers of the output (wait_output)

    # ----------------------------------------------------------- properties

    @property
    def pid(self) -> int | None:
        """Process id of main.sh (also its process group id), if started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the main process has not exited."""
        return self._exited is not None and not self._exited.done()

    # -------------------------------------------------------------- control

    async def start(self) -> None:
        """Spawn main.sh and start reading its output.

        Never raises for a spawn failure: the error is
        recorded and returned by ``wait()`` with ``exit_code=None``.
        """
        if self._started:
            raise RuntimeError("execution already started")
        self._started = True
        name = f"exec-{self.execution_id}-{self.attempt}"
        try:
            command, env = self._command(), self._env()
            armed = self.sandbox.armed   # spawns armed ahead (exec/armed.py): their cell joined already
            launched = armed.launch(name, self.limits, command, self.activity_dir, env) if armed else None
            if launched is not None:
                self._cell, self._proc = launched
            else:
                self._cell = self.sandbox.cell(name, self.limits)
                self._proc = subprocess.Popen(
                    self._cell.argv(command),
                    cwd=self.activity_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
        except OSError as exc:
            where = exc.filename or self.activity_dir / MAIN_SCRIPT_NAME
            self._error = f"could not start main.sh: {exc.strerror or exc} ({where})"
            if self._cell is not None:
                self._cell.close()
            return
        self._cell.started(self._proc.pid)
        loop = self._loop = asyncio.get_running_loop()
        if self.limits.timeout_s:
            self._timer = loop.call_later(self.limits.timeout_s, self._time_out)
        self._exited, self._eof = loop.create_future(), loop.create_future()
        for name, pipe in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._pipes[fd] = (name, pipe)
            loop.add_reader(fd, self._on_readable, fd)
        self._watch_exit()

    async def wait(self) -> ExecutionResult:
        """Wait for the process and its output readers; return the result.

        Idempotent and safe to call concurrently.  Raises RuntimeError if
        ``start()`` was never called.
        """
        if not self._started:
            raise RuntimeError("execution not started")
        if self._finish_task is None:
            self._finish_task = asyncio.create_task(self._finish())
        return await asyncio.shield(self._finish_task)

    async def terminate(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period.

        Returns once the execution has fully finished.  No error if the
        process already exited or never started.
        """
        self._terminated = True
        if self._proc is None:
            return
        if self.running:
            self._signal_group(signal.SIGTERM, thorough=True)
            await asyncio.wait({self._exited}, timeout=self.kill_grace_s)
        # Whatever is left in the group (main process or children) goes now.
        self._signal_group(signal.SIGKILL, thorough=True)
        await self.wait()

    def read_output(self) -> tuple[str, str]:
        """Output so far as ``(stdout, stderr)``; '' for output not yet written."""
        out, err = (self._buffers[name].decode("utf-8", errors="replace") for name in _STREAMS)
        return out, err

    def output_bytes(self, stdout_at: int, stderr_at: int) -> tuple[bytes, bytes, bool]:
        """The bytes of each stream from these offsets (no copy of what comes before), and whether both pipes
        have closed (nothing more will come)."""
        out, err = (bytes(memoryview(self._buffers[name])[at:]) for name, at in zip(_STREAMS, (stdout_at, stderr_at)))
        return out, err, self._output_ended()

    async def wait_output(self, stdout_at: int, stderr_at: int, timeout_s: float) -> None:
        """Return once either stream holds more than its offset, the output has ended, or after timeout_s."""
        if (len(self._buffers["stdout"]) > stdout_at or len(self._buffers["stderr"]) > stderr_at
                or self._output_ended() or timeout_s <= 0):
            return
        fut = asyncio.get_running_loop().create_future()
        self._output_waiters.append(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout_s)
        finally:
            if fut in self._output_waiters:
                self._output_waiters.remove(fut)

    def _output_ended(self) -> bool:
        return not self._started or self._eof is None or self._eof.done()

    def _wake_output(self) -> None:
        waiters, self._output_waiters = self._output_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -------------------------------------------------------------- helpers

    def _command(self) -> list[str]:
        """argv for main.sh: run directly if it has a shebang, else via bash. The directory belongs to the
        run-as user: main.sh is opened without following a symlink and without blocking on a FIFO, and must be
        a regular file."""
        main = self.activity_dir / MAIN_SCRIPT_NAME
        fd = os.open(main, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{main} is not a regular file")
            has_shebang = os.read(fd, 2) == b"#!"
        finally:
            os.close(fd)
        if has_shebang:
            return ["./" + MAIN_SCRIPT_NAME, self.input]
        return ["bash", MAIN_SCRIPT_NAME, self.input]

    def _env(self) -> dict[str, str]:
        """Environment for main.sh: a clean one (see sandbox.build_env), never the node's."""
        env = self.sandbox.env(self.activity_dir, {
            "POD_EXECUTION_ID": str(self.execution_id),
            "POD_ACTIVITY": self.activity,
            "POD_ATTEMPT": str(self.attempt),
        })
        env.update(self.extra_env)
        return env

    def _time_out(self) -> None:
        """The timeout: every process of the execution goes at once; it ends in error, saying so."""
        self._timer = None
        if self._error is None:
            self._error = f"timed out after {self.limits.timeout_s:g} s"
        self._signal_group(signal.SIGKILL, thorough=True)

    def _on_readable(self, fd: int) -> None:
        """Copy what the pipe holds into memory up to the cap; drain the rest. EOF closes the pipe."""
        try:
            chunk = os.read(fd, CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe(fd)
            return
        name = self._pipes[fd][0]
        buf = self._buffers[name]
        room = self.output_cap_bytes - len(buf)
        if len(chunk) <= room:
            buf += chunk
        else:
            buf += chunk[:max(room, 0)]
            self._truncated[name] = True
        if self._output_waiters and room > 0:
            self._wake_output()

    def _close_pipe(self, fd: int) -> None:
        _, pipe = self._pipes.pop(fd)
        self._loop.remove_reader(fd)
        pipe.close()
        if not self._pipes and not self._eof.done():
            self._eof.set_result(None)
            self._wake_output()

    def _watch_exit(self) -> None:
        """Reap main.sh when its pidfd says it exited (polling where there is no pidfd)."""
        try:
            pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):
            self._poll_exit()
            return

        def on_exit() -> None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            if not self._reap():  # not waitable yet (never seen, but cheap to cover): poll instead
                self._poll_exit()
        self._loop.add_reader(pidfd, on_exit)

    def _poll_exit(self) -> None:
        if not self._reap():
            self._loop.call_later(0.05, self._poll_exit)

    def _reap(self) -> bool:
        try:
            pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; its status is lost
            pid, status = self._proc.pid, 255 << 8
        if pid == 0:
            return False
        code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = code  # so Popen never waits for it again
        if not self._exited.done():
            self._exited.set_result(code)
        return True

    async def _finish(self) -> ExecutionResult:
        """Wait for exit, bound the readers, clean up the group, build result."""
        if self._proc is not None:
            await self._exited
            await self._close_pipes()
            if self._timer is not None:
                self._timer.cancel()
            # Background children that closed their pipes must not outlive us.
            self._signal_group(signal.SIGKILL, exited=True)
            self._group_gone = True  # its id may be reused from now on: never signal it again
            if self._error is None and self._proc.returncode != 0 and self._cell.oom_killed():
                self._error = f"killed: over its memory limit of {self.limits.memory_mb} MB"
            await self._close_cell()
        stdout, stderr = self.read_output()
        return ExecutionResult(
            exit_code=self._proc.returncode if self._proc is not None else None,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=self._truncated["stdout"],
            stderr_truncated=self._truncated["stderr"],
            terminated=self._terminated,
            error=self._error,
        )

    async def _close_pipes(self) -> None:
        """Give the pipes kill_grace_s to reach EOF (a child may hold them); then SIGKILL the group, read
        what is left for a second, and close them."""
        if self._eof.done():
            return
        await asyncio.wait({self._eof}, timeout=self.kill_grace_s)
        if not self._eof.done():
            self._signal_group(signal.SIGKILL)
            await asyncio.wait({self._eof}, timeout=1.0)
        for fd in list(self._pipes):
            self._close_pipe(fd)

    async def _close_cell(self) -> None:
        """Remove the execution's cgroup once every process in it is gone (killed just before)."""
        for _ in range(100):
            if self._cell.close():
                return
            await asyncio.sleep(0.02)

    def _signal_group(self, sig: signal.Signals, *, thorough: bool = False, exited: bool = False) -> None:
        """Send ``sig`` to every process of the execution (its cgroup, its session), ignoring vanished ones.
        `exited`: main.sh has exited and been reaped (see Cell.signal)."""
        if self._proc is None or self._group_gone:
            return
        self._cell.signal(sig, thorough=thorough, exited=exited)
