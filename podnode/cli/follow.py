"""Printing an execution's output as it comes (`pod run --follow`, `pod execution logs [-f]`), from the node's
Server-Sent Events stream (client.Api.events): stdout to stdout, stderr to stderr, a move to another node as
a `pod:` line on stderr. A stream that breaks off is opened again from the last event id it gave, so nothing
is printed twice or missed."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from .client import EXIT_SERVER, EXIT_USAGE, RETRY_BUDGET_S, Api, CliError
from .output import warn


class Printer:
    """What the events say, printed: the output to the streams, moves to other attempts as notes."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def output(self, stream: str, text: str) -> None:
        target = self.stdout if stream == "stdout" else self.stderr
        target.write(text)
        target.flush()

    def attempt(self, data: dict[str, Any]) -> None:
        if data.get("attempt", 0) > 1:    # the first one is the normal case: say nothing
            self.stderr.flush()
            warn(data.get("message") or f"attempt {data.get('attempt')}")


def follow(api: Api, exec_id: int, *, keep_following: bool = True, printer: Printer | None = None,
           budget_s: float = RETRY_BUDGET_S) -> dict[str, Any] | None:
    """Print the execution's output until its end (or, without keep_following, what there is now); return the
    end event's record (None if it had not ended). Reconnects from the last event id while the node cannot be
    reached, for up to budget_s after the last event."""
    printer = printer or Printer()
    last_id: str | None = None
    deadline = time.monotonic() + budget_s
    pause = 0.25
    while True:
        try:
            for event in api.events(exec_id, follow=keep_following, last_event_id=last_id):
                data = json.loads(event.data)
                if event.event == "output":
                    printer.output(data.get("stream", "stdout"), data.get("text", ""))
                elif event.event == "attempt":
                    printer.attempt(data)
                elif event.event == "end":
                    return data
                elif event.event == "gone":
                    raise CliError(data.get("error") or f"execution {exec_id} no longer exists", EXIT_USAGE)
                elif event.event == "snapshot":
                    return None
                if event.id:
                    last_id = event.id
                deadline = time.monotonic() + budget_s
            error = CliError(f"the output stream of execution {exec_id} ended before the execution did", EXIT_SERVER)
        except CliError as err:
            if not err.transient:
                raise
            error = err
        except ValueError:
            raise CliError(f"the node sent an event that is not JSON on execution {exec_id}'s stream",
                           EXIT_SERVER) from None
        left = deadline - time.monotonic()
        if left <= 0:
            raise error
        time.sleep(min(pause, left))
        pause = min(pause * 2, 2.0)
