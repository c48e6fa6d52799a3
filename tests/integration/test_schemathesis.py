"""schemathesis against a live 3-node cluster: every operation of /openapi.json, generated inputs (that fit the
schema, and a few that do not), checks: no server error, the status code is documented, the answer is JSON and
conforms to the documented schema.

Bounded: a few examples per operation (derandomized: the same inputs every run), no deadline, and generated
inputs tamed where they would reach outside the test or take long (see `tame`):
- an install script URL the node would fetch (http, https, file) is replaced by a missing script on a loopback
  server: the network is closed, and a node must send nothing to another address; the install then fails at
  once and the activity is rejected, which is what such a URL gives anyway;
- `wait` is at most WAIT_CAP_S: a node caps it at 60 s, and a wait on an activity or execution that never
  ends would hold the run that long;
- deleteToken never names the token this run uses, and drainWorker never names a node of this cluster (the
  node would leave, and the operations after it would fail to connect). Both are exercised deliberately at the
  end instead, on a token and a node made or kept for it, with the same checks.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from podnode.api.openapi import document
from podnode.local.cluster import get_json

from ..conftest import Client, approved, install_script

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
POSITIVE_EXAMPLES = 15    # per operation
NEGATIVE_EXAMPLES = 5     # per operation: inputs that do not fit the schema
WAIT_CAP_S = 0.3
RUN_TOKEN = "schemathesis-run"
URL_SCHEMES = ("http", "https", "file")
OPEN_PATHS = ("/health", "/openapi.json")


@pytest.fixture(scope="module")
def run(cluster, scripts):
    """The run's own admin token, an approved activity with a few ended executions (what the examples name)."""
    admin = Client(cluster.urls, cluster.token)
    token = admin.ok("newToken", name=RUN_TOKEN, scope="admin")["token"]["token"]
    client = Client(cluster.urls, token)
    approved(client, "greet", scripts.add("st-greet.sh", install_script('echo "hello $1"')))
    for i in range(3):
        client.ok("newExecution", name="greet", input=f"w{i}")
    return {"token": token, "client": client, "missing_script": scripts.url("st-missing.sh"),
            "nodes": {n.node_id for n in cluster.nodes}}


def _params(case) -> dict[str, Any] | None:
    """The case's parameters: its query (GET) or its body (POST), when a mapping."""
    if case.method.upper() == "GET":
        return case.query
    return case.body if isinstance(case.body, dict) else None


def _tame_url(url: Any, run: dict[str, Any]) -> Any:
    """A URL a node would fetch becomes the missing script on loopback; anything else stays as generated."""
    if isinstance(url, str) and urllib.parse.urlsplit(url.strip()).scheme.lower() in URL_SCHEMES:
        return run["missing_script"]
    return url


def _tame_wait(wait: Any, run: dict[str, Any]) -> Any:
    """A wait over WAIT_CAP_S seconds becomes WAIT_CAP_S; anything else stays as generated."""
    try:
        if not isinstance(wait, bool) and float(wait) > WAIT_CAP_S:
            return WAIT_CAP_S
    except (TypeError, ValueError):
        pass
    return wait


def tame(case, run: dict[str, Any]) -> None:
    """Keep a generated case inside the test and its time (see the module's docstring)."""
    if case.path.endswith("/stream") and case.method.upper() == "GET":   # what is there now: never a wait
        if case.query is None:
            case.query = {}
        if case.query.get("follow") in (None, "1"):
            case.query["follow"] = "0"
    params = _params(case)
    if not params:
        return
    for key, tamer in (("installationScriptLocation", _tame_url), ("wait", _tame_wait)):
        if key in params:   # a list: a query parameter given several times (inputs that do not fit the schema)
            value = params[key]
            params[key] = [tamer(v, run) for v in value] if isinstance(value, list) else tamer(value, run)
    action = case.path.rsplit("/", 1)[-1]
    if action == "deleteToken":   # never the run's own token, whatever shape the value has
        name = params.get("name")
        if name == RUN_TOKEN:
            params["name"] = RUN_TOKEN + "-not"
        elif isinstance(name, list):
            params["name"] = [RUN_TOKEN + "-not" if n == RUN_TOKEN else n for n in name]
    if action == "drainWorker":   # any value: a generated one may be a list (given several times) or an object
        worker = params.get("workerId")
        if isinstance(worker, str) and worker in run["nodes"]:
            params["workerId"] = f"{worker}-not"
        elif isinstance(worker, list):
            params["workerId"] = [f"{w}-not" if isinstance(w, str) and w in run["nodes"] else w for w in worker]


def exercise(strategy, examples: int, base_url: str, run: dict[str, Any], seen: dict[int, int]) -> None:
    """Send `examples` cases drawn from the strategy (the same ones every run) and check each answer."""
    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def one(case):
        tame(case, run)
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {run['token']}"}, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)
    one()


def exercise_operation(schema, operation, base_url: str, run: dict[str, Any], seen: dict[int, int]) -> None:
    """The documented examples, then generated inputs that fit the schema, then a few that do not."""
    for strategy in schema.get_strategies_from_examples(operation):
        exercise(strategy, 1, base_url, run, seen)
    exercise(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), POSITIVE_EXAMPLES, base_url, run, seen)
    if operation.path not in OPEN_PATHS:
        exercise(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), NEGATIVE_EXAMPLES, base_url, run,
                 seen)


def test_every_operation_against_a_live_cluster(cluster, run):
    doc_code, served = get_json(f"{cluster.urls[0]}/openapi.json")   # open: no token
    assert doc_code == 200 and served == document()
    schema = schemathesis.openapi.from_dict(served)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in served["paths"].values())
    # The ones that delete or drain last, so that the others meet the activity, tokens and policies made.
    operations.sort(key=lambda op: (op.path.rsplit("/", 1)[-1].startswith(("delete", "reset", "drain")), op.path))
    # GET /status/feed sends a summary a second for 60 s whatever it is asked: the browser tests (tests/browser)
    # read it; here it would only cost a minute an example.
    endless = [op for op in operations if op.path == "/status/feed"]
    assert len(endless) == 1
    started, seen = time.monotonic(), {}
    for n, operation in enumerate(op for op in operations if op not in endless):
        exercise_operation(schema, operation, cluster.urls[n % len(cluster.urls)], run, seen)
    print(f"schemathesis: {len(operations)} operations in {time.monotonic() - started:.1f} s; answers {seen}")
    assert seen.get(200) and seen.get(400) and seen.get(404), seen   # both sides were reached


def test_the_destructive_operations_deliberately(cluster, run):
    """deleteToken and drainWorker on what they may take: a token made for it, the last node (last: the
    cluster has two nodes after it). Their answers checked as in the run."""
    schema = schemathesis.openapi.from_dict(document())
    client = run["client"]
    client.ok("newToken", name="st-doomed", scope="read")
    for path, params in (("/POD/deleteToken", {"name": "st-doomed"}), ("/POD/drainWorker", {"workerId": "n3"})):
        case = schema[path]["POST"].Case(body=params, media_type="application/x-www-form-urlencoded")
        response = case.call(base_url=cluster.urls[0], headers={"Authorization": f"Bearer {run['token']}"})
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 200, response.text
    assert "st-doomed" not in {t["name"] for t in client.ok("getTokens")["tokens"]}


def test_the_run_finds_an_answer_that_does_not_conform(cluster, run):
    """The checks can fail: with a document whose /health answer needs a field it lacks, the run fails."""
    doc = document()
    doc["components"]["schemas"]["Health"]["required"].append("notThere")
    schema = schemathesis.openapi.from_dict(doc)
    with pytest.raises(FailureGroup) as failed:
        exercise(schema["/health"]["GET"].as_strategy(), 1, cluster.urls[0], run, {})
    assert any("notThere" in str(e) for e in failed.value.exceptions), failed.value.exceptions


def test_the_path_names_the_same_action_as_the_query(cluster, run):
    """/POD/NAME is /POD/?action=NAME: same answer; a different action in the parameters is refused, an unknown
    NAME is a 404; both need the token."""
    url, token = cluster.urls[1], run["token"]
    by_path = get_json(f"{url}/POD/getTokens", token=token)
    by_query = get_json(f"{url}/POD/?action=getTokens", token=token)
    assert by_path[0] == by_query[0] == 200 and by_path[1] == by_query[1]
    assert RUN_TOKEN in {t["name"] for t in by_path[1]["tokens"]}
    code, body = get_json(f"{url}/POD/getTokens", token=token, data=f"action=deleteToken&name={RUN_TOKEN}".encode())
    assert code == 400 and "deleteToken" in body["error"], body
    assert get_json(f"{url}/POD/getTokens?action=getTokens", token=token)[0] == 200   # the run token still works
    code, body = get_json(f"{url}/POD/noSuchAction", token=token)
    assert code == 404 and "noSuchAction" in body["error"], body
    assert get_json(f"{url}/POD/getTokens")[0] == 401
    assert get_json(f"{url}/openapi.json")[0] == 200   # open, like /health
