"""The action API's parameters, declared once: for each action what it takes (name, parser from api/params.py,
JSON schema of the value, required, description, an example), the scope it needs, what it answers and which
errors it may give.

One source of truth: a handler gets its parameters only as `ActionSpec.parse` returns them (actions.ACTIONS
binds each handler to its definition; the handler never sees the request's mapping), and /openapi.json is
generated from the same definitions (api/openapi.py). A parameter a handler reads without a definition is a
KeyError on every call and fails tests/unit/test_openapi.py, which also checks that each parser reads only its
own parameter and each handler reads only, and every one of, the parameters its action declares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import tokens as T
from ..config import NAME_PATTERN, NodeConfig
from ..raft.activities import LIMIT_CAPS
from ..raft.executions import EXECUTION_STATUSES
from ..scaling.policy import RULES
from . import params as P
from .schemas import Schema

Parser = Callable[[Mapping[str, str], NodeConfig], Any]
Args = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One parameter: `parse(request parameters, node config)` reads it (and only it), checks it and returns
    its value (raising BadRequest or TooLarge); `schema` is the JSON schema of its value in a query or a form,
    `json_schema` in a JSON body where that differs (a list as a list, not as JSON text)."""

    name: str
    parse: Parser
    schema: Schema
    description: str
    example: Any
    required: bool = False
    json_schema: Schema | None = None


@dataclass(frozen=True)
class ActionSpec:
    name: str
    summary: str
    answer: str                          # the name of its 200 answer's schema in api/schemas.ANSWERS
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()         # the codes it may give beyond COMMON_ERRORS
    description: str = ""

    @property
    def scope(self) -> str:
        return T.action_scope(self.name)

    def parse(self, params: Mapping[str, str], cfg: NodeConfig) -> Args:
        """Every declared parameter's value, in the order declared (the first bad one is the error)."""
        return {p.name: p.parse(params, cfg) for p in self.params}


# Any action may give these: bad parameters or body (400), no or a bad token (401), a token of too narrow a
# scope or a cross-site request (403), a body over the limit (413), a URL or a header over the limit (414, 431),
# no leader or a node still catching up (503).
COMMON_ERRORS = (400, 401, 403, 413, 414, 431, 503)

NAME: Schema = {"type": "string", "pattern": f"^{NAME_PATTERN}$", "maxLength": 64}
WHOLE = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
SECONDS = {"type": "number", "minimum": 0}


def _name(key: str, what: str, description: str, example: str) -> Param:
    return Param(key, lambda p, cfg: P.name(p, key, what), NAME, description, example, required=True)


def _activity_filter(description: str) -> Param:
    return Param("activity", lambda p, cfg: P.activity_filter(p), NAME, description, "greet")


def _limit(key: str, description: str, example: Any) -> Param:
    kind, cap = LIMIT_CAPS[key]
    schema = {"type": "number" if kind is float else "integer", "minimum": 0, "maximum": cap}
    return Param(key, lambda p, cfg: P.activity_limit(p, key), schema, description, example)


ACTIVITY = Param("name", lambda p, cfg: P.activity_name(p), NAME, "The activity's name.", "greet", required=True)
EXECUTION_ID = Param("executionId", lambda p, cfg: P.execution_id(p), WHOLE, "The execution's id.", 1,
                     required=True)
REQUEST_ID = Param("requestId", lambda p, cfg: P.request_id(p),
                   {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                   "Makes the submission idempotent: submitting again with the same requestId answers the "
                   "executions made the first time instead of making new ones.", "batch-42")
WAIT = Param("wait", lambda p, cfg: P.wait_seconds(p, cfg.max_wait_s), SECONDS,
             "Seconds to wait for the execution to end before answering (capped at the node's --max-wait-s).", 0)

SPECS_LIST: tuple[ActionSpec, ...] = (
    ActionSpec(
        "newActivity", "Register an activity: every node runs its install script, which leaves main.sh.",
        "ActivityAnswer", errors=(409, 429), params=(
            ACTIVITY,
            Param("installationScriptLocation",
                  lambda p, cfg: P.script_url(p, allow_file_urls=bool(cfg.allow_file_urls)),
                  {"type": "string", "minLength": 1, "maxLength": P.MAX_URL_CHARS, "format": "uri"},
                  "URL of the install script: http or https (file:// only on a node that allows it).",
                  "https://example.org/install.sh", required=True),
            Param("maxAttempts", lambda p, cfg: P.max_attempts(p), {"type": "integer", "minimum": 1, "maximum": 100},
                  "How many times an execution is tried when its node is lost (default 3).", 3),
            _limit("timeoutS", "Seconds an execution may run (0: no limit; default: the node's).", 60),
            _limit("memoryMB", "Memory an execution may use, in MiB (0: no limit; default: the node's).", 512),
            _limit("maxProcesses", "Processes an execution may hold (0: no limit; default: the node's).", 64),
        )),
    ActionSpec("getActivityStatus", "An activity, its limits and its installation on each node.", "ActivityAnswer",
               errors=(404,), params=(ACTIVITY,)),
    ActionSpec("deleteActivity", "Uninstall an activity from every node.", "ActivityAnswer", errors=(404, 409),
               params=(ACTIVITY,)),
    ActionSpec(
        "newExecution", "Run the activity's main.sh with an input.", "NewExecutionAnswer", errors=(404, 409, 429),
        params=(ACTIVITY,
                Param("input", lambda p, cfg: P.execution_input(p, cfg.max_input_bytes), {"type": "string"},
                      "main.sh's argument (up to the node's --max-input-bytes, UTF-8, no NUL; 413 over it).",
                      "world"),
                REQUEST_ID,
                Param("wait", lambda p, cfg: P.wait_seconds(p, cfg.max_wait_s), SECONDS,
                      "Seconds to wait for the end (capped at the node's --max-wait-s): if it ends in time, the answer "
                      "is the whole execution with its result, which is then read (deleted) like getExecutionStatus "
                      "reads it; else the execution as it stands, for any reader. 0: answer at once.", 0))),
    ActionSpec(
        "getExecutionStatus", "An execution; once it has ended, reading it hands its result over and deletes it.",
        "ExecutionAnswer", errors=(404, 409), params=(EXECUTION_ID, WAIT)),
    ActionSpec("terminateExecution", "Stop an execution (waiting or running).", "TerminateAnswer",
               errors=(404, 409), params=(EXECUTION_ID,)),
    ActionSpec(
        "getAllExecutions", "A page of executions by increasing id, without output, and the counts per status.",
        "ExecutionPage", params=(
            Param("limit", lambda p, cfg: P.page_limit(p), {"type": "integer", "minimum": 1, "maximum": P.PAGE_MAX},
                  f"Executions per page (default {P.PAGE_DEFAULT}).", 100),
            Param("cursor", lambda p, cfg: P.page_cursor(p), {"type": "string", "pattern": "^i[0-9]{1,18}$"},
                  "The nextCursor of the page before, as it came (none: the first page).", "i100"),
            Param("status", lambda p, cfg: P.execution_status(p), {"enum": list(EXECUTION_STATUSES)},
                  "Only executions in this status.", EXECUTION_STATUSES[0]),
            _activity_filter("Only executions of this activity."),
        )),
    ActionSpec(
        "newPolicy", "Define a scaling policy (the original POD's k=v,k=v rules).", "PolicyAnswer", errors=(409,),
        params=(_name("name", "policy", "The policy's name.", "small"),
                Param("rules", lambda p, cfg: P.policy_rules(p), {"type": "string", "minLength": 1},
                      "Rules k=v separated by commas; known keys: " + ", ".join(sorted(RULES)) + ".",
                      "minWorkers=1,maxWorkers=3", required=True))),
    ActionSpec("deletePolicy", "Delete a policy that is not active.", "PolicyAnswer", errors=(404, 409),
               params=(_name("name", "policy", "The policy's name.", "small"),)),
    ActionSpec("applyPolicy", "Make a policy the active one.", "PolicyAnswer", errors=(404,),
               params=(_name("name", "policy", "The policy's name.", "small"),)),
    ActionSpec("getActivePolicy", "The active policy (null: none).", "ActivePolicyAnswer"),
    ActionSpec("getPolicies", "Every policy.", "PoliciesAnswer"),
    ActionSpec("resetPolicies", "Delete every policy; none is active after it.", "ResetAnswer"),
    ActionSpec("getWorkers", "Every node: state, slots, load, provider and price; launches; spend.", "WorkersAnswer"),
    ActionSpec(
        "drainWorker", "Drain a node: it takes no new executions and leaves once its running ones end.",
        "DrainAnswer", errors=(404, 409), params=(
            _name("workerId", "worker", "The node's id.", "n2"),
            Param("deadline", lambda p, cfg: P.seconds(p, "deadline", default=300.0, cap_s=7 * 24 * 3600.0),
                  SECONDS, "Seconds its running executions get before they are moved (default 300, at most a "
                           "week).", 300))),
    ActionSpec(
        "newToken", "Make an API token; the answer shows it this once.", "NewTokenAnswer", errors=(409, 429),
        params=(_name("name", "token", "The token's name.", "ci"),
                Param("scope", lambda p, cfg: P.token_scope(p), {"enum": list(T.SCOPES)},
                      "read: reads that consume nothing; submit: also run executions and read their results; "
                      "admin: everything.", "submit", required=True))),
    ActionSpec("getTokens", "Every token: name, scope, creation time (never the token).", "TokensAnswer"),
    ActionSpec("deleteToken", "Delete a token; every node refuses it once this answers.", "DeleteTokenAnswer",
               errors=(404,), params=(_name("name", "token", "The token's name.", "ci"),)),
    ActionSpec(
        "newExecutions", "Submit many inputs of one activity at once, all or none.", "NewExecutionsAnswer",
        errors=(404, 409, 429), params=(
            ACTIVITY,
            Param("inputs", lambda p, cfg: P.execution_inputs(p, cfg.max_input_bytes),
                  {"type": "string", "contentMediaType": "application/json",
                   "contentSchema": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                     "maxItems": P.MAX_ARRAY}},
                  f"The inputs: a JSON list of 1 to {P.MAX_ARRAY} strings (in a JSON body, the list itself).",
                  '["a", "b"]', required=True,
                  json_schema={"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": P.MAX_ARRAY}),
            REQUEST_ID)),
    ActionSpec(
        "getExecutionResults", "Read many ended executions at once (by ids, or the next ended ones of an "
        "activity); each result is handed over and deleted once.", "ResultsAnswer", errors=(404,),
        description="Give executionIds or activity (with limit), not both.", params=(
            Param("executionIds", lambda p, cfg: P.execution_ids(p),
                  {"type": "string", "pattern": "^[0-9]{1,18}(,[0-9]{1,18})*,?$|^\\["},
                  "Ids separated by commas, or a JSON list of ids.", "1,2,3",
                  json_schema={"oneOf": [{"type": "array", "items": WHOLE, "minItems": 1, "maxItems": P.MAX_ARRAY},
                                         {"type": "string"}]}),
            _activity_filter("The activity whose next ended executions to read."),
            Param("limit", lambda p, cfg: P.results_limit(p), {"type": "integer", "minimum": 1, "maximum": P.MAX_ARRAY},
                  f"With activity: at most this many (default {P.DEFAULT_RESULTS}).", 10),
            Param("wait", lambda p, cfg: P.wait_seconds(p, cfg.max_wait_s), SECONDS,
                  "Seconds to wait for at least one result (capped at the node's --max-wait-s).", 0))),
)
SPECS: dict[str, ActionSpec] = {spec.name: spec for spec in SPECS_LIST}
