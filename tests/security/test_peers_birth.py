"""A lone node has a secret from birth, and a node without the cluster's secret cannot join."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from podnode.local.cluster import get_json
from podnode.local.procs import free_ports, stop_popen

from ..conftest import FAST_RAFT, start_cluster, wait_until


def env_without_secret(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "POD_SECRET"}, **extra}


def test_a_loopback_node_without_a_secret_makes_one_in_its_data_dir_and_keeps_it(tmp_path):
    http, raft = free_ports(2)
    data = tmp_path / "n1"
    cmd = [sys.executable, "-m", "podnode", "--id", "n1", "--http", f"127.0.0.1:{http}", "--raft",
           f"127.0.0.1:{raft}", "--data-dir", str(data), "--no-announce", *FAST_RAFT]
    secrets_seen = []
    for run in range(2):
        log = tmp_path / f"run{run}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env_without_secret(),
                                    start_new_session=True)
        try:
            wait_until(lambda: _leader(http), timeout_s=30, what="the lone node leading")
        finally:
            stop_popen(proc, 10)
        assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600
        secrets_seen.append((data / "secret").read_text().strip())
        assert secrets_seen[-1] not in log.read_text() and "secret in" in log.read_text()
    assert secrets_seen[0] == secrets_seen[1] and len(secrets_seen[0]) >= 40


def _leader(port: int) -> bool:
    try:
        return get_json(f"http://127.0.0.1:{port}/health")[1].get("role") == "leader"
    except OSError:
        return False


def test_a_node_with_another_secret_cannot_join_and_says_why(tmp_path):
    cluster = start_cluster(tmp_path / "c", nodes=3)
    try:
        http, raft = free_ports(2)
        done = subprocess.run(
            [sys.executable, "-m", "podnode", "--id", "n9", "--http", f"127.0.0.1:{http}", "--raft",
             f"127.0.0.1:{raft}", "--data-dir", str(tmp_path / "n9"), "--join", cluster.urls[0], "--no-announce",
             *FAST_RAFT], env=env_without_secret(POD_SECRET="not the cluster's secret"), capture_output=True,
            text=True, timeout=60)
        assert done.returncode != 0
        assert "give this node the cluster's secret in POD_SECRET" in done.stderr, done.stderr
        assert cluster.secret not in done.stderr + done.stdout
        status = cluster.status(cluster.nodes[0])
        assert f"127.0.0.1:{raft}" not in {p["address"] for p in status["peers"]}
    finally:
        cluster.stop()
