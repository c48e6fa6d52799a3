"""What the state machine tells an onlooker as it applies entries: an execution submitted, started, ended or
retried, an install done, a launch recorded or failed, a launched node destroyed.

The base class does nothing; the node plugs in podnode/metrics (Prometheus counters), so that the state machine
never imports a metrics library and stays deterministic: an observer only reads the records it is given (never
changes them, never decides anything), and `notify` never lets its failure escape into an apply case, where an
exception would stop the entry half applied (and wedge the log: see the rules in raft/replica.py).
Each call is O(1): one per changed execution, install or node, like the change itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ApplyObserver:
    """The events, with the records as they are right after the change (read them, never keep or change them)."""

    def submitted(self, execution: dict[str, Any]) -> None:
        """A new execution (not a duplicate request) was made."""

    def started(self, execution: dict[str, Any]) -> None:
        """An attempt started: status in progress, workerId, attempt and startTime are the new attempt's."""

    def ended(self, execution: dict[str, Any]) -> None:
        """The execution ended: status finished, error or terminated, finishTime set (startTime None if it
        never ran)."""

    def retried(self, execution: dict[str, Any]) -> None:
        """An attempt was lost with its node and the execution is waiting again (attempt: the lost one's)."""

    def installed(self, activity: str, ok: bool) -> None:
        """An install of the activity on a node ended (ok, or failed)."""

    def launch_recorded(self, node: str) -> None:
        """A scaling launch was recorded (a provider is asked for the node)."""

    def launch_failed(self, node: str) -> None:
        """A launch failed or did not join in time, and was given up."""

    def destroyed(self, node: str) -> None:
        """A launched node's server was destroyed by its provider (recorded once per node)."""


NO_OBSERVER = ApplyObserver()


def notify(event: Callable[..., None], *args: Any) -> None:
    """Call one of an observer's methods, e.g. notify(observer.started, execution); a failure is logged, never
    raised into the apply case."""
    try:
        event(*args)
    except Exception:
        log.exception("apply observer failed on %s", getattr(event, "__name__", event))
