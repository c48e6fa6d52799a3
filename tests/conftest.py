"""Shared fixtures: real node processes on loopback with dynamic ports, always stopped."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from podnode.local.cluster import LocalCluster, get_json

FAST_RAFT = ["--election-timeout-s", "0.3", "--kill-grace-s", "1"]


class Client:
    """A thin HTTP client for the action API, rotating over the nodes unless told which one to ask."""

    def __init__(self, urls: list[str], token: str | None = None, *, context: ssl.SSLContext | None = None):
        self.urls = urls
        self.token = token      # sent as Authorization: Bearer (the cluster's admin token by default)
        self.context = context  # verifies https nodes (a TLS cluster's CA: cluster.ssl_context)
        self._next = 0

    def call(self, action: str, node: int | None = None, **params: Any) -> tuple[int, dict]:
        if node is None:
            node = self._next % len(self.urls)
            self._next += 1
        query = urllib.parse.urlencode({"action": action, **params})
        return get_json(f"{self.urls[node]}/POD/?{query}", timeout_s=30.0, token=self.token, context=self.context)

    def ok(self, action: str, node: int | None = None, **params: Any) -> dict:
        code, body = self.call(action, node, **params)
        assert code == 200, (action, params, code, body)
        return body


def pid_alive(pid: int) -> bool:
    """Is a process with this pid still there?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(check: Callable[[], Any], *, timeout_s: float = 20.0, interval_s: float = 0.1, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}; last value {last!r}")


class ScriptServer:
    """Serves install scripts over HTTP on loopback, as a user's web server would."""

    def __init__(self, root: Path):
        self.root = root
        handler = lambda *a, **kw: _QuietHandler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, body: str) -> str:
        (self.root / name).write_text(body)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def shared_dir() -> Path:
    """A directory executions may write into: they run as an unprivileged user (the node's --run-as), who
    cannot enter pytest's own temporary directories (0700, root's). Sticky and world-writable, like /tmp."""
    path = Path(tempfile.mkdtemp(prefix="pod-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def scripts(tmp_path_factory) -> ScriptServer:
    server = ScriptServer(tmp_path_factory.mktemp("scripts"))
    yield server
    server.close()


def start_cluster(tmp_path: Path, **kwargs) -> LocalCluster:
    kwargs.setdefault("extra_args", FAST_RAFT)
    cluster = LocalCluster(tmp_path, **kwargs)
    try:
        cluster.start(timeout_s=30)
    except BaseException:
        cluster.stop()
        _dump_logs(cluster)
        raise
    return cluster


def _dump_logs(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        log = cluster.log_dir / f"{node.node_id}.log"
        if log.exists():
            print(f"---- {log} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> LocalCluster:
    """A 3-node cluster with 2 slots per node, shared by the tests of one module."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"), nodes=3, slots=2)
    yield c
    c.stop()


@pytest.fixture
def client(cluster) -> Client:
    return Client(cluster.urls, cluster.token)


def approved(client: Client, name: str, url: str, *, create: bool = True, **params: Any) -> dict:
    """Create an activity (unless already created) and wait until every node has installed it."""
    if create:
        client.ok("newActivity", name=name, installationScriptLocation=url, **params)

    def done():
        act = client.ok("getActivityStatus", name=name)["activity"]
        assert act["status"] != "rejected", act
        insts = act.get("installations", [])
        return act if act["status"] == "approved" and len(insts) == len(client.urls) and \
            all(i["status"] == "installed" for i in insts) else None
    return wait_until(done, what=f"activity {name} approved everywhere")


def install_script(main_body: str) -> str:
    """An install script that writes main.sh with this body."""
    return "#!/usr/bin/env bash\nset -e\ncat > main.sh <<'POD_MAIN'\n#!/usr/bin/env bash\n" + main_body + \
        "\nPOD_MAIN\n"


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1)
