"""A `pod up` cluster's Raft port and secret, against real processes: a pickle sent to the Raft port is never
executed, a Raft message that is altered, cut short, replayed, sealed with another key or in pysyncobj's own
(Fernet) format ends its connection, and the secret is on no command line (launched nodes included) and in no
log."""

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
from podnode.raft.crypto import MessageCipher

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
    guessed_aead = MessageCipher("a guessed password").encrypt_at_time(framed, int(time.monotonic()))
    return [struct.pack("i", len(data)) + data for data in (framed, raw, guessed, guessed_aead)] + [raw]


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


# ---- a peer that knows the secret, speaking pysyncobj's protocol to a node's Raft port ----------------------
class RaftPeer:
    """A raw connection to a node's Raft port, framing as pysyncobj does (length, then the encrypted zlib of a
    pickle). With the cluster's secret it passes pysyncobj's key exchange and joins as a read-only node."""

    def __init__(self, port: int, secret: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.cipher = MessageCipher(secret)
        self.buffer = b""
        self.my_key = os.urandom(32)
        self.node_key: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def frame(self, message, *, at: int | None = None, cipher=None) -> bytes:
        data = zlib.compress(pickle.dumps(message if self.node_key is None else (self.node_key, message)))
        token = (cipher or self.cipher).encrypt_at_time(data, int(time.monotonic()) if at is None else at)
        return struct.pack("i", len(token)) + token

    def send_raw(self, framed: bytes) -> None:
        self.sock.sendall(framed)

    def receive(self, deadline_s: float = 10.0):
        """The next message from the node (opened with the cluster's key), or None when it closed the connection."""
        deadline = time.monotonic() + deadline_s
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack("i", self.buffer[:4])[0]
                if len(self.buffer) >= 4 + size:
                    token, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                    self.cipher.extract_timestamp(token)
                    return pickle.loads(zlib.decompress(self.cipher.decrypt(token)))
            left = deadline - time.monotonic()
            assert left > 0, "the node neither answered nor closed the connection"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue            # the assertion above, at the deadline
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def handshake(self) -> None:
        """pysyncobj's exchange of random keys, then 'readonly': the node then sends us its AppendEntries."""
        self.send_raw(self.frame(self.my_key))
        key_message = self.receive()
        assert key_message is not None and key_message[0] == self.my_key
        self.node_key = key_message[1]
        self.send_raw(self.frame("readonly"))

    def closed_by_node(self, deadline_s: float = 10.0) -> bool:
        """Read (and open) what the node sends until it closes the connection: True then, False at the deadline."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                if self.receive(deadline - time.monotonic()) is None:
                    return True
            except AssertionError:
                return False
        return False


@pytest.fixture
def raft_peer(pod_up):
    peers: list[RaftPeer] = []

    token = (pod_up.data_dir / "token").read_text().strip()

    def leader_raft_address() -> str | None:   # only the leader sends AppendEntries to a read-only node
        for url in pod_up.urls:
            view = get_json(url + "/status", token=token)[1]
            if view.get("role") == "leader":
                return view["raftAddress"]
        return None
    port = int(wait_until(leader_raft_address, timeout_s=30, what="a leader").rpartition(":")[2])
    assert port in [pod_up.base + RAFT_OFFSET + i for i in range(NODES)], port

    def connect() -> RaftPeer:
        peers.append(RaftPeer(port, (pod_up.data_dir / "secret").read_text().strip()))
        return peers[-1]
    try:
        yield connect
    finally:
        for peer in peers:
            peer.close()


def test_a_peer_with_the_secret_is_served_in_the_aead_format(raft_peer):
    """The control for the attacks below: the node takes messages sealed with the cluster's key, its own open with
    it, and it keeps the connection while they are in order."""
    peer = raft_peer()
    peer.handshake()
    message = peer.receive()
    assert message is not None and isinstance(message[1], dict) and "type" in message[1], message
    assert message[0] == peer.my_key
    peer.send_raw(peer.frame({"type": "nothing"}))         # a message type nobody handles: ignored
    assert not peer.closed_by_node(deadline_s=1.5)


@pytest.mark.parametrize("damage", ["flip a ciphertext bit", "flip a header bit", "cut short", "empty"])
def test_an_altered_or_cut_message_ends_the_connection(raft_peer, damage):
    peer = raft_peer()
    framed = bytearray(peer.frame(peer.my_key))
    if damage == "flip a ciphertext bit":
        framed[-20] ^= 0x01
    elif damage == "flip a header bit":
        framed[4 + 5] ^= 0x01           # the timestamp: authenticated
    elif damage == "cut short":
        framed = bytearray(struct.pack("i", len(framed) - 4 - 17) + framed[4:-17])
    else:
        framed = bytearray(struct.pack("i", 0))
    peer.send_raw(bytes(framed))
    assert peer.closed_by_node()


def test_a_message_replayed_or_older_than_the_last_ends_the_connection(raft_peer):
    peer = raft_peer()
    first = peer.frame(peer.my_key)
    peer.send_raw(first)
    key_message = peer.receive()
    assert key_message is not None
    peer.node_key = key_message[1]
    peer.send_raw(peer.frame("readonly"))
    assert peer.receive() is not None                       # the node accepted us: it sends AppendEntries
    peer.send_raw(first)                                    # the first message again, after a later one
    assert peer.closed_by_node()

    late = raft_peer()
    late.handshake()
    assert late.receive() is not None
    late.send_raw(late.frame({"type": "nothing"}, at=0))    # sealed now, stamped with an older time
    assert late.closed_by_node()


@pytest.mark.parametrize("sealed_with", ["another key", "Fernet with the right secret"])
def test_a_message_sealed_otherwise_ends_the_connection(raft_peer, pod_up, sealed_with):
    """A stranger's key, and pysyncobj's own format even with the cluster's password (nodes before the AEAD:
    the formats do not mix, see podnode/raft/crypto.py)."""
    peer = raft_peer()
    secret = (pod_up.data_dir / "secret").read_text().strip()
    cipher = MessageCipher("not the secret") if sealed_with == "another key" else getEncryptor(secret)
    peer.send_raw(peer.frame(peer.my_key, cipher=cipher))
    assert peer.closed_by_node()
