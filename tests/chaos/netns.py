"""Throw-away network namespaces for partition tests: one namespace per node, joined by a bridge.

Each node namespace has two links: a cluster link into a bridge namespace (the Raft network, which a
test cuts with `ip link set ... down`) and a management link to the test's own namespace (its HTTP
API, which stays up so the test can watch both sides of a partition). Everything lives in namespaces
this test creates and deletes; addresses are 10.213.0.0/16 inside them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass


def available() -> str | None:
    """None when namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    probe = f"podprobe{secrets.token_hex(2)}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"'ip netns add' failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    name: str        # namespace
    cluster_ip: str  # on the bridge: Raft and node-to-node HTTP
    mgmt_ip: str     # reachable from the test's namespace
    cluster_if: str  # the cluster link inside the namespace (cut it to partition the host)


class Network:
    def __init__(self, hosts: int):
        tag = secrets.token_hex(2)
        self.bridge_ns = f"podbr{tag}"
        self.hosts: list[Host] = []
        self._root_links: list[str] = []
        ip("netns", "add", self.bridge_ns)
        try:
            ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for i in range(1, hosts + 1):
                self.hosts.append(self._add_host(tag, i))
        except BaseException:
            self.close()
            raise

    def _add_host(self, tag: str, i: int) -> Host:
        ns = f"pod{tag}h{i}"
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        cluster_if, bridge_if = f"pc{tag}{i}", f"pb{tag}{i}"
        ip("link", "add", cluster_if, "type", "veth", "peer", "name", bridge_if)
        ip("link", "set", cluster_if, "netns", ns)
        ip("link", "set", bridge_if, "netns", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", bridge_if, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"10.213.1.{i}/24", "dev", cluster_if)
        ip("-n", ns, "link", "set", cluster_if, "up")
        mgmt_if, root_if = f"pm{tag}{i}", f"pr{tag}{i}"
        ip("link", "add", mgmt_if, "type", "veth", "peer", "name", root_if)
        self._root_links.append(root_if)
        ip("link", "set", mgmt_if, "netns", ns)
        ip("addr", "add", f"10.213.{10 + i}.1/30", "dev", root_if)
        ip("link", "set", root_if, "up")
        ip("-n", ns, "addr", "add", f"10.213.{10 + i}.2/30", "dev", mgmt_if)
        ip("-n", ns, "link", "set", mgmt_if, "up")
        return Host(ns, f"10.213.1.{i}", f"10.213.{10 + i}.2", cluster_if)

    def cut(self, host: Host) -> None:
        ip("-n", host.name, "link", "set", host.cluster_if, "down")

    def heal(self, host: Host) -> None:
        ip("-n", host.name, "link", "set", host.cluster_if, "up")

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        for link in self._root_links:  # normally gone with their peers; make sure
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.bridge_ns], capture_output=True)
