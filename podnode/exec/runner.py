"""Running one execution of an activity's ``main.sh``.

The process runs in its own process group so that it and every child it
starts can be signalled together.  stdout and stderr are read concurrently
into memory, capped at a byte limit per stream; anything beyond the cap is
drained and discarded so the process never blocks on a full pipe.  Memory,
not files: the cap bounds it (2 x cap x slots per node), the result goes into
the replicated state anyway, and files cost a directory, four opens and three
deletions per execution on the hot path.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

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
    ) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.activity = activity
        self.activity_dir = Path(activity_dir).absolute()
        self.input = input
        self.output_cap_bytes = output_cap_bytes
        self.kill_grace_s = kill_grace_s
        self.extra_env = dict(extra_env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._truncated = {name: False for name in _STREAMS}
        self._buffers = {name: bytearray() for name in _STREAMS}
        self._started = False
        self._terminated = False
        self._error: str | None = None
        self._finish_task: asyncio.Task[ExecutionResult] | None = None

    # ----------------------------------------------------------- properties

    @property
    def pid(self) -> int | None:
        """Process id of main.sh (also its process group id), if started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the main process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    # -------------------------------------------------------------- control

    async def start(self) -> None:
        """Spawn main.sh and start reading its output.

        Never raises for a spawn failure: the error is
        recorded and returned by ``wait()`` with ``exit_code=None``.
        """
        if self._started:
            raise RuntimeError("execution already started")
        self._started = True
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(),
                cwd=self.activity_dir,
                env=self._env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            where = exc.filename or self.activity_dir / MAIN_SCRIPT_NAME
            self._error = f"could not start main.sh: {exc.strerror or exc} ({where})"
            return
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stream(self._proc.stdout, "stdout")),
            asyncio.create_task(self._read_stream(self._proc.stderr, "stderr")),
        ]

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
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._wait_exit(), self.kill_grace_s)
            except asyncio.TimeoutError:
                pass
        # Whatever is left in the group (main process or children) goes now.
        self._signal_group(signal.SIGKILL)
        await self.wait()

    def read_output(self) -> tuple[str, str]:
        """Output so far as ``(stdout, stderr)``; '' for output not yet written."""
        out, err = (self._buffers[name].decode("utf-8", errors="replace") for name in _STREAMS)
        return out, err

    # -------------------------------------------------------------- helpers

    def _command(self) -> list[str]:
        """argv for main.sh: run directly if it has a shebang, else via bash."""
        main = self.activity_dir / MAIN_SCRIPT_NAME
        with main.open("rb") as fh:
            has_shebang = fh.read(2) == b"#!"
        if has_shebang:
            return [str(main), self.input]
        return ["bash", MAIN_SCRIPT_NAME, self.input]

    def _env(self) -> dict[str, str]:
        """Environment for main.sh."""
        env = dict(os.environ)
        env.update(
            POD_EXECUTION_ID=str(self.execution_id),
            POD_ACTIVITY=self.activity,
            POD_ATTEMPT=str(self.attempt),
        )
        env.update(self.extra_env)
        return env

    async def _read_stream(self, stream: asyncio.StreamReader, name: str) -> None:
        """Copy ``stream`` into memory up to the cap; drain the rest."""
        buf = self._buffers[name]
        while chunk := await stream.read(CHUNK_BYTES):
            keep = chunk[: max(self.output_cap_bytes - len(buf), 0)]
            buf += keep
            if len(keep) < len(chunk):
                self._truncated[name] = True

    async def _finish(self) -> ExecutionResult:
        """Wait for exit, bound the readers, clean up the group, build result."""
        if self._proc is not None:
            await self._wait_exit()
            await self._stop_readers()
            # Background children that closed their pipes must not outlive us.
            self._signal_group(signal.SIGKILL)
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

    async def _wait_exit(self) -> int:
        """Wait until the main process has exited (not for its pipes)."""
        assert self._proc is not None
        waiter = asyncio.ensure_future(self._proc.wait())
        try:
            while self._proc.returncode is None:
                await asyncio.wait({waiter}, timeout=0.1)
        finally:
            waiter.cancel()
        return self._proc.returncode

    async def _stop_readers(self) -> None:
        """Give readers kill_grace_s to hit EOF; then SIGKILL the group and stop them."""
        _, pending = await asyncio.wait(self._readers, timeout=self.kill_grace_s)
        if pending:
            self._signal_group(signal.SIGKILL)
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def _signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to main.sh's process group, ignoring a vanished group."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
