"""JSON schemas (2020-12, as OpenAPI 3.1 takes them) of what the API answers: the views of api/views.py and the
error body. /openapi.json puts them under components/schemas; the action definitions (api/spec.py) name the one
each action answers. Objects stay open (additionalProperties allowed): a client must ignore fields it does not
know, so a field added to a view is not a breaking change."""

from __future__ import annotations

from typing import Any

from ..raft.executions import EXECUTION_STATUSES
from ..tokens import SCOPES

Schema = dict[str, Any]


def obj(required: tuple[str, ...] = (), description: str = "", **props: Schema) -> Schema:
    """An object with these properties, `required` of them always present."""
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


STRING: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
MS = nullable("integer", description="milliseconds since the epoch (null: not yet)")
WAITING_REASON: Schema = {"type": "string", "description": "while it waits (absent otherwise): why, in plain words "
                                                           "from the leader's placement rules (podnode/waiting.py)"}
QUEUE_POSITION: Schema = {"type": "integer", "minimum": 0, "description": "while it waits: how many waiting "
                                                                          "executions start before it (0: next)"}

_TOKEN = obj(("name", "scope", "createdAt"), name=STRING, scope={"enum": list(SCOPES)},
             createdAt=nullable("number", description="seconds since the epoch (null: the birth admin token)"),
             birth=BOOL)

COMPONENTS: dict[str, Schema] = {
    "Error": obj(("error",), "Every refusal: a message a person can act on.", error=STRING),
    "Limits": obj(("timeoutS", "memoryMB", "maxProcesses"),
                  "The limits executions of the activity run with (null: none).",
                  timeoutS=nullable("number"), memoryMB=nullable("integer"), maxProcesses=nullable("integer")),
    "Activity": obj(
        ("id", "name", "installationScriptLocation", "status", "createdAt"),
        id=INT, name=STRING, installationScriptLocation=STRING, status=STRING, maxAttempts=INT,
        errorDescription=STRING, createdAt=MS, limits=ref("Limits"),
        installations=array(obj(("workerId", "status"), workerId=STRING, status=STRING, errorDescription=STRING))),
    "Execution": obj(
        ("id", "stdin", "stdout", "stderr", "status", "activityId", "activityName", "submitTime", "startTime",
         "finishTime", "exitCode", "workerId", "attempts"),
        id=INT, stdin=STRING, stdout=STRING, stderr=STRING, status={"enum": list(EXECUTION_STATUSES)},
        activityId=INT, activityName=STRING, submitTime=MS, startTime=MS, finishTime=MS,
        exitCode=nullable("integer"), workerId=nullable("string"), attempts=INT, errorDescription=STRING,
        requestId=STRING, lastError=STRING, stdoutTruncated=BOOL, stderrTruncated=BOOL, outputPending=BOOL,
        waitingReason=WAITING_REASON, queuePosition=QUEUE_POSITION),
    "ExecutionListed": obj(
        ("id", "stdin", "status", "activityId", "activityName"), "An execution without its output.",
        id=INT, stdin=STRING, status={"enum": list(EXECUTION_STATUSES)}, activityId=INT, activityName=STRING,
        submitTime=MS, startTime=MS, finishTime=MS, exitCode=nullable("integer"), workerId=nullable("string"),
        attempts=INT, waitingReason=WAITING_REASON, queuePosition=QUEUE_POSITION),
    "ExecutionSummary": obj(("id", "stdin", "status", "activityId", "activityName"),
                            id=INT, stdin=STRING, status={"enum": list(EXECUTION_STATUSES)}, activityId=INT,
                            activityName=STRING),
    "Policy": obj(("name", "rules", "values", "active"), name=STRING,
                  rules={"type": "string", "description": "k=v,k=v, canonical"},
                  values={"type": "object", "additionalProperties": NUMBER}, active=BOOL),
    "Worker": obj(("id", "httpUrl", "raftAddress", "slots", "busy", "load", "status", "provider", "hourlyPrice",
                   "connected"),
                  id=STRING, httpUrl=STRING, raftAddress=STRING, slots=INT, busy=INT, load=NUMBER, status=STRING,
                  provider=STRING, hourlyPrice=NUMBER, ref={}, connected=BOOL, leftTime=MS, lostTime=MS),
    "Token": _TOKEN,
}

# What each action answers (200), by name; the action definitions refer to them.
ANSWERS: dict[str, Schema] = {
    "ActivityAnswer": obj(("activity",), activity=ref("Activity"), status=STRING),
    "ExecutionAnswer": obj(("execution",), execution=ref("Execution")),
    "NewExecutionAnswer": obj(("execution",), execution={"anyOf": [ref("Execution"), ref("ExecutionSummary")],
                                                          "description": "with wait: the whole execution"}),
    "TerminateAnswer": obj(("execution",), execution=obj(("id", "status"), id=INT, status=STRING)),
    "ExecutionPage": obj(("executions", "nextCursor", "counts"), executions=array(ref("ExecutionListed")),
                         nextCursor=nullable("string", description="pass as cursor for the next page; null: last"),
                         counts={"type": "object", "additionalProperties": INT}),
    "PolicyAnswer": obj(("policy",), policy=ref("Policy"), status=STRING),
    "ActivePolicyAnswer": obj(("policy",), policy={"oneOf": [ref("Policy"), {"type": "null"}]}),
    "PoliciesAnswer": obj(("policies",), policies=array(ref("Policy"))),
    "ResetAnswer": obj(("removed", "status"), removed=array(STRING), status=STRING),
    "WorkersAnswer": obj(("workers", "launching", "launchFailures", "spendPerHour", "spentSoFar"),
                         workers=array(ref("Worker")), launching=array({"type": "object"}),
                         launchFailures={"type": "object"}, spendPerHour=NUMBER, spentSoFar=NUMBER),
    "DrainAnswer": obj(("worker", "status"), worker=obj(("id", "status"), id=STRING, status=STRING), status=STRING),
    "NewTokenAnswer": obj(("token",), token={"allOf": [_TOKEN, obj(("token",), token={
        "type": "string", "description": "the token itself: shown this once, never again"})]}),
    "TokensAnswer": obj(("tokens",), tokens=array(_TOKEN)),
    "DeleteTokenAnswer": obj(("token", "status"), token=_TOKEN, status=STRING),
    "NewExecutionsAnswer": obj(("activityName", "executionIds", "count"), activityName=STRING,
                               executionIds=array(INT), count=INT, duplicate=BOOL),
    "ResultsAnswer": obj(("executions",),
                         "By ids: executions, pending, notFound, deferred. By activity: executions, more.",
                         executions=array(ref("Execution")),
                         pending=array(obj(("id", "status"), id=INT, status=STRING)),
                         notFound=array(INT), deferred=array(INT), more=BOOL),
    "Status": obj(("node", "role", "leader", "httpUrl", "raftAddress", "peers", "slots", "executions", "activities",
                   "version", "pid", "uptimeSeconds", "spendPerHour", "spentSoFar"),
                  node=STRING, role={"enum": ["follower", "candidate", "leader", "observer"]},
                  leader=nullable("string"), term=nullable("integer"), commitIndex=nullable("integer"),
                  lastApplied=nullable("integer"), hasQuorum=nullable("boolean"), httpUrl=STRING,
                  raftAddress=STRING,
                  peers=array(obj(("id", "address", "connected"), id=nullable("string"), address=STRING,
                                  connected=BOOL)),
                  slots=obj(("total", "busy"), total=INT, busy=INT), executions=array({"type": "object"}),
                  activities={"type": "object", "additionalProperties": STRING}, version=STRING, pid=INT,
                  uptimeSeconds=NUMBER, lastPlan={"type": "object"}, scaling={"type": "object"},
                  spendPerHour=NUMBER, spentSoFar=NUMBER),
    "Health": obj(("ok", "role"), ok=BOOL, role=STRING),
}
