"""Parse and check request parameters; every failure is a BadRequest (or TooLarge) a person can act on."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from .. import tokens as T
from ..config import NAME_PATTERN
from ..errors import BadRequest, TooLarge
from ..exec.install import check_script_url
from ..raft.activities import LIMIT_CAPS
from ..raft.executions import EXECUTION_STATUSES
from ..scaling.policy import PolicyError, parse_rules

_NAME = re.compile(NAME_PATTERN)
MAX_URL_CHARS = 2048
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DIGITS = re.compile(r"[0-9]{1,18}")   # str.isdigit() also takes '²' and '٣', which int() refuses or reads
# float() also reads '1_0', '٣', 'nan', ' 7'; an exponent is taken (what a JSON number or str(float) may hold)
_DECIMAL = re.compile(r"([0-9]{1,18}(\.[0-9]{0,20})?|\.[0-9]{1,20})([eE][-+]?[0-9]{1,3})?")


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


def activity_limit(params: Mapping[str, str], key: str) -> float | int | None:
    """One of newActivity's own limits for its executions (a key of LIMIT_CAPS: timeoutS in seconds, memoryMB,
    maxProcesses); None when not given (left to the node's default); 0: no limit."""
    kind, cap = LIMIT_CAPS[key]
    raw = (params.get(key) or "").strip()
    if raw == "":
        return None
    unit = "seconds" if kind is float else "a whole number"
    value = None
    if (_DECIMAL if kind is float else _DIGITS).fullmatch(raw):
        value = float(raw) if kind is float else int(raw)
    if value is None or not 0 <= value <= cap:
        raise BadRequest(f"Invalid {key} {raw!r}: give {unit} from 0 (no limit) to {cap:.0f}")
    return value


def script_url(params: Mapping[str, str], *, allow_file_urls: bool) -> str:
    """newActivity's installationScriptLocation: http(s), or file:// where the node allows it."""
    url = required(params, "installationScriptLocation").strip()
    if len(url) > MAX_URL_CHARS:
        raise BadRequest(f"installationScriptLocation is longer than {MAX_URL_CHARS} characters")
    try:
        check_script_url(url, allow_file_urls=allow_file_urls)
    except ValueError as exc:
        raise BadRequest(f"Invalid installationScriptLocation: {exc}") from None
    return url


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


# ---- policies and tokens ---------------------------------------------------------------------------------
def policy_rules(params: Mapping[str, str]) -> dict[str, float]:
    """newPolicy's rules, `k=v,k=v` (scaling/policy.RULES)."""
    try:
        return parse_rules(required(params, "rules"))
    except PolicyError as exc:
        raise BadRequest(f"Invalid rules: {exc}") from None


def token_scope(params: Mapping[str, str]) -> str:
    """newToken's scope: no default, what a credential may do is said, never assumed."""
    scope = required(params, "scope")
    if scope not in T.SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(T.SCOPES)}, not {scope[:50]!r}")
    return scope


# ---- arrays (newExecutions, getExecutionResults) -----------------------------------------------------------
MAX_ARRAY = 10_000          # inputs per newExecutions, ids per getExecutionResults
DEFAULT_RESULTS = 100       # getExecutionResults activity=NAME without limit
_IDS = re.compile(r"[0-9]{1,18}(,[0-9]{1,18})*,?")


def execution_inputs(params: Mapping[str, str], cap_bytes: int) -> list[str]:
    """newExecutions' inputs (a JSON list of strings), all checked: a bad one refuses the array, saying which."""
    raw = required(params, "inputs")
    try:
        inputs = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"inputs must be a JSON list of strings: {exc}") from None
    if not isinstance(inputs, list):
        raise BadRequest("inputs must be a JSON list of strings")
    if not inputs:
        raise BadRequest("inputs is empty: give at least one input")
    if len(inputs) > MAX_ARRAY:
        raise TooLarge(f"{len(inputs)} inputs; the limit is {MAX_ARRAY} per request: submit them in several arrays")
    for index, value in enumerate(inputs):
        if not isinstance(value, str):
            raise BadRequest(f"inputs[{index}] is not a string ({type(value).__name__}); nothing was submitted")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > cap_bytes:
            raise BadRequest(f"inputs[{index}] is {size} bytes; the limit is {cap_bytes} bytes; nothing was submitted")
        if "\x00" in value:
            raise BadRequest(f"inputs[{index}] contains a NUL character; nothing was submitted")
        if not is_text(value):
            raise BadRequest(f"inputs[{index}] is not valid Unicode text (a lone surrogate); nothing was submitted")
    return inputs


def execution_ids(params: Mapping[str, str]) -> list[int] | None:
    """getExecutionResults' executionIds: a JSON list or ids separated by commas, each once in the order given;
    None when not given."""
    text = (params.get("executionIds") or "").strip()
    if text == "":
        return None
    if text.startswith("["):
        try:
            ids = json.loads(text)
        except ValueError as exc:
            raise BadRequest(f"executionIds must be a JSON list of ids or ids separated by commas: {exc}") from None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 10**18
                                                for i in ids):
            raise BadRequest("executionIds must be a list of positive whole numbers")
    elif _IDS.fullmatch(text):
        ids = [int(i) for i in text.split(",") if i]
    else:
        raise BadRequest(f"Invalid executionIds {text[:50]!r}: positive whole numbers separated by commas, "
                         "or a JSON list")
    if not ids:
        raise BadRequest("executionIds is empty")
    if len(ids) > MAX_ARRAY:
        raise TooLarge(f"{len(ids)} executionIds; the limit is {MAX_ARRAY} per request")
    return list(dict.fromkeys(ids))


def results_limit(params: Mapping[str, str]) -> int:
    """getExecutionResults' limit (with activity): 1 to MAX_ARRAY, DEFAULT_RESULTS when not given."""
    raw = (params.get("limit") or "").strip()
    if not raw:
        return DEFAULT_RESULTS
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_ARRAY:
        raise BadRequest(f"Invalid limit {raw[:30]!r}: a whole number from 1 to {MAX_ARRAY}")
    return int(raw)


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
