"""A libcloud compute driver whose "servers" are podnode processes on this machine, for testing providers.

Unlike libcloud's Dummy driver it gives every node a fresh id and really runs what the user data asks for:
it reads the settings block with `userdata.parse` and starts `python -m podnode` joining the cluster, or, when
POD_JOIN is empty, a seed: a node with neither --join nor --peers that becomes a one-node cluster. Each node's HTTP
URL is in node.extra["http_url"].
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import libcloud.compute.providers
from libcloud.common.base import ConnectionKey
from libcloud.common.types import LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from podnode.local.procs import free_ports, stop_popen
from podnode.scaling import userdata

DRIVER_TYPE = "podtest"
FAST_ARGS = ["--election-timeout-s", "0.3", "--node-lost-after-s", "1.5"]
STOP_GRACE_S = 10.0

_register_lock = threading.Lock()


def register() -> None:
    """Make get_driver("podtest") return PodTestNodeDriver; calling it again is harmless."""
    with _register_lock:
        if DRIVER_TYPE not in libcloud.compute.providers.DRIVERS:
            libcloud.compute.providers.set_driver(DRIVER_TYPE, "tests.scaling.podtest_driver", "PodTestNodeDriver")


class _NoConnection(ConnectionKey):
    """This cloud has no API endpoint: connecting does nothing."""

    def connect(self, *args, **kwargs) -> None:
        return None


@dataclass
class _Server:
    node: Node
    proc: subprocess.Popen
    http_url: str


class PodTestNodeDriver(NodeDriver):
    """Servers are local podnode processes; sizes "small" ($0.05/h) and "large" ($0.20/h), one image and location.
    A third size, "sold-out" ($0.10/h), is listed but never available: create_node of it always fails."""

    type = DRIVER_TYPE
    name = "POD test cloud"
    website = "http://127.0.0.1/"
    connectionCls = _NoConnection
    features = {"create_node": []}

    def __init__(self, key: str, secret: str | None = None, data_dir: str | Path | None = None, **kwargs):
        if data_dir is None:
            raise ValueError("PodTestNodeDriver needs data_dir (pass it in driver_kwargs)")
        super().__init__(key, secret, **kwargs)
        self.data_dir = Path(data_dir)
        self.fail_next_create = False        # set True to make the next create_node raise LibcloudError
        self.created: list[Node] = []        # every node ever created, for tests
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()

    # -- catalogue

    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [NodeSize(id="small", name="small", ram=1024, disk=10, bandwidth=None, price=0.05, driver=self),
                NodeSize(id="large", name="large", ram=4096, disk=40, bandwidth=None, price=0.20, driver=self),
                NodeSize(id="sold-out", name="sold-out", ram=1024, disk=10, bandwidth=None, price=0.10, driver=self)]

    def list_images(self, location: NodeLocation | None = None, ex_only_active: bool = True) -> list[NodeImage]:
        return [NodeImage(id="pod-image", name="pod-image", driver=self)]

    def list_locations(self) -> list[NodeLocation]:
        return [NodeLocation(id="local", name="local", country="--", driver=self)]

    # -- nodes

    def create_node(self, name: str, size: NodeSize, image: NodeImage, location: NodeLocation | None = None,
                    ex_userdata: str | None = None) -> Node:
        """Start the podnode the user data describes, on loopback with free ports."""
        if self.fail_next_create or size.id == "sold-out":
            self.fail_next_create = False
            raise LibcloudError(f"simulated failure: out of capacity for {size.id}", driver=self)
        if not ex_userdata:
            raise LibcloudError("podtest servers need ex_userdata to know what to run", driver=self)
        settings = userdata.parse(ex_userdata)
        proc, http_url = self._start(name, settings)
        node = Node(id=uuid.uuid4().hex, name=name, state=NodeState.RUNNING, public_ips=["127.0.0.1"],
                    private_ips=[], driver=self, size=size, image=image,
                    extra={"pid": proc.pid, "http_url": http_url, "location": getattr(location, "id", None)})
        with self._lock:
            self._servers[node.id] = _Server(node, proc, http_url)
            self.created.append(node)
        return node

    def _start(self, name: str, settings: dict[str, str]) -> tuple[subprocess.Popen, str]:
        http_port, raft_port = free_ports(2)
        node_dir = self.data_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "podnode", "--id", settings["POD_NODE_ID"],
               "--http", f"127.0.0.1:{http_port}", "--raft", f"127.0.0.1:{raft_port}", "--advertise-host", "127.0.0.1",
               "--data-dir", str(node_dir), "--slots", settings["POD_SLOTS"], *FAST_ARGS]
        if settings.get("POD_JOIN"):
            cmd += ["--join", settings["POD_JOIN"]]
        env = {k: v for k, v in os.environ.items() if k != "POD_SECRET"}
        if settings.get("POD_SECRET"):
            env["POD_SECRET"] = settings["POD_SECRET"]    # as the real run script's secret: not in argv
        with open(self.data_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        return proc, f"http://127.0.0.1:{http_port}"

    def list_nodes(self) -> list[Node]:
        """Servers whose process is still running."""
        with self._lock:
            return [s.node for s in self._servers.values() if s.proc.poll() is None]

    def destroy_node(self, node: Node) -> bool:
        """SIGTERM the server's process group, SIGKILL after 10 s; False for a node this cloud does not have."""
        with self._lock:
            server = self._servers.pop(node.id, None)
        if server is None:
            return False
        stop_popen(server.proc, STOP_GRACE_S)
        server.node.state = NodeState.TERMINATED
        return True

    def destroy_all(self) -> None:
        """Stop every server (test cleanup)."""
        with self._lock:
            nodes = [s.node for s in self._servers.values()]
        for node in nodes:
            self.destroy_node(node)
