"""Start and stop N podnode processes on this machine: `pod up`, the tests and the benchmark use it."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..cluster_secret import SECRET_FILE, keep_admin_token, load_or_create
from ..tls import client_context
from ..tokens import admin_token
from .procs import free_ports, signal_group, stop_foreign_node, stop_popen, terminate_group

__all__ = ["LocalCluster", "LocalNode", "get_json"]


def get_json(url: str, timeout_s: float = 2.0, *, token: str | None = None, data: bytes | None = None,
             headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict]:
    """GET (or POST `data` to) a URL with the bearer `token`; return (HTTP status, JSON body). Connection
    failures raise OSError."""
    request = urllib.request.Request(url, data=data, headers={
        **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"{}")
        except ValueError:
            return err.code, {"error": body.decode(errors="replace")}


def open_private_log(path: Path):
    """A node's log for appending, readable by its owner only (it names activities, URLs and nodes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


@dataclass
class LocalNode:
    node_id: str
    http_port: int
    raft_port: int
    data_dir: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)
    join: str | None = None   # started with --join URL instead of a fixed peer list
    token: str | None = field(default=None, repr=False)   # what requests to it carry (the cluster's admin token)
    tls_ca: Path | None = None  # serves https with a certificate of this CA (see certs.py)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://{self.host}:{self.http_port}"

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What a request to the node checks its certificate with (None for http)."""
        return client_context(str(self.tls_ca)) if self.tls_ca else None

    @property
    def raft_addr(self) -> str:
        return f"{self.host}:{self.raft_port}"


class LocalCluster:
    """N podnode processes on loopback. Use as a context manager so they are always stopped.

    The cluster has a secret from birth: `secret` if given, else the one in DATA/secret (mode 600), made there
    the first time and reused by every later cluster on that data dir. Every node gets it in its environment
    (POD_SECRET), never on its command line. Its admin token (derived from the secret) is in DATA/token (600),
    where the pod CLI finds it.

    With `tls`, the nodes serve https with certificates of a private CA kept in DATA/tls/ (see certs.py; files
    already there are used as they are): `tls_ca` is the CA a client verifies them with."""

    def __init__(self, data_dir: str | Path, *, nodes: int = 3, base_port: int | None = None,
                 slots: int | None = None, extra_args: list[str] | None = None, log_dir: str | Path | None = None,
                 quiet: bool = True, secret: str | None = None, tls: bool = False):
        self.data_dir = Path(data_dir)
        if not self.data_dir.exists():   # others may pass through (executions reach their activity), not list it
            self.data_dir.mkdir(parents=True, mode=0o711)
        self.tls_dir = self.data_dir.resolve() / "tls" if tls else None
        if self.tls_dir is not None:
            from .certs import make_ca  # cryptography is loaded only by a cluster that serves https
            make_ca(self.tls_dir)
        self.secret = secret or load_or_create(self.data_dir / SECRET_FILE)[0]
        self.token = admin_token(self.secret)    # the cluster's birth admin token, kept in DATA/token (600)
        self.token_file = keep_admin_token(self.data_dir, self.secret)
        self.log_dir = Path(log_dir) if log_dir else self.data_dir
        self.quiet = quiet
        self.nodes: list[LocalNode] = []
        ports = [] if base_port else free_ports(2 * nodes)   # all at once: no two nodes get the same port
        for i in range(nodes):
            http, raft = (base_port + i, base_port + 1000 + i) if base_port else ports[2 * i:2 * i + 2]
            self.nodes.append(LocalNode(f"n{i + 1}", http, raft, self.data_dir / f"n{i + 1}", token=self.token,
                                        tls_ca=self.tls_ca, extra_args=list(extra_args or []) +
                                        (["--slots", str(slots)] if slots is not None else [])))

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def tls_ca(self) -> Path | None:
        """The CA certificate (PEM) that the nodes' https certificates are checked against; None without TLS."""
        return self.tls_dir / "ca.pem" if self.tls_dir else None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client of this cluster checks the nodes' certificates with (None without TLS)."""
        return self.nodes[0].ssl_context if self.nodes else None

    def tls_args(self, node: LocalNode) -> list[str]:
        """The node's --tls-cert/--tls-key/--tls-ca, its certificate made first if it has none (no TLS: [])."""
        if self.tls_dir is None:
            return []
        from .certs import issue
        return issue(self.tls_dir, node.node_id).args()

    def command(self, node: LocalNode) -> list[str]:
        if node.join:
            members = ["--join", node.join]
        else:
            members = ["--peers", ",".join(n.raft_addr for n in self.nodes if n is not node and not n.join)]
        return [sys.executable, "-m", "podnode", "--id", node.node_id, "--http", f"{node.host}:{node.http_port}",
                "--raft", node.raft_addr, *members, "--data-dir", str(node.data_dir), *self.tls_args(node),
                *node.extra_args]

    def env(self) -> dict[str, str]:
        """A node's environment: this process's, with the cluster secret."""
        return {**os.environ, "POD_SECRET": self.secret}

    def add_node(self, *, join: str, extra_args: list[str] | None = None, node_id: str | None = None) -> LocalNode:
        """Start one more node that joins the running cluster through `join` (a member's URL)."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        node = LocalNode(node_id, *free_ports(2), self.data_dir / node_id, join=join, token=self.token,
                         tls_ca=self.tls_ca,
                         extra_args=list(extra_args if extra_args is not None else self.nodes[0].extra_args))
        self.nodes.append(node)
        self.start_node(node)
        return node

    def start_node(self, node: LocalNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open_private_log(self.log_dir / f"{node.node_id}.log") if self.quiet else None
        try:
            node.proc = subprocess.Popen(self.command(node), stdout=out, stderr=subprocess.STDOUT if out else None,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=self.env())
        finally:
            if out is not None:
                out.close()

    def start(self, *, timeout_s: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout_s=timeout_s)
        return self

    def status(self, node: LocalNode) -> dict | None:
        try:
            code, body = get_json(node.url + "/status", timeout_s=1.0, token=node.token, context=node.ssl_context)
            return body if code == 200 else None
        except OSError:
            return None

    def wait_ready(self, *, timeout_s: float = 30.0, nodes: list[LocalNode] | None = None) -> None:
        """Poll until a leader is elected, every node knows it, and every node has registered."""
        nodes = nodes if nodes is not None else self.nodes
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"{node.node_id} exited with {node.proc.returncode}; "
                                       f"see {self.log_dir / (node.node_id + '.log')}")
            statuses = [self.status(n) for n in nodes]
            if all(s and s.get("leader") for s in statuses):
                try:
                    code, body = get_json(nodes[0].url + "/POD/?action=getWorkers", token=self.token,
                                          context=nodes[0].ssl_context)
                except OSError:
                    code, body = 0, {}
                registered = {w["id"] for w in body.get("workers", [])} if code == 200 else set()
                if {n.node_id for n in self.nodes} <= registered:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ready within {timeout_s} s")

    def leader(self) -> LocalNode | None:
        for node in self.nodes:
            s = self.status(node)
            if s and s.get("role") == "leader":
                return node
        return None

    def signal_node(self, node: LocalNode, sig: int) -> None:
        """Send a signal to a node's process group without waiting (SIGSTOP, SIGCONT, ...)."""
        if node.proc is not None and node.proc.poll() is None:
            signal_group(node.proc.pid, sig)

    def stop_node(self, node: LocalNode, *, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """Signal the node's group (SIGTERM: it stops cleanly), SIGKILL it after `timeout_s`, and reap it."""
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        if sig == signal.SIGTERM:
            stop_popen(proc, timeout_s)
            return
        signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def launched_by_provider(self) -> list[tuple[str, int]]:
        """(node id, pid) of the nodes the local provider launched, as the cluster records them."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                code, body = get_json(node.url + "/POD/?action=getWorkers", timeout_s=2.0, token=self.token,
                                      context=node.ssl_context)
            except OSError:
                continue
            if code == 200:
                entries = body.get("workers", []) + body.get("launching", [])
                return [(e["id"], int(e["ref"])) for e in entries
                        if e.get("provider") == "local" and str(e.get("ref") or "").isdigit()
                        and e.get("status") != "left"]
        return []

    def stop(self) -> None:
        """Stop the nodes the local provider launched, then every node (SIGTERM to all at once, SIGKILL
        after 15 s). `pod up` stops everything in its process tree instead (see cli/up.py)."""
        for node_id, pid in self.launched_by_provider():
            stop_foreign_node(pid, node_id, grace_s=10.0)
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                terminate_group(node.proc.pid)
        for node in self.nodes:
            self.stop_node(node)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
