"""The HTTP API and peer HTTP over TLS, against real node processes on loopback: a cluster whose nodes serve https
with certificates of a CA the test makes forms (Raft, joins, observers, promotion), answers actions over https to a
client that trusts that CA and to `pod --cacert`, refuses a client that does not (and plain http), and reads the
live output of an execution through a node that does not run it (a peer request over https)."""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from cryptography import x509

from podnode.cluster_secret import SECRET_FILE
from podnode.local.certs import issue, make_ca
from podnode.local.cluster import LocalCluster, get_json
from podnode.local.procs import cmdline, free_ports
from podnode.tls import client_context
from podnode.tokens import admin_token

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until
from ..procs_helpers import free_base, processes_in, stop_pod_up
from ..unit.test_discovery import loopback_multicast_works

TICKS = install_script('for i in $(seq 1 300); do echo "tick $i"; sleep 0.2; done')


def client(cluster: LocalCluster) -> Client:
    return Client(cluster.urls, cluster.token, context=cluster.ssl_context)


def status(cluster: LocalCluster, url: str) -> dict | None:
    try:
        code, body = get_json(url + "/status", timeout_s=2.0, token=cluster.token, context=cluster.ssl_context)
    except OSError:
        return None
    return body if code == 200 else None


def no_secret_in_command_lines_or_logs(cluster: LocalCluster, log_dir: Path) -> None:
    """The cluster secret travels in the environment only: never on a node's command line nor in a log."""
    for node in cluster.nodes:
        if node.proc is not None and node.proc.poll() is None:
            args = " ".join(cmdline(node.proc.pid))
            assert "--tls-cert" in args and cluster.secret not in args, args
    for log in log_dir.rglob("*.log"):
        assert cluster.secret not in log.read_text(errors="replace"), log


def pod(*args: str, env: dict[str, str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """The real `pod` command line."""
    return subprocess.run([sys.executable, "-m", "podnode.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**env, "PYTHONUNBUFFERED": "1"})


def cli_env(token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_URL", "POD_CACERT", "POD_TOKEN")}
    return {**env, "POD_TOKEN": token, **extra}


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory) -> LocalCluster:
    """3 nodes serving https with certificates of a CA made for the test (in DATA/tls/, see certs.py)."""
    c = start_cluster(tmp_path_factory.mktemp("tls"), nodes=3, slots=2, tls=True,
                      extra_args=FAST_RAFT + ["--no-announce"])
    yield c
    c.stop()


def test_a_tls_cluster_forms_and_answers_over_https_only(tls_cluster, tmp_path):
    cluster = tls_cluster
    assert all(url.startswith("https://127.0.0.1:") for url in cluster.urls)
    statuses = [status(cluster, url) for url in cluster.urls]
    assert all(s and s["leader"] and s["httpUrl"] == url for s, url in zip(statuses, cluster.urls)), statuses

    def all_connected():   # a peer link can still be (re)connecting right after the start: poll, do not sample once
        now = [status(cluster, url) for url in cluster.urls]
        return all(s and all(p["connected"] for p in s["peers"]) for s in now)
    wait_until(all_connected, timeout_s=20, what="every node connected to its peers over TLS")
    workers = client(cluster).ok("getWorkers")["workers"]
    assert sorted((w["id"], w["httpUrl"]) for w in workers) == sorted((n.node_id, n.url) for n in cluster.nodes)

    # A client that does not trust the cluster's CA (the system's store, or another CA) is refused by its own check.
    other_ca = client_context(str(make_ca(tmp_path / "other")[0]))
    for context in (None, other_ca):
        with pytest.raises(urllib.error.URLError) as refused:
            get_json(cluster.urls[0] + "/status", token=cluster.token, context=context)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError), refused.value

    # The certificate names 127.0.0.1 and localhost, and nothing else: the host name is checked.
    assert get_json(cluster.urls[0].replace("127.0.0.1", "localhost") + "/status", token=cluster.token,
                    context=cluster.ssl_context)[0] == 200
    with socket.create_connection(("127.0.0.1", cluster.nodes[0].http_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
            cluster.ssl_context.wrap_socket(raw, server_hostname="pod.example.com")

    # Plain http to the https port gets no HTTP answer.
    for url in cluster.urls:
        with pytest.raises((OSError, http.client.HTTPException)):
            get_json(url.replace("https://", "http://") + "/status", token=cluster.token)
    with socket.create_connection(("127.0.0.1", cluster.nodes[1].http_port), timeout=5) as raw:
        raw.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(1024)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(b"HTTP/"), answer

    no_secret_in_command_lines_or_logs(cluster, cluster.log_dir)


def test_live_output_is_read_over_https_through_a_node_that_does_not_run_it(tls_cluster, scripts):
    api = client(tls_cluster)
    approved(api, "tls-ticks", scripts.add("tls-ticks.sh", TICKS))
    exec_id = api.ok("newExecution", node=0, name="tls-ticks")["execution"]["id"]
    try:
        running = wait_until(lambda: (e := api.ok("getExecutionStatus", node=0, executionId=exec_id)["execution"])
                             ["status"] == "in progress" and e["workerId"] and e, what="the execution running")
        worker = [n.node_id for n in tls_cluster.nodes].index(running["workerId"])
        other = (worker + 1) % len(tls_cluster.nodes)

        def live() -> dict | None:
            e = api.ok("getExecutionStatus", node=other, executionId=exec_id)["execution"]
            assert e["status"] == "in progress", e
            return e if "tick 2\n" in e["stdout"] else None
        seen = wait_until(live, timeout_s=20, what=f"live output through {tls_cluster.nodes[other].node_id}")
        assert seen["stdout"].startswith("tick 1\n"), seen
    finally:
        api.call("terminateExecution", executionId=exec_id)


def test_pod_cli_verifies_with_cacert(tls_cluster):
    url, ca = tls_cluster.urls[1], str(tls_cluster.tls_ca)
    res = pod("--cacert", ca, "--url", url, "status", env=cli_env(tls_cluster.token))
    assert res.returncode == 0, res.stderr
    assert "n1" in res.stdout and "n3" in res.stdout, res.stdout
    res = pod("--url", url, "worker", "list", env=cli_env(tls_cluster.token, POD_CACERT=ca))
    assert res.returncode == 0 and tls_cluster.urls[2] in res.stdout, (res.stdout, res.stderr)

    t0 = time.monotonic()
    res = pod("--url", url, "status", env=cli_env(tls_cluster.token))
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "cannot verify the certificate" in res.stderr and "--cacert" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 8, "a certificate that does not verify is not retried"
    res = pod("--cacert", "/nonexistent/ca.pem", "--url", url, "status", env=cli_env(tls_cluster.token))
    assert res.returncode == 2 and "--cacert /nonexistent/ca.pem" in res.stderr, res.stderr


def test_observers_join_forward_and_are_promoted_over_https(tmp_path):
    """Joining (through a voter, and through an observer, which forwards to the leader), the leader's polls of its
    observers and its promotion of one are peer requests: with --max-voters 3 every one of them goes over https."""
    cluster = start_cluster(tmp_path / "c", nodes=3, slots=1, tls=True,
                            extra_args=FAST_RAFT + ["--no-announce", "--max-voters", "3"])
    try:
        api = client(cluster)
        leader = wait_until(cluster.leader, what="a leader")
        follower = next(n for n in cluster.nodes if n is not leader)
        n4 = cluster.add_node(join=follower.url, node_id="n4")
        wait_until(lambda: (s := status(cluster, n4.url)) and s["role"] == "observer", what="n4 an observer")
        n5 = cluster.add_node(join=n4.url, node_id="n5")     # asked an observer: it forwards to the leader
        wait_until(lambda: (s := status(cluster, n5.url)) and s["role"] == "observer", what="n5 an observer")

        def observers_up() -> bool:
            workers = {w["id"]: w["status"] for w in api.ok("getWorkers", node=0)["workers"]}
            return workers.get("n4") == "up" and workers.get("n5") == "up"
        wait_until(observers_up, what="n4 and n5 registered")
        deadline = time.monotonic() + 6.0     # twice --node-lost-after-s: an observer the leader cannot poll is lost
        while time.monotonic() < deadline:
            assert observers_up(), api.ok("getWorkers", node=0)["workers"]
            time.sleep(0.2)

        cluster.stop_node(follower, sig=signal.SIGKILL)
        wait_until(lambda: any((s := status(cluster, n.url)) and s["role"] in ("follower", "leader")
                               for n in (n4, n5)), timeout_s=40, what="an observer promoted to voter")
        no_secret_in_command_lines_or_logs(cluster, cluster.log_dir)
    finally:
        cluster.stop()


async def test_join_auto_proves_the_member_over_https(tmp_path):
    if not await asyncio.to_thread(loopback_multicast_works):
        pytest.skip("multicast on the loopback interface does not work here")
    name = f"tls-{secrets.token_hex(3)}"
    args = FAST_RAFT + ["--cluster-name", name]
    cluster = await asyncio.to_thread(start_cluster, tmp_path / "c", nodes=3, tls=True, extra_args=args)
    try:
        await asyncio.to_thread(cluster.add_node, join="auto", node_id="n4", extra_args=args)

        def n4_up() -> bool:
            workers = client(cluster).ok("getWorkers", node=0)["workers"]
            return {w["id"]: w["status"] for w in workers}.get("n4") == "up"
        await asyncio.to_thread(wait_until, n4_up, timeout_s=60, what="n4 joined through --join auto")
        log = (cluster.log_dir / "n4.log").read_text(errors="replace")
        assert "joined through https://127.0.0.1:" in log and "skipping" not in log, log
    finally:
        await asyncio.to_thread(cluster.stop)


def test_a_node_with_an_unusable_certificate_stops_at_once_saying_why(tmp_path):
    files = issue(tmp_path / "tls", "n1")
    other = issue(tmp_path / "tls", "n2")
    cases = {
        "cannot read it": ["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(files.key)],
        "is not the key of": ["--tls-cert", str(files.cert), "--tls-key", str(other.key)],
        "holds no PEM private key": ["--tls-cert", str(files.cert), "--tls-key", str(files.cert)],
        "cannot use it as a CA bundle": [*files.args()[:4], "--tls-ca", str(files.key)],
    }
    http, raft = free_ports(2)   # never bound: the node stops before it listens
    for why, args in cases.items():
        done = subprocess.run([sys.executable, "-m", "podnode", "--id", "n1", "--http", f"127.0.0.1:{http}", "--raft",
                               f"127.0.0.1:{raft}", "--data-dir", str(tmp_path / "d"), "--no-announce", *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and why in done.stderr, (why, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr


def test_pod_up_tls_serves_https_with_its_own_ca(tmp_path):
    data, base = tmp_path / "pod-data", free_base(3)
    out_path = tmp_path / "pod-up.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "podnode.cli", "up", "--tls", "--port", str(base),
                                 "--data-dir", str(data), "--nodes", "3", "--slots", "1"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def up() -> bool:
            text = out_path.read_text(errors="replace")
            assert proc.poll() is None, f"pod up exited ({proc.returncode}):\n{text}"
            return "POD is up" in text
        wait_until(up, timeout_s=90, interval_s=0.2, what="pod up printing POD is up")
        text = out_path.read_text(errors="replace")
        ca = (data / "tls" / "ca.pem").resolve()
        assert f"pod --cacert {ca} --url https://127.0.0.1:{base}" in text, text

        tls = data / "tls"
        for i in range(1, 4):
            assert (tls / f"n{i}-key.pem").stat().st_mode & 0o777 == 0o600
            cert = x509.load_pem_x509_certificate((tls / f"n{i}.pem").read_bytes())
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
            assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert (tls / "ca-key.pem").stat().st_mode & 0o777 == 0o600

        secret = (data / SECRET_FILE).read_text().strip()
        env = cli_env(admin_token(secret), POD_CACERT=str(ca))
        res = pod("--url", f"https://127.0.0.1:{base + 2}", "worker", "list", env=env)
        assert res.returncode == 0 and f"https://127.0.0.1:{base}" in res.stdout, (res.stdout, res.stderr)
        for pid in processes_in(data):
            assert secret not in " ".join(cmdline(pid)), cmdline(pid)

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, out_path.read_text(errors="replace")
        for log in data.rglob("*.log"):
            assert secret not in log.read_text(errors="replace"), log
    finally:
        stop_pod_up(proc, data)
