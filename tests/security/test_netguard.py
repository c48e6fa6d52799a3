"""The cloud metadata guard for real: in a network namespace of its own that holds the metadata addresses and a
tiny HTTP server on each, the guard (podnode.exec.netguard, run inside the namespace) stops the run-as user's
connections while root and other users still connect."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from podnode.exec.netguard import METADATA_V4, METADATA_V6, nft_table

from ..conftest import start_cluster, wait_until

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable   # readable by any user
GUARDED_UID = 65534     # nobody: the uid the rule names
OTHER_UID = 65533       # another unprivileged uid, not named by the rule
PORT = 80

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and firewall rules"),
    pytest.mark.skipif(not (shutil.which("ip") and shutil.which("setpriv")), reason="needs ip and setpriv"),
]


def in_ns(ns: str, *argv: str, uid: int | None = None, **kw) -> subprocess.CompletedProcess:
    user = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return subprocess.run(["ip", "netns", "exec", ns, *user, *argv], capture_output=True, text=True, timeout=20,
                          **kw)


def connects(ns: str, address: str, uid: int | None) -> bool:
    """Can this user open a TCP connection to address:80 in the namespace? (Refused or timed out: no.)"""
    probe = ("import socket, sys\n"
             "try:\n"
             f"    socket.create_connection(({address!r}, {PORT}), timeout=2).close()\n"
             "except OSError as exc:\n"
             "    sys.exit(f'no: {exc!r}')\n")
    return in_ns(ns, PYTHON, "-c", probe, uid=uid).returncode == 0


@pytest.fixture
def metadata_ns(tmp_path: Path):
    """A namespace with loopback up, the metadata addresses on it and an HTTP server on each; always deleted."""
    ns = f"podguard-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    servers: list[subprocess.Popen] = []
    try:
        in_ns(ns, "ip", "link", "set", "lo", "up", check=True)
        for address in METADATA_V4:
            in_ns(ns, "ip", "addr", "add", f"{address}/32", "dev", "lo", check=True)
        for address in METADATA_V6:
            in_ns(ns, "ip", "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad", check=True)
        for address in (*METADATA_V4, *METADATA_V6):
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, PYTHON, "-m", "http.server", "--bind", address,
                 "--directory", str(tmp_path), str(PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for address in (*METADATA_V4, *METADATA_V6):
            wait_until(lambda a=address: connects(ns, a, None), timeout_s=20, what=f"the server on {address}")
        yield ns
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=20)
        subprocess.run(["ip", "netns", "del", ns], timeout=20)


def guard(ns: str, tool: str) -> str:
    code = (f"from podnode.exec.netguard import guard_metadata; "
            f"print(guard_metadata({GUARDED_UID}, tools=[{tool!r}]))")
    done = in_ns(ns, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def rules(ns: str, tool: str) -> str:
    if tool == "nft":
        return in_ns(ns, "nft", "list", "table", "inet", nft_table(GUARDED_UID)).stdout
    return in_ns(ns, "iptables", "-S", "OUTPUT").stdout + in_ns(ns, "ip6tables", "-S", "OUTPUT").stdout


@pytest.mark.parametrize("tool", ["nft", "iptables"])
def test_the_run_as_user_cannot_reach_the_metadata_service(metadata_ns, tool):
    if not shutil.which(tool) or (tool == "iptables" and not shutil.which("ip6tables")):
        pytest.skip(f"{tool} is not installed")
    ns = metadata_ns
    addresses = (*METADATA_V4, *METADATA_V6)
    assert all(connects(ns, a, GUARDED_UID) for a in addresses)   # without the guard: open to everyone
    assert guard(ns, tool) == tool
    for address in addresses:
        assert not connects(ns, address, GUARDED_UID), address
        assert connects(ns, address, None), address               # root (the node) still can
        assert connects(ns, address, OTHER_UID), address          # the rule names the run-as user only
    once = rules(ns, tool)
    assert str(GUARDED_UID) in once
    assert guard(ns, tool) == tool                               # idempotent: the same rules, not twice
    assert rules(ns, tool) == once
    assert not connects(ns, METADATA_V4[0], GUARDED_UID)


def test_without_a_firewall_tool_the_node_warns(caplog):
    from podnode.exec.netguard import guard_metadata
    with caplog.at_level("WARNING", logger="podnode.exec.netguard"):
        assert guard_metadata(GUARDED_UID, tools=["no-such-firewall-tool"]) is None
    assert "CAN reach the cloud metadata service" in caplog.text and "Install nftables or iptables" in caplog.text


def test_a_root_node_guards_its_run_as_user_at_start(tmp_path):
    if not (shutil.which("nft") or shutil.which("iptables")):
        pytest.skip("neither nft nor iptables is installed")
    cluster = start_cluster(tmp_path, nodes=1, slots=1)
    try:
        log = cluster.log_dir / "n1.log"
        line = wait_until(lambda: next((x for x in log.read_text().splitlines() if "metadata service" in x), None),
                          what="the guard's log line")
        assert "cannot reach the cloud metadata service" in line and "rule added with" in line, line
        uid = int(line.split("(uid ")[1].split(")")[0])
        assert uid == pwd.getpwnam("pod").pw_uid
        if "with nft" in line:
            assert str(uid) in subprocess.run(["nft", "list", "table", "inet", nft_table(uid)], capture_output=True,
                                              text=True, timeout=20).stdout
    finally:
        cluster.stop()
