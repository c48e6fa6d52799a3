"""Who may call the API, tried from outside against real node processes: no token, a wrong one, a broken
header, too narrow a scope, a deleted token, another site's page, HEAD; each refusal changes nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from podnode import tokens as T
from podnode.local.cluster import get_json
from podnode.local.procs import free_ports

from ..conftest import FAST_RAFT, Client, start_cluster, wait_until
from ..integration.test_cli import pod

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("auth"), nodes=3, slots=1,
                      extra_args=[*FAST_RAFT, "--allow-origin", "https://allowed.example"])
    yield c
    c.stop()


def call(url: str, action: str, token: str | None, headers: dict | None = None, **params) -> tuple[int, dict]:
    return get_json(f"{url}/POD/?" + urllib.parse.urlencode({"action": action, **params}), timeout_s=30.0,
                    token=token, headers=headers)


def raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes (headers urllib would refuse to send); (status, headers, body)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def state_of(client: Client) -> dict:
    """What a refused request must not change."""
    return {"workers": [(w["id"], w["status"]) for w in client.ok("getWorkers")["workers"]],
            "activities": client.call("getActivityStatus", name="evil")[0],
            "executions": client.ok("getAllExecutions")["executions"], "policies": client.ok("getPolicies"),
            "tokens": client.ok("getTokens")["tokens"]}


@pytest.fixture
def admin(cluster) -> Client:
    return Client(cluster.urls, cluster.token)


def test_no_token_is_a_401_with_www_authenticate_and_changes_nothing(cluster, admin):
    before = state_of(admin)
    for url in cluster.urls:
        for action, params in (("newActivity", {"name": "evil", "installationScriptLocation": "http://x/y.sh"}),
                               ("newPolicy", {"name": "evil", "rules": "minWorkers=9"}), ("getWorkers", {}),
                               ("newToken", {"name": "evil", "scope": "admin"})):
            code, body = call(url, action, None, **params)
            assert code == 401 and body["error"].startswith("no token: send Authorization: Bearer"), body
        code, headers, body = raw(url, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert code == 401 and headers["www-authenticate"] == 'Bearer realm="pod"'
        assert headers["content-type"].startswith("application/json") and "error" in json.loads(body)
    assert admin.call("getActivityStatus", name="evil")[0] == 404
    assert state_of(admin) == before


def test_wrong_broken_and_foreign_tokens_are_401(cluster, admin):
    before = state_of(admin)
    wrong = [
        T.new_token()[0],                                     # well formed, never made here
        T.admin_token("another cluster's secret"),            # another cluster's admin token
        cluster.token[:-1] + ("A" if cluster.token[-1] != "A" else "B"),   # one character off
        cluster.token + "x", "pod_", "", "Bearer", cluster.token.replace("pod_", "POD_"),
    ]
    for token in wrong:
        code, body = call(cluster.urls[0], "newPolicy", None, headers={"Authorization": f"Bearer {token}"},
                          name="evil", rules="minWorkers=9")
        assert code == 401 and "error" in body, (token, code, body)
    for header in (b"Basic " + cluster.token.encode(), b"Bearer \xc3\xa9\xff" + cluster.token.encode()[3:],
                   b"Bearer " + cluster.token.encode() + b"\xc3\xa9", b"\xff\xfe", b"Bearer " + b"p" * 4000):
        code, headers, body = raw(cluster.urls[1], b"GET /POD/?action=newPolicy&name=evil&rules=minWorkers%3D9 "
                                  b"HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\nConnection: close\r\n\r\n")
        assert code == 401 and headers["content-type"].startswith("application/json"), (header, code, body)
    assert state_of(admin) == before


def test_scopes_read_submit_admin(cluster, admin, scripts):
    from ..conftest import approved, install_script
    approved(admin, "scoped", scripts.add("scoped.sh", install_script('echo "s $1"')))
    read = admin.ok("newToken", name="reader", scope="read")["token"]["token"]
    submit = admin.ok("newToken", name="submitter", scope="submit")["token"]["token"]
    try:
        before = state_of(admin)
        # read: status and reads that consume nothing; no execution may be started or read.
        for url in cluster.urls:
            assert get_json(url + "/status", token=read)[0] == 200
            assert call(url, "getWorkers", read)[0] == 200 and call(url, "getAllExecutions", read)[0] == 200
            assert call(url, "getActivityStatus", read, name="scoped")[0] == 200
        for action, params in (("newExecution", {"name": "scoped"}), ("getExecutionStatus", {"executionId": 1}),
                               ("newActivity", {"name": "x", "installationScriptLocation": "http://x/y.sh"}),
                               ("newToken", {"name": "more", "scope": "admin"}), ("getTokens", {}),
                               ("drainWorker", {"workerId": "n1"}), ("resetPolicies", {})):
            code, body = call(cluster.urls[0], action, read, **params)
            assert code == 403 and "needs a token with the" in body["error"] and "this one has read" in body["error"], \
                (action, body)
        # submit: runs executions and reads their results; nothing of the cluster's own.
        for action, params in (("newActivity", {"name": "x", "installationScriptLocation": "http://x/y.sh"}),
                               ("deleteActivity", {"name": "scoped"}), ("newPolicy", {"name": "p", "rules": "x=1"}),
                               ("newToken", {"name": "more", "scope": "admin"}), ("deleteToken", {"name": "reader"}),
                               ("drainWorker", {"workerId": "n1"})):
            code, body = call(cluster.urls[1], action, submit, **params)
            assert code == 403 and "needs a token with the admin scope; this one has submit" in body["error"], body
        assert state_of(admin) == before
        code, body = call(cluster.urls[2], "newExecution", submit, name="scoped", input="hi")
        assert code == 200, body
        exec_id = body["execution"]["id"]
        code, body = call(cluster.urls[0], "getExecutionStatus", submit, executionId=exec_id, wait=20)
        assert code == 200 and body["execution"]["stdout"] == "s hi\n", body
    finally:
        for name in ("reader", "submitter"):
            admin.ok("deleteToken", name=name)


def test_a_deleted_token_is_refused_by_every_node_as_soon_as_the_deletion_answers(cluster, admin):
    made = admin.ok("newToken", name="short-lived", scope="read")["token"]
    token = made["token"]
    assert made["name"] == "short-lived" and made["scope"] == "read" and token.startswith("pod_")
    assert all(call(url, "getWorkers", token)[0] == 200 for url in cluster.urls)
    answer = admin.ok("deleteToken", 0, name="short-lived")
    assert answer["status"] == "deleted" and answer["confirmed"] == ["n2", "n3"] and answer["unconfirmed"] == []
    for url in cluster.urls:   # at once: no wait
        assert call(url, "getWorkers", token)[0] == 401
    assert "short-lived" not in {t["name"] for t in admin.ok("getTokens")["tokens"]}
    assert admin.call("deleteToken", name="short-lived")[0] == 404


def test_tokens_are_kept_as_salted_hashes_and_never_shown_again_or_logged(cluster, admin):
    token = admin.ok("newToken", 1, name="secretive", scope="submit")["token"]["token"]
    try:
        listed = admin.ok("getTokens")["tokens"]
        assert {"name": "secretive", "scope": "submit"}.items() <= next(t for t in listed
                                                                        if t["name"] == "secretive").items()
        assert {"name": "admin", "scope": "admin", "createdAt": None, "birth": True} in listed
        text = json.dumps(listed)
        assert token not in text and cluster.token not in text and "salt" not in text and "hash" not in text
        key = T.parse(token)[1].encode()
        for node in cluster.nodes:   # logs, journal, snapshot: nowhere on disk (the data dirs, the logs)
            for path in [*node.data_dir.rglob("*"), cluster.log_dir / f"{node.node_id}.log"]:
                if path.is_file() and path.name != "token":
                    data = path.read_bytes()
                    assert key not in data and cluster.token.encode() not in data, path
    finally:
        admin.ok("deleteToken", name="secretive")


def test_the_birth_admin_token_can_be_replaced_and_deleted(tmp_path):
    with start_cluster(tmp_path, nodes=1, slots=1) as c:
        birth = Client(c.urls, c.token)
        new_admin = birth.ok("newToken", name="ops", scope="admin")["token"]["token"]
        assert birth.call("newToken", name="admin", scope="read")[0] == 409     # the birth token's name is taken
        ops = Client(c.urls, new_admin)
        assert ops.ok("deleteToken", name="admin")["token"]["birth"] is True
        assert birth.call("getWorkers")[0] == 401
        assert [t["name"] for t in ops.ok("getTokens")["tokens"]] == ["ops"]
        c.stop_node(c.nodes[0])           # the deletion outlives a restart (journal or snapshot)
        c.start_node(c.nodes[0])
        wait_until(lambda: _answers(c.urls[0], new_admin) and ops.call("getWorkers")[0] == 200,
                   timeout_s=30, what="the node back")
        assert birth.call("getWorkers")[0] == 401


def test_health_is_open_and_says_nothing_else(cluster):
    for url in cluster.urls:
        code, body = get_json(url + "/health")
        assert code == 200 and set(body) == {"ok", "role"} and body["ok"] is True
        assert body["role"] in ("leader", "follower", "observer", "candidate")


def test_a_page_of_another_site_is_refused_and_changes_nothing(cluster, admin):
    before = state_of(admin)
    port = urllib.parse.urlsplit(cluster.urls[0]).port
    for origin in ("http://evil.example", "null", f"http://evil.example:{port}", f"http://127.0.0.1:{port + 1}",
                   "https://allowed.example.evil", f"https://127.0.0.1:{port}"):
        code, body = call(cluster.urls[0], "newPolicy", cluster.token, headers={"Origin": origin},
                          name="csrf", rules="minWorkers=1")
        assert code == 403 and "cross-site request" in body["error"], (origin, body)
    # And without a token too: the Origin is checked first, the answer says why.
    code, body = call(cluster.urls[0], "newPolicy", None, headers={"Origin": "http://evil.example"},
                      name="csrf", rules="minWorkers=1")
    assert code == 403
    assert state_of(admin) == before
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", "https://allowed.example"):
        code, body = call(cluster.urls[0], "getWorkers", cluster.token, headers={"Origin": origin})
        assert code == 200, (origin, body)


def test_head_runs_no_action(cluster, admin):
    before = state_of(admin)
    for target in (b"/POD/?action=newPolicy&name=head&rules=minWorkers%3D1", b"/POD/?action=resetPolicies",
                   b"/status"):
        code, headers, _ = raw(cluster.urls[0], b"HEAD " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                               + cluster.token.encode() + b"\r\nConnection: close\r\n\r\n")
        assert code == 405, target
    assert state_of(admin) == before


def test_auth_none_only_on_loopback_and_it_warns(tmp_path):
    http, raft = free_ports(2)
    env = {**os.environ, "POD_SECRET": "s" * 40}
    refused = subprocess.run([sys.executable, "-m", "podnode", "--id", "x", "--http", f"0.0.0.0:{http}", "--raft",
                              f"127.0.0.1:{raft}", "--data-dir", str(tmp_path / "x"), "--auth", "none"],
                             capture_output=True, text=True, timeout=30, env=env)
    assert refused.returncode == 2 and "auth none is only for a node whose HTTP binds loopback" in refused.stderr
    log = tmp_path / "open.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "podnode", "--id", "o1", "--http", f"127.0.0.1:{http}",
                                 "--raft", f"127.0.0.1:{raft}", "--data-dir", str(tmp_path / "o1"), "--auth", "none",
                                 "--no-announce"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{http}"
        wait_until(lambda: _answers(url), timeout_s=30, what="the open node")
        assert call(url, "getWorkers", None)[0] == 200                    # no token asked
        assert "AUTHENTICATION IS OFF (--auth none)" in log.read_text()
        assert call(url, "getWorkers", None, headers={"Origin": "http://evil.example"})[0] == 403   # still no CSRF
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str, token: str | None = None) -> bool:
    try:
        return get_json(url + "/status", token=token)[0] == 200
    except OSError:
        return False


def test_the_cli_finds_the_token_and_manages_tokens(cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("POD_TOKEN", raising=False)
    no = pod("worker", "list", url=cluster.urls[0], cwd=tmp_path)          # no token anywhere
    assert no.returncode == 2 and "pod found no token" in no.stderr and "--token" in no.stderr, no.stderr
    (tmp_path / "pod-data").mkdir()
    (tmp_path / "pod-data" / "token").write_text(cluster.token + "\n")
    found = pod("worker", "list", url=cluster.urls[0], cwd=tmp_path)       # ./pod-data/token
    assert found.returncode == 0 and "n1" in found.stdout, found.stderr
    made = pod("token", "create", "ci", "--scope", "read", url=cluster.urls[1], cwd=tmp_path)
    assert made.returncode == 0 and "shown this once" in made.stderr, made.stderr
    token = made.stdout.strip()
    assert T.parse(token) is not None
    listed = pod("--token", token, "worker", "list", url=cluster.urls[2], cwd=Path("/"))   # --token
    assert listed.returncode == 0, listed.stderr
    assert pod("token", "list", url=cluster.urls[0], token=token).returncode == 2   # read cannot list tokens
    names = pod("token", "list", url=cluster.urls[0], cwd=tmp_path)
    assert names.returncode == 0 and "ci" in names.stdout and "read" in names.stdout and token not in names.stdout
    gone = pod("token", "delete", "ci", url=cluster.urls[0], token=cluster.token)  # $POD_TOKEN
    assert gone.returncode == 0 and "token ci deleted" in gone.stdout, gone.stderr
    assert pod("worker", "list", url=cluster.urls[2], token=token).returncode == 2
