"""No request gets a 5xx (but 503) and every error is JSON: malformed requests against a real node process.

A property-based test sends every action with random parameter names, values and encodings (GET query,
urlencoded and multipart POST, broken multipart, raw bytes, cut-off bodies, huge request lines and headers)
over a raw socket; plain tests below pin the exact answer to each case issue 8 names. Afterwards the node
has changed nothing and still runs an execution end to end.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnode.api.actions import ACTIONS
from podnode.api.protocol import MAX_HEADER_BYTES, request_limits
from podnode.config import NodeConfig

from ..conftest import Client, approved, install_script, start_cluster, wait_until

pytestmark = pytest.mark.integration

LINE_CAP = request_limits(NodeConfig(node_id="x").max_input_bytes)["max_line_size"]
# The parameters each action reads (test_every_action_is_fuzzed keeps this in step with ACTIONS).
ACTION_PARAMS = {
    "newActivity": ["name", "installationScriptLocation", "maxAttempts", "timeoutS", "memoryMB", "maxProcesses"],
    "getActivityStatus": ["name"],
    "deleteActivity": ["name"], "newExecution": ["name", "input", "requestId"],
    "getExecutionStatus": ["executionId", "wait"], "terminateExecution": ["executionId"], "getAllExecutions": [],
    "newPolicy": ["name", "rules"], "deletePolicy": ["name"], "applyPolicy": ["name"], "getActivePolicy": [],
    "getPolicies": [], "resetPolicies": [], "getWorkers": [], "drainWorker": ["workerId", "deadline"],
    "newToken": ["name", "scope"], "getTokens": [], "deleteToken": ["name"],
    "newExecutions": ["name", "inputs", "requestId"],
    "getExecutionResults": ["executionIds", "activity", "limit", "wait"],
}
TOKEN = b"@TOKEN@"   # in a generated request: the node's admin token, put in by send()
# The Authorization header of a generated request: mostly the valid token, else missing or broken.
AUTHS = [b"Bearer " + TOKEN] * 8 + [b"", b"Bearer", b"Basic YTpi", b"Bearer pod_00000000_" + b"x" * 43,
                                    b"Bearer \xc3\xa9\xff\x00", b"bearer " + TOKEN + b"x", b"Bearer " + b"p" * 5000]
PARAM_NAMES = sorted({"action", "raftAddr", "members", *(p for ps in ACTION_PARAMS.values() for p in ps)})
NASTY = ["", " ", "\x00", "../status", "..", "/", "%", "%ff", "a" * 65, "-1", "0", "1e400", "nan", "inf",
         "99999999999999999999", "²", "٣", "1_0", " 7", "+1", "0x10", "\u202e", "\ud800", "\\ud800", "😀", "a b",
         "name=x&action=y", "\r\nX-A: b", "'\"<>", "1,2", "minWorkers=", "=", ",,"]
NODE_IDS = {"n1"}


class Answer:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1]) if lines and lines[0].startswith(b"HTTP/") else None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.decode("latin-1").partition(":") for line in lines[1:])}

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


def exchange(url: str, data: bytes, *, timeout_s: float = 10.0, close_after_send: bool = False) -> Answer | None:
    """Send raw bytes to the node and read what comes back until it closes the connection (None: nothing)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
        except OSError:   # it answered and closed while we were still sending a huge request
            pass
        if close_after_send:  # a body cut off: the client is gone, there is nobody to answer
            return None
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    return Answer(raw) if raw else None


def request(method: str, target: bytes, *, headers: list[tuple[bytes, bytes]] = (), body: bytes = b"",
            auth: bytes = b"Bearer " + TOKEN) -> bytes:
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [b"Authorization: " + auth] if auth else []
    head += [k + b": " + v for k, v in headers]
    if body or method == "POST":
        head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def urlencode(params: list[tuple[bytes, bytes]]) -> bytes:
    return b"&".join(urllib.parse.quote_from_bytes(k).encode() + b"=" + urllib.parse.quote_from_bytes(v).encode()
                     for k, v in params)


# Flaws of the first part: its Content-Disposition, an extra part header, or its value.
_DISPOSITION_FLAWS = {"empty_name": b'form-data; name=""', "no_name": b"form-data",
                      "nul_name": b'form-data; name="a\x00b"'}
_PART_HEADER_FLAWS = {"bad_charset": b"Content-Type: text/plain; charset=nope",
                      "bad_transfer_encoding": b"Content-Transfer-Encoding: nope",
                      "nested": b"Content-Type: multipart/mixed; boundary=inner"}
# Flaws of the request's Content-Type.
_CONTENT_TYPE_FLAWS = {"no_boundary": b"multipart/form-data", "wrong_boundary": b"multipart/form-data; boundary=other"}


def multipart(params: list[tuple[bytes, bytes]], flaw: str, boundary: bytes = b"fuzzB0undary") -> tuple[bytes, bytes]:
    """(Content-Type, body) of a multipart/form-data POST, with one flaw of the kinds a client gets wrong."""
    parts = []
    for i, (k, v) in enumerate(params):
        disposition = b'form-data; name="' + k.replace(b'"', b"") + b'"'
        if i == 0:  # the flawed part
            disposition = _DISPOSITION_FLAWS.get(flaw, disposition) + (b'; filename="f.txt"' if flaw == "file" else b"")
            v = b"\xff\xfe" + v if flaw == "non_utf8" else v
        headers = [b"Content-Disposition: " + disposition]
        if i == 0 and flaw in _PART_HEADER_FLAWS:
            headers.append(_PART_HEADER_FLAWS[flaw])
        parts.append(b"--" + boundary + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + v)
    body = b"\r\n".join(parts) + b"\r\n--" + boundary + b"--\r\n"
    if flaw == "cut":
        body = body[: max(1, len(body) // 2)]
    return _CONTENT_TYPE_FLAWS.get(flaw, b"multipart/form-data; boundary=" + boundary), body


def _safe(value: str) -> bool:
    """A value that cannot make a request valid by chance: no install-script URL, no real node id."""
    return not re.match(r"\s*(file|https?):", value, re.I) and value not in NODE_IDS and value != "admin"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=40), st.integers().map(str)).filter(_safe)
values = st.one_of(texts.map(_utf8), st.binary(max_size=20).filter(lambda b: _safe(b.decode("latin-1"))))
names = st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=12)).map(_utf8)
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=8)
FLAWS = ["none", "empty_name", "no_name", "nul_name", "non_utf8", "bad_charset", "bad_transfer_encoding", "nested",
         "file", "cut", "no_boundary", "wrong_boundary"]


@st.composite
def malformed_requests(draw) -> tuple[str, bytes, bool]:
    """(what, bytes to send, close right after sending), with a valid token (mostly) or a missing or broken one."""
    how, data, close = _malformed(draw)
    auth = draw(st.sampled_from(AUTHS))
    valid = b"Authorization: Bearer " + TOKEN + b"\r\n"
    return how, data.replace(valid, b"Authorization: " + auth + b"\r\n" if auth else b"", 1), close


def _malformed(draw) -> tuple[str, bytes, bool]:
    action = draw(st.one_of(st.sampled_from(sorted(ACTIONS)), texts))
    own = [(_utf8(p), draw(values)) for p in ACTION_PARAMS.get(action, []) if draw(st.booleans())]
    params = [(b"action", _utf8(action))] + own + draw(st.lists(st.tuples(names, values), max_size=3))
    params = draw(st.permutations(params))
    how = draw(st.sampled_from(["get", "urlencoded", "multipart", "raw", "cut_body", "long_line", "long_header",
                                "many_headers", "charset", "json"]))
    query = urlencode(params)
    if how == "get":
        return how, request(draw(st.sampled_from(["GET", "POST", "PUT", "HEAD"])), b"/POD/?" + query), False
    if how == "urlencoded":
        ctype = b"application/x-www-form-urlencoded"
        return how, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=query), False
    if how == "json":   # a JSON object body (newExecutions' form): members of any JSON type, or not an object
        members = {k.decode("utf-8", "replace"): draw(json_values) for k, _ in params}
        body = draw(st.sampled_from([json.dumps(members).encode()] * 4 + [b"", b"{", b"[1]", b"null", b'"x"',
                                                                          b"\xff\xfe{}", b"[" * 5000]))
        ctype = b"application/json" + draw(st.sampled_from([b"", b"; charset=utf-8", b"; charset=nope"]))
        return how, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=body), False
    if how == "charset":
        ctype = b"application/x-www-form-urlencoded; charset=" + draw(st.sampled_from([b"nope", b"latin-1", b"utf-16",
                                                                                     b"ascii", b"unicode_escape",
                                                                                     b"rot13", b"hex"]))
        body = b"&".join(k + b"=" + v for k, v in params)   # not even percent-encoded
        return how, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=body), False
    if how == "multipart":
        ctype, body = multipart(params, draw(st.sampled_from(FLAWS)))
        return how, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=body), False
    if how == "raw":
        return how, draw(st.binary(min_size=1, max_size=200)) + b"\r\n\r\n", False
    if how == "cut_body":
        full = request("POST", b"/POD/", headers=[(b"Content-Type", b"application/x-www-form-urlencoded")],
                       body=query + b"&input=" + b"x" * 100)
        return how, full[: draw(st.integers(1, len(full) - 1))], True
    if how == "long_line":
        size = draw(st.integers(LINE_CAP - 100, LINE_CAP + 30000))
        return how, request("GET", b"/POD/?" + query + b"&input=" + b"x" * size), False
    if how == "long_header":
        size = draw(st.integers(MAX_HEADER_BYTES - 100, MAX_HEADER_BYTES + 30000))
        return how, request("GET", b"/POD/?" + query, headers=[(b"X-Fuzz", b"h" * size)]), False
    count = draw(st.integers(100, 300))
    return how, request("GET", b"/POD/?" + query, headers=[(b"X-F%d" % i, b"1") for i in range(count)]), False


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("fuzz"), nodes=1, slots=1)
    try:
        yield cluster
    finally:
        cluster.stop()


def node_log(cluster) -> str:
    return (cluster.log_dir / "n1.log").read_text(errors="replace")


def cluster_state(client: Client, url: str) -> dict:
    """What a malformed request must not change."""
    status = json.loads(exchange(url, request("GET", b"/status").replace(TOKEN, client.token.encode())).body)
    return {"executions": client.ok("getAllExecutions")["executions"], "policies": client.ok("getPolicies"),
            "active": client.ok("getActivePolicy"), "activities": status["activities"],
            "workers": [(w["id"], w["status"]) for w in client.ok("getWorkers")["workers"]],
            "tokens": client.ok("getTokens")}


def check_answer(what: str, data: bytes, answer: Answer | None) -> None:
    if answer is None:
        return
    assert answer.status is not None, (what, answer)
    assert answer.status < 500 or answer.status == 503, (what, answer)
    assert answer.headers.get("content-type", "").startswith("application/json"), (what, answer)
    if data.startswith(b"HEAD "):   # headers only
        return
    body = answer.json()
    if answer.status >= 400:
        assert isinstance(body.get("error"), str) and body["error"], (what, answer)


def test_every_action_is_fuzzed():
    assert set(ACTION_PARAMS) == set(ACTIONS)


def round_trip(client: Client, scripts, name: str) -> None:
    """A new activity installs, and an execution of it runs and is read: the node works."""
    approved(client, name, scripts.add(f"{name}.sh", install_script('echo "ok $1"')))
    exec_id = client.ok("newExecution", name=name, input="there")["execution"]["id"]
    done = client.ok("getExecutionStatus", executionId=exec_id, wait=20)["execution"]
    assert done["status"] == "finished" and done["stdout"] == "ok there\n", done


def test_fuzzed_requests_get_no_5xx_and_json_errors_and_change_nothing(node, scripts):
    url = node.urls[0]
    client = Client(node.urls, node.token)
    before = cluster_state(client, url)
    seen: dict[str, int] = {}

    @settings(max_examples=800, deadline=8000, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(malformed_requests())
    def one(case):
        what, data, close_after_send = case
        answer = exchange(url, data.replace(TOKEN, client.token.encode()), close_after_send=close_after_send,
                          timeout_s=5.0)
        check_answer(what, data, answer)
        key = f"{what} {answer.status if answer else '-'}"
        seen[key] = seen.get(key, 0) + 1

    started = time.monotonic()
    one()
    took = time.monotonic() - started
    print(f"fuzz: {sum(seen.values())} requests in {took:.1f} s: {dict(sorted(seen.items()))}")
    assert cluster_state(client, url) == before
    log = node_log(node)
    assert "unhandled error" not in log and "error handling a request" not in log, log[-3000:]
    assert any(k.startswith("long_line 414") for k in seen) and any(k.startswith("long_header 431") for k in seen)
    round_trip(client, scripts, "fuzzed")


# ---- each case the issue names -----------------------------------------------------------------------
def ask(node, data: bytes) -> tuple[int, dict]:
    answer = exchange(node.urls[0], data.replace(TOKEN, node.token.encode()))
    assert answer is not None
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    return answer.status, answer.json()


def post_multipart(node, params: list[tuple[bytes, bytes]], flaw: str) -> tuple[int, dict]:
    ctype, body = multipart(params, flaw)
    return ask(node, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=body))


@pytest.mark.parametrize("flaw, why", [
    ("empty_name", "Missing parameter 'action'"), ("no_name", "missing name"), ("nul_name", "Invalid HTTP header"),
    ("non_utf8", "can't decode"), ("cut", "Malformed multipart/form-data body"), ("no_boundary", "boundary"),
    ("bad_charset", "nope"), ("bad_transfer_encoding", "nope"), ("nested", "nested multipart"),
])
def test_a_broken_multipart_body_is_a_400_saying_why(node, flaw, why):
    code, body = post_multipart(node, [(b"action", b"newPolicy"), (b"name", b"mp"), (b"rules", b"minWorkers=1")], flaw)
    assert code == 400 and why in body["error"], body
    assert Client(node.urls, node.token).ok("getPolicies") == {"policies": []}


def test_a_multipart_part_with_an_empty_name_is_ignored_when_the_body_is_sound(node):
    params = [(b"", b"x"), (b"action", b"getActivePolicy")]
    ctype, body = multipart(params, "none")
    code, answer = ask(node, request("POST", b"/POD/", headers=[(b"Content-Type", ctype)], body=body))
    assert code == 200 and answer == {"policy": None}


def test_a_urlencoded_body_not_in_its_charset_is_a_400(node):
    form = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    code, body = ask(node, request("POST", b"/POD/", headers=form, body=b"action=getWorkers&name=\xff"))
    assert code == 400 and "can't decode" in body["error"]
    form = [(b"Content-Type", b"application/x-www-form-urlencoded; charset=nope")]
    code, body = ask(node, request("POST", b"/POD/", headers=form, body=b"action=getWorkers"))
    assert code == 400 and "unknown encoding" in body["error"]


def test_a_parameter_that_is_not_unicode_text_is_a_400(node):
    """A form body in a charset that can spell a lone surrogate (\\ud800 in unicode_escape)."""
    form = [(b"Content-Type", b"application/x-www-form-urlencoded; charset=unicode_escape")]
    code, body = ask(node, request("POST", b"/POD/", headers=form,
                                   body=b"action=newExecution&name=nan&input=\\ud800"))
    assert code == 400 and "'input' is not valid Unicode" in body["error"], body


def test_a_body_that_does_not_decompress_is_a_400(node):
    headers = [(b"Content-Type", b"application/x-www-form-urlencoded"), (b"Content-Encoding", b"gzip")]
    code, body = ask(node, request("POST", b"/POD/", headers=headers, body=b"action=getWorkers"))
    assert code == 400 and "gzip" in body["error"]


def test_a_cut_off_body_leaves_the_node_serving(node):
    full = request("POST", b"/POD/?action=newPolicy", headers=[(b"Content-Type", b"application/x-www-form-urlencoded")],
                   body=b"name=cut&rules=minWorkers%3D1")
    noticed = "closed the connection before sending the whole request"
    before = node_log(node).count(noticed)
    full = full.replace(TOKEN, node.token.encode())
    assert exchange(node.urls[0], full[:-5], close_after_send=True) is None
    wait_until(lambda: node_log(node).count(noticed) > before, what="the node to notice the cut-off body")
    assert Client(node.urls, node.token).ok("getPolicies") == {"policies": []}
    assert "unhandled error" not in node_log(node) and "error handling a request" not in node_log(node)


@pytest.mark.parametrize("query", [b"action=getExecutionStatus&executionId=%C2%B2",      # '²'.isdigit()
                                   b"action=terminateExecution&executionId=%D9%A3",    # Arabic-Indic 3
                                   b"action=newActivity&name=sq&installationScriptLocation=http://x/"
                                   b"&maxAttempts=%C2%B2"])
def test_a_number_in_other_digits_is_a_400(node, query):
    code, body = ask(node, request("GET", b"/POD/?" + query))
    assert code == 400 and "whole number" in body["error"], body


@pytest.mark.parametrize("action", ["../status", "../../status", "/status", "getWorkers/..", "%2e%2e%2fstatus"])
def test_an_action_that_is_a_path_is_an_unknown_action(node, action):
    code, body = ask(node, request("GET", b"/POD/?action=" + action.encode()))
    assert code == 400 and "Unknown action" in body["error"], body


def test_a_request_line_over_the_limit_is_a_json_414(node):
    code, body = ask(node, request("GET", b"/POD/?action=newExecution&name=x&input=" + b"x" * LINE_CAP))
    assert code == 414 and str(LINE_CAP) in body["error"] and "POST" in body["error"]


def test_a_header_over_the_limit_is_a_json_431(node):
    big = [(b"X-Big", b"h" * (MAX_HEADER_BYTES + 1))]
    code, body = ask(node, request("GET", b"/POD/?action=getWorkers", headers=big))
    assert code == 431 and str(MAX_HEADER_BYTES) in body["error"]
    code, body = ask(node, request("GET", b"/POD/?action=getWorkers", headers=[(b"X" * (MAX_HEADER_BYTES + 1), b"1")]))
    assert code == 431


def test_too_many_headers_and_garbage_are_json_400s(node):
    many = [(b"X-H%d" % i, b"1") for i in range(300)]
    code, body = ask(node, request("GET", b"/POD/?action=getWorkers", headers=many))
    assert code == 400 and "Too many headers" in body["error"]
    code, body = ask(node, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")   # TLS on the HTTP port
    assert code == 400 and body["error"].startswith("malformed HTTP request")
    chunked = [(b"Transfer-Encoding", b"chunked")]
    code, body = ask(node, request("GET", b"/POD/?action=getWorkers", headers=chunked) + b"zz\r\n")
    assert code == 400 and "chunk" in body["error"]


def test_unknown_paths_and_methods_are_json(node):
    assert ask(node, request("GET", b"/nope")) == (404, {"error": "Not Found"})
    assert ask(node, request("DELETE", b"/POD/?action=getWorkers")) == (405, {"error": "Method Not Allowed"})


def test_policy_names_follow_the_activity_name_rule(node):
    client = Client(node.urls, node.token)
    for bad in ["../x", "", "-a", "a" * 65, "a b", "a\x00"]:
        code, body = client.call("newPolicy", name=bad, rules="minWorkers=1")
        assert code == 400 and ("name" in body["error"]), (bad, body)
    assert client.ok("getPolicies") == {"policies": []}


def test_the_node_still_works_after_every_case(node, scripts):
    round_trip(Client(node.urls, node.token), scripts, "cases")
