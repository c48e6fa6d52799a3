"""logs.py: a JSON object a line with time, level, node, event, logger, the call's ids and the exception; the
secret and the token redacted in every format."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from podnode import logs


def record(msg: str, *args, extra: dict | None = None, exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.getLogger("podnode.test").makeRecord(
        "podnode.test", logging.WARNING, __file__, 1, msg, args,
        (type(exc), exc, exc.__traceback__) if exc else None, extra=extra)
    return rec


def test_a_json_line_has_the_fields_and_the_ids():
    line = logs.JsonFormatter("n2").format(record("execution %s started", 17,
                                                  extra={"execution": 17, "activity": "greet", "attempt": 2}))
    assert "\n" not in line
    entry = json.loads(line)
    assert {k: entry[k] for k in ("level", "node", "event", "logger", "execution", "activity", "attempt")} == {
        "level": "WARNING", "node": "n2", "event": "execution 17 started", "logger": "podnode.test",
        "execution": 17, "activity": "greet", "attempt": 2}
    when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert entry["time"].endswith("Z") and when.utcoffset().total_seconds() == 0
    assert "exception" not in entry


def test_an_exception_is_a_field_on_the_same_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as exc:
        line = logs.JsonFormatter("n1").format(record("failed", exc=exc))
    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["event"] == "failed"
    assert entry["exception"].startswith("Traceback") and "ValueError: boom\nsecond line" in entry["exception"]


def test_a_value_that_is_not_json_is_written_as_text():
    entry = json.loads(logs.JsonFormatter("n1").format(record("x", extra={"peer": {"h", }, "when": object})))
    assert entry["peer"] == str({"h"}) and entry["when"] == str(object)


def test_redacted_values_never_reach_a_line_in_either_format():
    secret, token = "s3cr3t-Value_xyz", "pod_0123abcd_tokentokentoken"
    logs.redact(secret, token, None, "")
    for formatter in (logs.JsonFormatter("n1"), logs.TextFormatter()):
        line = formatter.format(record("secret %s and token %s", secret, token, extra={"peer": secret}))
        assert secret not in line and token not in line
        assert line.count(logs.REDACTED) == (3 if isinstance(formatter, logs.JsonFormatter) else 2)


def test_a_secret_with_characters_json_escapes_is_redacted_too():
    odd = 'q"uo\\te-secret'
    logs.redact(odd)
    line = logs.JsonFormatter("n1").format(record("it is %s", odd))
    assert "uo" not in line and json.loads(line)["event"] == f"it is {logs.REDACTED}"


def test_setup_writes_json_to_stderr_warnings_and_thread_failures_included(capsys):
    import threading
    import warnings

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook)
    try:
        logs.setup(level="info", fmt="json", node_id="n7")
        logging.getLogger("podnode.x").info("hello", extra={"peer": "n2"})
        logging.getLogger("podnode.x").debug("not shown")
        warnings.warn("careful", UserWarning, stacklevel=1)
        t = threading.Thread(target=lambda: 1 / 0, name="failing")
        t.start()
        t.join()
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        threading.excepthook = saved[2]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["event"] for e in lines][0] == "hello" and lines[0]["peer"] == "n2" and lines[0]["node"] == "n7"
    assert any("careful" in e["event"] for e in lines)
    failed = [e for e in lines if e["event"] == "thread failing failed"]
    assert failed and "ZeroDivisionError" in failed[0]["exception"]
    assert all(e["event"] != "not shown" for e in lines)


def test_a_node_that_refuses_to_start_says_why_in_one_json_line(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "podnode", "--id", "z", "--raft", "10.255.0.1:9999", "--log-format",
                           "json", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines[-1]["level"] == "CRITICAL" and lines[-1]["node"] == "z"
    assert lines[-1]["event"].startswith("refusing to bind Raft on 10.255.0.1 without a cluster secret")
