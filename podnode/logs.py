"""The node's log: human text (the default) or one JSON object a line (`--log-format json`).

A JSON line holds `time` (ISO 8601, UTC), `level`, `node`, `event` (the message), `logger`, the ids the log call
passed with `extra=` (e.g. `execution`, `activity`, `attempt`, `peer`, `leader`) and `exception` (the traceback)
when there is one. Whatever the format, every value given to `redact` (the cluster secret, the admin token) is
replaced by `[redacted]` in every line before it is written: a secret never reaches the log, even through a
message that quotes it by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
# What every LogRecord has: the rest of its attributes are what the call passed with extra=.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_secrets: set[str] = set()
_lock = threading.Lock()


def redact(*values: str | None) -> None:
    """From now on, never write these strings (empty ones and None are ignored)."""
    with _lock:
        for value in filter(None, values):
            _secrets.update({value, json.dumps(value, ensure_ascii=False)[1:-1]})   # as written, and in JSON


def _scrub(line: str) -> str:
    for secret in _secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    return line


def extras(record: logging.LogRecord) -> dict[str, object]:
    """The fields a log call added with extra=."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a record, on one line (a newline in a message or a traceback is escaped)."""

    def __init__(self, node_id: str | None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        entry = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": record.levelname,
                 "node": self.node_id, "event": record.getMessage(), "logger": record.name}
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _scrub(json.dumps(entry, default=str, ensure_ascii=False))


def setup(*, level: str = "info", fmt: str = "text", node_id: str | None = None) -> None:
    """Log to stderr in `fmt` from `level` up, warnings and uncaught exceptions of threads included (so that in
    json every line of the node's output is a JSON object)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger("podnode").error("thread %s failed", getattr(args.thread, "name", "?"),
                                           exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    threading.excepthook = thread_failed
    if fmt == "json":   # a crash is one more JSON line, not a bare traceback
        sys.excepthook = lambda *exc: logging.getLogger("podnode").critical("podnode failed", exc_info=exc)
