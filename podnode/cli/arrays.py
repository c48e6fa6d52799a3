"""`pod run NAME --inputs FILE`: many inputs of one activity, submitted in arrays (newExecutions) and read in bulk
(getExecutionResults) as they end; results as JSON lines on stdout, or files in --out DIR."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .client import EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_USAGE, Api, CliError, retrying
from .output import exit_code_of, warn

MAX_ARRAY = 10_000     # the node's per-request maximum (api/array_actions.MAX_ARRAY)
CHUNK_BYTES = 8 * 1024 * 1024  # keep each array's JSON body well under the node's 16 MiB cap
POLL_WAIT_S = 20.0     # each bulk read waits up to this long, server side, for one of them to end
READ_INTERVAL_S = 0.25  # at most one bulk read per this long: each gathers what ended meanwhile
WINDOW = 2 * MAX_ARRAY  # submit the next array only while fewer than this many are not read: a long file does
                        # not fill the cluster's queue (and its waiting quota) all at once


def read_inputs(source: str) -> list[str]:
    """One input per line of the file (`-`: stdin); the line ends (\\n, \\r\\n) are not part of the input."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the inputs from {source}: {exc}", EXIT_USAGE) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def chunks(inputs: list[str]) -> list[list[str]]:
    """Arrays of at most MAX_ARRAY inputs and about CHUNK_BYTES each."""
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for value in inputs:
        cost = len(json.dumps(value)) + 2
        if current and (len(current) >= MAX_ARRAY or size + cost > CHUNK_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(value)
        size += cost
    if current:
        out.append(current)
    return out


class ArrayRun:
    """One `pod run --inputs`: what was submitted, what is pending, what ended."""

    def __init__(self, api: Api, name: str, out_dir: Path | None, deadline: float | None, *, total: int = 0,
                 progress: bool = False):
        self.api = api
        self.name = name
        self.out_dir = out_dir
        self.deadline = deadline
        self.pending: dict[int, int] = {}    # execution id -> index of its input
        self.statuses: Counter[str] = Counter()
        self.worst = 0
        self.total = total
        self.running = 0                     # of the pending ones, how many the last read saw in progress
        self.started = time.monotonic()
        self.bar = tqdm(total=total, unit="exec", file=sys.stderr, dynamic_ncols=True, leave=True,
                        desc=name, disable=not progress) if progress else None

    def submit(self, chunk: list[str], first_index: int, request_id: str) -> None:
        """Submit one array (the same requestId on every try: a retry never runs it twice). While a quota is
        full (429), read the results that ended, then try again."""
        while True:
            try:
                body = retrying(lambda: self.api.post_json(
                    "newExecutions", {"name": self.name, "inputs": chunk, "requestId": request_id}, timeout_s=120))
                break
            except CliError as err:
                if err.http_status != 429:
                    raise
                pause = err.retry_after_s or 5.0
                if self.deadline is not None and time.monotonic() + pause > self.deadline:
                    raise
                self.note(f"{err.message}\nwaiting {pause:g} s")
                started = time.monotonic()
                if self.pending:
                    self.collect(wait_s=pause)
                time.sleep(max(0.0, pause - (time.monotonic() - started)))
        for offset, exec_id in enumerate(body["executionIds"]):
            self.pending[exec_id] = first_index + offset

    def collect(self, wait_s: float) -> None:
        """Read the results of pending executions that ended (waiting up to wait_s for one), and write them."""
        ids = list(self.pending)[:MAX_ARRAY]
        body = retrying(lambda: self.api.post_json(
            "getExecutionResults", {"executionIds": ids, "wait": round(wait_s, 1)}, timeout_s=wait_s + 60))
        for ex in body.get("executions", []):
            index = self.pending.pop(ex["id"], None)
            if index is not None:
                self.write(ex, index)
        for exec_id in body.get("notFound", []):
            if self.pending.pop(exec_id, None) is not None:
                self.note(f"execution {exec_id}: its result is gone (read by another client, or it expired)")
                self.statuses["lost"] += 1
                self.worst = max(self.worst, 1)
                self.advance()
        self.running = sum(1 for p in body.get("pending", []) if p.get("status") == "in progress")
        self.show()

    def write(self, ex: dict[str, Any], index: int) -> None:
        self.statuses[ex.get("status", "?")] += 1
        if ex.get("status") != "finished":
            self.worst = max(self.worst, exit_code_of(ex) or 1)
        self.advance()
        record = {"index": index, **ex}
        if self.out_dir is None:
            line = json.dumps(record) + "\n"
            if self.bar is not None:   # stdout may be the bar's terminal too: clear the bar, write, draw it again
                tqdm.write(line, file=sys.stdout, end="")
            else:
                sys.stdout.write(line)
            sys.stdout.flush()
            return
        exec_id = ex["id"]
        (self.out_dir / f"{exec_id}.stdout").write_text(ex.get("stdout") or "")
        (self.out_dir / f"{exec_id}.stderr").write_text(ex.get("stderr") or "")
        meta = {k: v for k, v in record.items() if k not in ("stdout", "stderr")}
        (self.out_dir / f"{exec_id}.json").write_text(json.dumps(meta, indent=1) + "\n")

    def summary(self) -> str:
        done = ", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items()))
        left = f", {len(self.pending)} not ended" if self.pending else ""
        ended = sum(self.statuses.values())
        elapsed = time.monotonic() - self.started
        rate = f" ({ended / elapsed:.1f}/s)" if elapsed > 0 and ended else ""
        return (f"{ended + len(self.pending)} executions of {self.name}: {done or 'none'}{left}; "
                f"{elapsed:.1f} s{rate}")

    # ---- the progress bar (tqdm: its rate and ETA count the ended executions) ---------------------------
    def counts(self) -> dict[str, int]:
        """done (finished), failed (ended otherwise, or lost), running (in progress at the last read), waiting
        (the rest of the inputs: queued, or not submitted yet)."""
        done = self.statuses.get("finished", 0)
        failed = sum(self.statuses.values()) - done
        running = min(self.running, len(self.pending))
        return {"done": done, "running": running, "waiting": max(0, self.total - done - failed - running),
                "failed": failed}

    def advance(self) -> None:
        """One more ended (its status already counted)."""
        if self.bar is not None:
            if self.running and len(self.pending) < self.running:
                self.running = len(self.pending)
            self.show(refresh=False)
            self.bar.update(1)

    def show(self, refresh: bool = True) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in self.counts().items()), refresh=refresh)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        warn(text)
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.show()
            self.bar.close()


def _collect_paced(run: ArrayRun, deadline: float | None) -> bool:
    """One bulk read, then a pause so reads come at most every READ_INTERVAL_S; False at the deadline."""
    left = POLL_WAIT_S if deadline is None else deadline - time.monotonic()
    if left <= 0:
        return False
    began = time.monotonic()
    run.collect(wait_s=min(POLL_WAIT_S, left))
    if run.pending:
        time.sleep(max(0.0, READ_INTERVAL_S - (time.monotonic() - began)))
    return True


def cmd_run_inputs(args: argparse.Namespace, api: Api) -> int:
    """Exit 0 if every execution finished; else the worst (largest) of their exit codes as `pod run --wait` gives
    them (main.sh's code, 143 terminated, 1 error without a code or a result lost); 124 at --timeout, 130 on Ctrl-C."""
    if args.input is not None:
        raise CliError("give either an input or --inputs FILE, not both", EXIT_USAGE)
    inputs = read_inputs(args.inputs)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    run = ArrayRun(api, args.name, out_dir, deadline, total=len(inputs), progress=progress)
    try:
        code, message = _run_all(run, inputs, args.timeout)
    finally:
        run.close()     # the bar's last state stays on the terminal, the summary below it
    warn(message)
    return code


def _run_all(run: ArrayRun, inputs: list[str], timeout_s: float | None) -> tuple[int, str]:
    """Submit in arrays and read the results as they end: (exit code, the summary to print)."""
    deadline, run_id = run.deadline, uuid.uuid4().hex
    try:
        first = 0
        for k, chunk in enumerate(chunks(inputs)):
            while run.pending and len(run.pending) + len(chunk) > WINDOW:
                if not _collect_paced(run, deadline):
                    return EXIT_TIMEOUT, (f"gave up after {timeout_s:g} s; {run.summary()}; {len(inputs) - first} "
                                          "inputs were not submitted")
            run.submit(chunk, first, f"{run_id}-{k}")
            first += len(chunk)
        while run.pending:
            if not _collect_paced(run, deadline):
                return EXIT_TIMEOUT, f"gave up after {timeout_s:g} s; {run.summary()}"
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, f"interrupted; {run.summary()}; the executions not ended go on"
    return run.worst, run.summary()
