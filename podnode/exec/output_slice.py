"""A piece of an execution's output from byte offsets: what a follower of the output (api/stream.py) is sent
next. Pure: no I/O.

Offsets count bytes of main.sh's output as written (the runner keeps bytes), so a reader that resumes from
an offset gets exactly what follows. A piece never ends inside a UTF-8 character while more may come: the
incomplete end waits for its next bytes (once the stream has ended it is decoded as it is, with U+FFFD).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MAX_PIECE_BYTES = 64 * 1024   # one output event at most (a larger output goes as several)
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class OutputSlice:
    """Output of one attempt after the offsets asked for: the text, and the offsets after it."""

    stdout: str
    stderr: str
    stdoutAt: int   # noqa: N815 - the peer route's JSON names
    stderrAt: int   # noqa: N815
    ended: bool     # both pipes closed: nothing more will come from this attempt

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> OutputSlice:
        """The peer route's answer; ValueError if it is not one."""
        try:
            piece = cls(stdout=body["stdout"], stderr=body["stderr"], stdoutAt=body["stdoutAt"],
                        stderrAt=body["stderrAt"], ended=body["ended"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an output slice: {exc}") from None
        if not (isinstance(piece.stdout, str) and isinstance(piece.stderr, str)
                and _offset(piece.stdoutAt) and _offset(piece.stderrAt)):
            raise ValueError("not an output slice: bad field types")
        return piece


def _offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def complete_utf8(data: bytes) -> int:
    """The length of the longest prefix of `data` that does not end inside a UTF-8 character (invalid bytes
    count as whole: they decode to U+FFFD wherever they are)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:        # a continuation byte: look further back for its lead
            continue
        needs = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
        return len(data) - back if needs > back else len(data)
    return len(data)


def piece(data: bytes, start: int, *, final: bool, max_bytes: int = MAX_PIECE_BYTES) -> tuple[str, int]:
    """The text of `data` from byte `start`, at most max_bytes of it, cut before an incomplete character
    unless `final` (nothing more will follow) and it is the very end; (text, offset after it)."""
    if start >= len(data):
        return "", start
    end = min(len(data), start + max_bytes)
    chunk = data[start:end]
    if not (final and end == len(data)):
        cut = complete_utf8(chunk)
        if cut == 0 and len(chunk) >= 4:   # no character completes in 4 bytes: invalid bytes, send them
            cut = len(chunk)
        chunk = chunk[:cut]
    return chunk.decode("utf-8", errors="replace"), start + len(chunk)


def take(stdout_tail: bytes, stderr_tail: bytes, stdout_at: int, stderr_at: int, *, ended: bool,
         max_bytes: int = MAX_PIECE_BYTES) -> OutputSlice:
    """The next piece of each stream, given what follows the offsets (`*_tail`, the bytes from `*_at` on)."""
    out, out_used = piece(stdout_tail, 0, final=ended, max_bytes=max_bytes)
    err, err_used = piece(stderr_tail, 0, final=ended, max_bytes=max_bytes)
    whole = out_used >= len(stdout_tail) and err_used >= len(stderr_tail)
    return OutputSlice(stdout=out, stderr=err, stdoutAt=stdout_at + out_used, stderrAt=stderr_at + err_used,
                       ended=ended and whole)


def pieces(text: str, start: int, *, max_bytes: int = MAX_PIECE_BYTES) -> list[tuple[str, int]]:
    """An ended stream's text (as the execution's record holds it) from byte `start`, as pieces of at most
    max_bytes: [(text, offset after it)]."""
    data = text.encode("utf-8", errors="replace")
    out: list[tuple[str, int]] = []
    at = start
    while at < len(data):
        chunk, at_after = piece(data, at, final=True, max_bytes=max_bytes)
        if at_after == at:
            break
        out.append((chunk, at_after))
        at = at_after
    return out
