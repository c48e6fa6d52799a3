"""A `pod up` cluster's Raft port and secret, against real processes: a pickle sent to the Raft port is never
executed, and the secret is on no command line (launched nodes included) and in no log."""

from __future__ import annotations

import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.encryptor import getEncryptor

from podnode.local.cluster import get_json
from podnode.local.procs import cmdline, free_port, pids

from ..conftest import wait_until
from ..procs_helpers import RAFT_OFFSET, free_base, processes_in, stop_pod_up

NODES = 3


class Marker:
    """Unpickling this runs a shell command that creates `path`: what an attacker would send."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def payloads(path: Path) -> list[bytes]:
    """The attack in pysyncobj's wire format without the password (length, zlib of the pickle), framed without
    zlib, as raw pickle bytes, and encrypted as pysyncobj does with a password that is not the cluster's."""
    raw = pickle.dumps(Marker(path), protocol=2)
    framed = zlib.compress(raw, 3)
    guessed = getEncryptor("a guessed password").encrypt_at_time(framed, int(time.monotonic()))
    return [struct.pack("i", len(data)) + data for data in (framed, raw, guessed)] + [raw]


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        time.sleep(0.3)         # let the node read it before the connection closes


class PodUp:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.base = free_base(NODES)
        self.urls = [f"http://127.0.0.1:{self.base + i}" for i in range(NODES)]
        self.out = data_dir.parent / "pod-up.out"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podnode.cli", "up", "--port", str(self.base), "--data-dir",
                 str(self.data_dir), "--nodes", str(NODES), "--slots", "1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_until(lambda: "POD is up" in self.out.read_text() or self.proc.poll() is not None, timeout_s=90,
                   what="pod up")
        assert "POD is up" in self.out.read_text(), self.out.read_text()

    def call(self, action: str, **params) -> tuple[int, dict]:
        for url in self.urls:
            try:
                return get_json(f"{url}/POD/?" + urllib.parse.urlencode({"action": action, **params}), 30.0,
                                token=(self.data_dir / "token").read_text().strip())
            except OSError:
                continue
        return 0, {}

    def ok(self, action: str, **params) -> dict:
        code, body = wait_until(lambda: (lambda r: r if r[0] not in (0, 503) else None)(self.call(action, **params)),
                                timeout_s=30, what=action)
        assert code == 200, (action, code, body)
        return body


@pytest.fixture(scope="module")
def pod_up(tmp_path_factory):
    up = PodUp(tmp_path_factory.mktemp("podup") / "pod-data")
    try:
        up.start()
        yield up
    finally:
        stop_pod_up(up.proc, up.data_dir, ask=2)


def test_the_control_a_raft_port_without_password_runs_the_pickle(tmp_path):
    """The attack as the tests below send it does work on a pysyncobj without a password (so they test something)."""
    marker = tmp_path / "ran"
    port = free_port()
    node = SyncObj(f"127.0.0.1:{port}", [], SyncObjConf(password=None, autoTick=True))
    try:
        wait_until(lambda: _connects(port), timeout_s=10, what="the bare replica listening")
        send(port, payloads(marker)[0])
        wait_until(marker.exists, timeout_s=10, what="the pickle ran")
    finally:
        node.destroy()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_pickle_sent_to_the_raft_port_of_pod_up_never_runs(pod_up, tmp_path):
    secret_file = pod_up.data_dir / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    markers = []
    for i in range(NODES):
        for j in range(len(payloads(tmp_path / "x"))):
            markers.append(tmp_path / f"ran-{i}-{j}")
            send(pod_up.base + RAFT_OFFSET + i, payloads(markers[-1])[j])
    time.sleep(2.0)
    assert [m for m in markers if m.exists()] == []
    # The nodes still work: a write commits and every node knows the leader.
    pod_up.ok("newPolicy", name="probe", rules="minWorkers=1")
    pod_up.ok("deletePolicy", name="probe")
    for url in pod_up.urls:
        assert get_json(url + "/status", token=(pod_up.data_dir / "token").read_text().strip())[1]["leader"]
    assert pod_up.proc.poll() is None


def test_the_secret_is_on_no_command_line_and_in_no_log(pod_up):
    secret = (pod_up.data_dir / "secret").read_text().strip()
    assert len(secret) >= 40
    pod_up.ok("newPolicy", name="four", rules=f"minWorkers={NODES + 1},maxWorkers={NODES + 1}")
    pod_up.ok("applyPolicy", name="four")

    def launched_up() -> list[dict]:
        return [w for w in pod_up.ok("getWorkers")["workers"] if w.get("provider") == "local" and w["status"] == "up"]
    launched = wait_until(launched_up, timeout_s=90, what="a node launched for the policy")
    cluster = set(processes_in(pod_up.data_dir)) | {pod_up.proc.pid}
    assert {int(w["ref"]) for w in launched} <= cluster
    assert len([p for p in cluster if "podnode" in " ".join(cmdline(p))]) >= NODES + 2   # pod up, seeds, launched
    for pid in pids():                          # no process on this machine has it on its command line
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert secret.encode() not in args, (pid, cmdline(pid))
    for path in [pod_up.out, *pod_up.data_dir.rglob("*")]:
        if path.is_file() and path != pod_up.data_dir / "secret":
            assert secret.encode() not in path.read_bytes(), path
    pod_up.ok("resetPolicies")
