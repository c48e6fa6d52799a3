"""Without quorum a node refuses writes with 503 and Retry-After, and changes nothing; with it back, all is well."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

from podnode.local.cluster import get_json
from podnode.local.procs import free_port

from ..conftest import Client, start_cluster, wait_until


def _write_status(url: str, token: str) -> tuple[int, str | None, dict]:
    request = urllib.request.Request(url + "/POD/?action=newActivity&name=q1&installationScriptLocation="
                                     "http://127.0.0.1:1/x.sh", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, None, {}
    except urllib.error.HTTPError as err:
        import json
        return err.code, err.headers.get("Retry-After"), json.loads(err.read())


def test_no_quorum_means_503_with_retry_after(tmp_path):
    cluster = start_cluster(tmp_path, nodes=3, slots=1)
    try:
        survivor = cluster.nodes[0]
        for node in cluster.nodes[1:]:
            cluster.stop_node(node)
        code, retry_after, body = wait_until(lambda: (r := _write_status(survivor.url, cluster.token))[0] == 503 and r,
                                             timeout_s=30, what="503 from the lone node")
        assert retry_after is not None and int(retry_after) >= 1
        assert "retry" in body["error"]
        # Reads still answer, and the refused write changed nothing.
        assert get_json(survivor.url + "/POD/?action=getActivityStatus&name=q1", timeout_s=30,
                        token=cluster.token)[0] in (404, 503)
        assert get_json(survivor.url + "/status", token=cluster.token)[0] == 200
        # Bring the others back: writes work again and q1 was never created.
        for node in cluster.nodes[1:]:
            cluster.start_node(node)
        cluster.wait_ready(timeout_s=30)
        client = Client(cluster.urls, cluster.token)
        assert client.call("getActivityStatus", name="q1")[0] == 404
        assert client.call("newActivity", name="q2", installationScriptLocation="http://127.0.0.1:1/x.sh")[0] == 200
    finally:
        cluster.stop()


def test_raft_beyond_loopback_needs_a_secret(tmp_path):
    cmd = [sys.executable, "-m", "podnode", "--id", "x", "--http", f"127.0.0.1:{free_port()}",
           "--raft", f"0.0.0.0:{free_port()}", "--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "without a cluster secret" in proc.stderr
