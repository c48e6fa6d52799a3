"""Parse and check request parameters; every failure is a BadRequest (or TooLarge) a person can act on."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..config import NAME_PATTERN
from ..errors import BadRequest, TooLarge
from ..raft.activities import LIMIT_CAPS
from ..raft.executions import EXECUTION_STATUSES

_NAME = re.compile(NAME_PATTERN)
MAX_URL_CHARS = 2048
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DIGITS = re.compile(r"[0-9]{1,18}")   # str.isdigit() also takes '²' and '٣', which int() refuses or reads
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{0,9})?|\.[0-9]{1,9}")   # float() also reads '1_0', '٣', 'nan', '1e400'


def required(params: Mapping[str, str], key: str) -> str:
    value = params.get(key)
    if value is None or value.strip() == "":
        raise BadRequest(f"Missing parameter '{key}'")
    return value


def name(params: Mapping[str, str], key: str, what: str) -> str:
    """A name parameter (activity, policy, worker): 1 to 64 safe characters."""
    value = required(params, key)
    if not _NAME.fullmatch(value):
        raise BadRequest(f"Invalid {what} name {value!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    return value


def activity_name(params: Mapping[str, str]) -> str:
    return name(params, "name", "activity")


def seconds(params: Mapping[str, str], key: str, *, default: float, cap_s: float) -> float:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"Invalid {key} {raw!r}: give seconds, e.g. {key}=10") from None
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"Invalid {key} {raw!r}: it must be zero or more seconds")
    return min(value, cap_s)


def execution_id(params: Mapping[str, str]) -> int:
    raw = required(params, "executionId").strip()
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"Invalid executionId {raw!r}: it must be a positive whole number")
    return int(raw)


def wait_seconds(params: Mapping[str, str], cap_s: float) -> float:
    return seconds(params, "wait", default=0.0, cap_s=cap_s)


def execution_input(params: Mapping[str, str], cap_bytes: int) -> str:
    value = params.get("input") or ""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > cap_bytes:
        raise TooLarge(f"input is {size} bytes; the limit is {cap_bytes} bytes")
    if "\x00" in value:
        raise BadRequest("input must not contain NUL characters")
    return value


def request_id(params: Mapping[str, str]) -> str | None:
    value = params.get("requestId")
    if value is None or value == "":
        return None
    if not _REQUEST_ID.fullmatch(value):
        raise BadRequest("Invalid requestId: use 1 to 128 letters, digits, '_', '.', ':' or '-'")
    return value


def activity_limits(params: Mapping[str, str]) -> dict[str, float | int]:
    """newActivity's own limits for its executions: timeoutS (seconds), memoryMB, maxProcesses; only those given.
    0: no limit; a missing one is left to the node's default."""
    limits: dict[str, float | int] = {}
    for key, (kind, cap) in LIMIT_CAPS.items():
        raw = (params.get(key) or "").strip()
        if raw == "":
            continue
        unit = "seconds" if kind is float else "a whole number"
        value = None
        if (_DECIMAL if kind is float else _DIGITS).fullmatch(raw):
            value = float(raw) if kind is float else int(raw)
        if value is None or not 0 <= value <= cap:
            raise BadRequest(f"Invalid {key} {raw!r}: give {unit} from 0 (no limit) to {cap:.0f}")
        limits[key] = value
    return limits


def max_attempts(params: Mapping[str, str]) -> int | None:
    raw = params.get("maxAttempts")
    if raw is None or raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= 100:
        raise BadRequest(f"Invalid maxAttempts {raw!r}: a whole number from 1 to 100")
    return int(raw)


# ---- getAllExecutions' pages ----------------------------------------------------------------------------
PAGE_DEFAULT = 1000
PAGE_MAX = 10_000
_CURSOR = re.compile(r"i([0-9]{1,18})")   # opaque to clients: the last id of the page before


def page_limit(params: Mapping[str, str]) -> int:
    raw = (params.get("limit") or "").strip()
    if raw == "":
        return PAGE_DEFAULT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise BadRequest(f"Invalid limit {raw!r}: a whole number from 1 to {PAGE_MAX}")
    return int(raw)


def cursor_of(last_id: int) -> str:
    return f"i{last_id}"


def page_cursor(params: Mapping[str, str]) -> int:
    """The id after which the page starts (0: the first page)."""
    raw = (params.get("cursor") or "").strip()
    if raw == "":
        return 0
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise BadRequest(f"Invalid cursor {raw!r}: pass the nextCursor of the page before, as it came")
    return int(match.group(1))


def execution_status(params: Mapping[str, str]) -> str | None:
    raw = params.get("status")
    if raw is None or raw == "":
        return None
    if raw not in EXECUTION_STATUSES:
        raise BadRequest(f"Invalid status {raw!r}: one of " + ", ".join(repr(s) for s in EXECUTION_STATUSES))
    return raw


def activity_filter(params: Mapping[str, str]) -> str | None:
    """An optional activity name (getAllExecutions' filter)."""
    if (params.get("activity") or "") == "":
        return None
    return name(params, "activity", "activity")


def is_text(value: str) -> bool:
    """Can it be encoded as UTF-8 (a form body in a charset such as unicode_escape, or a JSON string, can hold
    lone surrogates)?"""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
