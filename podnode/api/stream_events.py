"""The events of an execution's output stream (api/stream.py) and their ids. Pure: no I/O.

An event's id is where a reader is after it: `ATTEMPT:STDOUT:STDERR`, the attempt and the bytes of its
stdout and stderr already sent; the last event's id ends in `:end`. A client that reconnects with the id it
saw last (Last-Event-ID) gets what follows it, nothing twice and nothing missed.

Events (`data` is JSON):
- `attempt`  {"attempt", "workerId", "reason", "message"}: an attempt starts on a node, the first one or one
             after its node was lost ("attempt 2 on n3 after node n2 was lost"); its output starts from 0.
- `output`   {"stream": "stdout" | "stderr", "text"}: the next piece of one stream of the current attempt.
- `end`      the execution's final record (getExecutionStatus's view, without stdout and stderr: they came
             as output events). Reading it this way consumes nothing: getExecutionStatus still hands it over.
- `gone`     {"error"}: the execution no longer exists (its result was read, or it expired).
- `snapshot` {"status"}: with follow=0, the output so far has been sent and the stream stops here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadRequest
from ..exec.output_slice import MAX_PIECE_BYTES, STREAMS, OutputSlice, pieces
from ..raft.lifecycle import TERMINAL
from . import views

END_MARK = "end"
_ID = re.compile(r"([0-9]{1,15}):([0-9]{1,15}):([0-9]{1,15})(:end)?")


@dataclass(frozen=True)
class Position:
    """Where a reader of the stream is: the attempt, and how many bytes of its stdout and stderr it has."""

    attempt: int = 0
    stdout: int = 0
    stderr: int = 0
    ended: bool = False   # it has had the last event

    @property
    def event_id(self) -> str:
        base = f"{self.attempt}:{self.stdout}:{self.stderr}"
        return f"{base}:{END_MARK}" if self.ended else base


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    position: Position

    @property
    def id(self) -> str:  # noqa: A003 - the SSE field's name
        return self.position.event_id

    @property
    def text(self) -> str:
        return json.dumps(self.data)


def parse_event_id(raw: str | None) -> Position:
    """A Last-Event-ID as a Position (none or empty: the start); BadRequest if it is not one of ours."""
    if raw is None or not raw.strip():
        return Position()
    match = _ID.fullmatch(raw.strip())
    if match is None:
        raise BadRequest(f"Invalid Last-Event-ID {raw[:60]!r}: expected ATTEMPT:STDOUT:STDERR as this stream's "
                         "event ids are (e.g. 2:1024:0)")
    attempt, stdout, stderr = (int(g) for g in match.groups()[:3])
    return Position(attempt, stdout, stderr, ended=match.group(4) is not None)


def is_over(record: dict[str, Any]) -> bool:
    """Ended, with its output recorded: the stream's end event can be sent."""
    return record["status"] in TERMINAL and not record.get("outputPending")


def check_resumable(position: Position, record: dict[str, Any]) -> None:
    """A Last-Event-ID of an attempt the execution has not reached, or an end it has not reached, is none of
    its ids (BadRequest)."""
    if position.attempt > record.get("attempt", 0):
        raise BadRequest(f"Last-Event-ID {position.event_id!r} is of attempt {position.attempt}, but execution "
                         f"{record['id']} is at attempt {record.get('attempt', 0)}")
    if position.ended and not is_over(record):
        raise BadRequest(f"Last-Event-ID {position.event_id!r} is a last event's, but execution {record['id']} "
                         "has not ended")


def attempt_message(record: dict[str, Any]) -> str:
    """ "attempt 2 on n3 after node n2 was lost"."""
    text = f"attempt {record['attempt']} on {record.get('workerId') or 'no node yet'}"
    if record["attempt"] > 1 and record.get("lastError"):
        text += f" after {record['lastError']}"
    return text


def attempt_event(record: dict[str, Any]) -> Event:
    """The record's current attempt starts (or the reader first sees it): output from 0."""
    data = {"attempt": record["attempt"], "workerId": record.get("workerId"), "reason": record.get("lastError"),
            "message": attempt_message(record)}
    return Event("attempt", data, Position(record["attempt"]))


def slice_events(position: Position, piece: OutputSlice) -> tuple[list[Event], Position]:
    """Output events for a piece read from the offsets of `position`; the position after them."""
    events = []
    for stream, text, at in (("stdout", piece.stdout, piece.stdoutAt), ("stderr", piece.stderr, piece.stderrAt)):
        if text:
            position = replace(position, **{stream: at})
            events.append(Event("output", {"stream": stream, "text": text}, position))
    return events, position


def final_events(position: Position, record: dict[str, Any], *, max_bytes: int = MAX_PIECE_BYTES) -> list[Event]:
    """An ended execution: the output of its last attempt that the reader has not had (from the record, in
    pieces of at most max_bytes), then the end event with the record."""
    events = []
    if record.get("attempt", 0) > position.attempt:
        events.append(attempt_event(record))
        position = Position(record["attempt"])
    for stream in STREAMS:
        for text, at in pieces(record.get(stream) or "", getattr(position, stream), max_bytes=max_bytes):
            position = replace(position, **{stream: at})
            events.append(Event("output", {"stream": stream, "text": text}, position))
    view = {k: v for k, v in views.execution(record).items() if k not in STREAMS}
    events.append(Event(END_MARK, view, replace(position, ended=True)))
    return events


def gone_event(position: Position, message: str) -> Event:
    return Event("gone", {"error": message}, replace(position, ended=True))
