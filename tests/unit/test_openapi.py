"""/openapi.json is a valid OpenAPI 3.1 document of every action, generated from the definitions the handlers
parse their parameters through (api/spec.py): each parser reads only its own parameter, each handler reads
exactly the parameters its action declares, and the document says what the definitions say."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from collections.abc import Iterator, Mapping

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from podnode import tokens as T
from podnode.api.actions import ACTIONS, HANDLERS
from podnode.api.openapi import document
from podnode.api.schemas import ANSWERS
from podnode.api.spec import COMMON_ERRORS, SPECS, SPECS_LIST, ActionSpec, Param
from podnode.config import NodeConfig
from podnode.errors import BadRequest

CFG = NodeConfig(node_id="n1")
PARAMS = [(spec, p) for spec in SPECS_LIST for p in spec.params]
PARAM_IDS = [f"{spec.name}.{p.name}" for spec, p in PARAMS]


class Recording(Mapping):
    """Request parameters that record which keys are read (iterating them counts as reading every one)."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        self.read.add("*")
        return iter(self.values)

    def __len__(self) -> int:
        self.read.add("*")
        return len(self.values)


def as_sent(value) -> str:
    """An example as a query or a form carries it."""
    return value if isinstance(value, str) else json.dumps(value)


def examples(spec: ActionSpec) -> dict[str, str]:
    return {p.name: as_sent(p.example) for p in spec.params}


# Every GET route a node serves besides the actions, its peers' /internal/ routes and the status page's files.
NODE_ROUTES = {"/status", "/health", "/openapi.json", "/POD/executions/{id}/stream", "/metrics", "/status/summary",
               "/status/feed"}


def problems(doc: dict) -> list:
    """What openapi-spec-validator finds wrong with a document (a $ref to nowhere raises instead)."""
    try:
        return [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    except Exception as exc:  # noqa: BLE001 - the validator's own error for what it cannot resolve
        return [repr(exc)[:200]]


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert problems(doc) == []
    schema = schemathesis.openapi.from_dict(doc)
    loaded = [result.ok() for result in schema.get_all_operations()]   # .ok() raises on one it cannot load
    assert len(loaded) == 2 * len(ACTIONS) + len(NODE_ROUTES)


def test_a_broken_document_is_refused_by_the_validator():
    """The validation above can fail: a parameter without its schema, a dangling $ref are reported."""
    doc = document()
    del doc["paths"]["/POD/newExecution"]["get"]["parameters"][0]["schema"]
    assert problems(doc)
    doc = document()
    doc["paths"]["/POD/getWorkers"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchThing"}
    assert problems(doc)


def test_every_action_is_documented_at_its_path_for_get_and_post():
    doc = document()
    assert set(SPECS) == set(ACTIONS) == set(HANDLERS)
    assert set(doc["paths"]) == {f"/POD/{name}" for name in ACTIONS} | NODE_ROUTES
    for name in ACTIONS:
        item = doc["paths"][f"/POD/{name}"]
        assert set(item) == {"get", "post"}, name
        for op in item.values():
            assert op["x-pod-scope"] == T.action_scope(name) == SPECS[name].scope
            assert op["security"] == [{"bearerToken": [T.action_scope(name)]}]
            assert {int(c) for c in op["responses"]} == {200, *COMMON_ERRORS, *SPECS[name].errors}
            assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{SPECS[name].answer}"}
    assert doc["paths"]["/health"]["get"]["security"] == [] == doc["paths"]["/openapi.json"]["get"]["security"]
    assert doc["paths"]["/status"]["get"]["security"] == [{"bearerToken": [T.STATUS_SCOPE]}]


def test_every_action_has_its_scope_in_the_scope_table():
    """None falls to the default (admin) for want of an entry: its scope is a decision, written down."""
    assert set(T.ACTION_SCOPES) == set(ACTIONS)


def test_the_parameters_documented_are_the_definitions():
    doc = document()
    for spec in SPECS_LIST:
        item = doc["paths"][f"/POD/{spec.name}"]
        query = [(q["name"], q["in"], q["required"], q["schema"]) for q in item["get"]["parameters"]]
        assert query == [(p.name, "query", p.required, p.schema) for p in spec.params], spec.name
        if not spec.params:
            assert "requestBody" not in item["post"]
            continue
        content = item["post"]["requestBody"]["content"]
        for media, json_body in (("application/x-www-form-urlencoded", False), ("application/json", True)):
            body = content[media]["schema"]
            assert list(body["properties"]) == [p.name for p in spec.params]
            assert body.get("required", []) == [p.name for p in spec.params if p.required]
            for p in spec.params:
                wanted = p.json_schema if json_body and p.json_schema is not None else p.schema
                documented = body["properties"][p.name]
                assert {k: v for k, v in documented.items() if k not in ("description", "examples")} == wanted
                for example in documented["examples"]:   # the body's example fits the body's schema
                    Draft202012Validator(wanted).validate(example)


def test_every_answer_and_error_refers_to_a_defined_schema():
    doc = document()
    text = json.dumps(doc)
    for kind in ("schemas", "responses"):
        refs = {m.rsplit("/", 1)[1] for m in text.split('"') if m.startswith(f"#/components/{kind}/")}
        assert refs and refs <= set(doc["components"][kind]), kind
    for code, answer in doc["components"]["responses"].items():
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, code
    assert {spec.answer for spec in SPECS_LIST} <= set(ANSWERS)


@pytest.mark.parametrize("spec, param", PARAMS, ids=PARAM_IDS)
def test_each_parser_reads_only_its_own_parameter_and_takes_its_example(spec: ActionSpec, param: Param):
    given = Recording(examples(spec))
    param.parse(given, CFG)
    assert given.read <= {param.name} and given.read, f"{spec.name}.{param.name} read {sorted(given.read)}"
    # The example fits the documented schema (the form a query carries, or a JSON body's).
    Draft202012Validator(param.schema).validate(param.example)


@pytest.mark.parametrize("spec, param", PARAMS, ids=PARAM_IDS)
def test_a_required_parameter_is_refused_when_missing_and_an_optional_one_is_not(spec: ActionSpec, param: Param):
    others = {k: v for k, v in examples(spec).items() if k != param.name}
    if param.required:
        with pytest.raises(BadRequest, match=param.name):
            param.parse(others, CFG)
        with pytest.raises(BadRequest, match=param.name):
            spec.parse(others, CFG)
    else:
        param.parse(others, CFG)
        assert param.name in spec.parse(others, CFG)


@pytest.mark.parametrize("spec", SPECS_LIST, ids=[s.name for s in SPECS_LIST])
def test_the_examples_parse_and_nothing_else_is_read(spec: ActionSpec):
    given = Recording({**examples(spec), "action": spec.name, "undeclared": "x"})
    args = spec.parse(given, CFG)
    assert set(args) == {p.name for p in spec.params}
    assert given.read <= {p.name for p in spec.params}


def _arg_reads(handler) -> tuple[set[str], list[str]]:
    """The keys a handler reads from its parsed parameters (its second argument), and every other use of them
    (passing them on whole, .get, iterating), which would hide what it reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    func = tree.body[0]
    assert isinstance(func, ast.AsyncFunctionDef), handler
    args_name = func.args.args[1].arg
    parents = {child: node for node in ast.walk(func) for child in ast.iter_child_nodes(node)}
    keys, other = set(), []
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id == args_name:
            parent = parents[node]
            if isinstance(parent, ast.Subscript) and parent.value is node and \
                    isinstance(parent.slice, ast.Constant) and isinstance(parent.slice.value, str):
                keys.add(parent.slice.value)
            else:
                other.append(ast.unparse(parent))
    return keys, other


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_each_handler_reads_exactly_the_parameters_its_action_declares(name: str):
    keys, other = _arg_reads(HANDLERS[name])
    assert other == [], f"{name} uses its parameters other than by a literal key: {other}"
    assert keys == {p.name for p in SPECS[name].params}, f"{name} reads {sorted(keys)}"


def test_the_handler_check_sees_an_undeclared_read():
    """The check above can fail: a handler reading a key, or passing its parameters on, is seen."""
    async def reads_more(node, a):
        return {"x": a["name"], "y": a["follow"], "z": helper(a)}

    def helper(a):
        return a
    keys, other = _arg_reads(reads_more)
    assert keys == {"name", "follow"} and other == ["helper(a)"]


def _value_strategy(schema: dict):
    """Values the schema allows, for the kinds of schema whose every value the parser must take (None: a schema
    whose values the parser may refuse, e.g. a URI of another scheme, or JSON text)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("type") == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if schema.get("type") == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    pattern = schema.get("pattern", "")
    if schema.get("type") == "string" and pattern.startswith("^") and pattern.endswith("$") and "|" not in pattern:
        return st.from_regex(pattern[1:-1], fullmatch=True)
    return None


CHECKED = [(spec, p) for spec, p in PARAMS if _value_strategy(p.schema) is not None]


@pytest.mark.parametrize("spec, param", CHECKED, ids=[f"{s.name}.{p.name}" for s, p in CHECKED])
def test_every_value_the_schema_allows_is_accepted(spec: ActionSpec, param: Param):
    """What the document promises, the parser keeps: a value the schema allows, as str() or JSON writes it
    (a query's text, a JSON body's number), is accepted, and a number keeps its value (wait and deadline are
    capped, not refused)."""
    @given(_value_strategy(param.schema), st.sampled_from([str, json.dumps]))
    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    def check(value, write):
        sent = value if isinstance(value, str) else write(value)
        parsed = param.parse({param.name: sent}, CFG)
        if isinstance(value, (int, float)) and param.name not in ("wait", "deadline"):
            assert parsed == value
    check()
