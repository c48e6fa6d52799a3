"""Following a running execution's output from byte offsets (ExecutionRun.wait_output and output_bytes), with
real processes: a waiter wakes when output comes, reads only what follows its offsets, and learns the end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from podnode.exec.output_slice import take

from .test_exec_runner import make_activity, make_run

DEADLINE_S = 10.0


async def test_a_follower_gets_each_piece_once_as_it_comes(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    adir = make_activity(tmp_path, f'echo one; echo oops >&2\nwhile [ ! -e {flag} ]; do sleep 0.02; done\necho two\n')
    run = make_run(tmp_path, adir)
    await run.start()
    try:
        out_at = err_at = 0
        got_out, got_err = "", ""
        deadline = time.monotonic() + DEADLINE_S
        while got_out != "one\n" or got_err != "oops\n":
            assert time.monotonic() < deadline, (got_out, got_err)
            await run.wait_output(out_at, err_at, 5.0)
            piece = take(*run.output_bytes(out_at, err_at)[:2], out_at, err_at, ended=False)
            got_out, got_err = got_out + piece.stdout, got_err + piece.stderr
            out_at, err_at = piece.stdoutAt, piece.stderrAt
        assert (out_at, err_at) == (4, 5)
        # Nothing new: the wait lasts its timeout and the output from the offsets is empty.
        began = time.monotonic()
        await run.wait_output(out_at, err_at, 0.3)
        assert time.monotonic() - began >= 0.25
        assert run.output_bytes(out_at, err_at) == (b"", b"", False)
        # New output wakes a waiter long before its timeout.
        waiter = asyncio.ensure_future(run.wait_output(out_at, err_at, 30.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        flag.touch()
        await asyncio.wait_for(waiter, DEADLINE_S)
        await asyncio.wait_for(run.wait(), DEADLINE_S)
        stdout, stderr, ended = run.output_bytes(out_at, err_at)
        assert (stdout, stderr, ended) == (b"two\n", b"", True)
        began = time.monotonic()
        await run.wait_output(out_at + 4, err_at, 30.0)   # ended: returns at once
        assert time.monotonic() - began < 1.0
        assert run._output_waiters == []                  # noqa: SLF001 - no waiter left behind
    finally:
        await run.terminate()
