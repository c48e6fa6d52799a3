"""Tests for podnode.discovery: zeroconf announce/browse over real mDNS on the loopback interface.

Every zeroconf instance is bound to 127.0.0.1 (interfaces=["127.0.0.1"]), so nothing leaves the machine.
The `lo_interfaces` fixture first checks that multicast on loopback really round-trips; if it does not, it
sets the MULTICAST flag on lo (restored afterwards) and, failing that, skips the network tests.
Each test uses its own cluster names (a random suffix) so concurrent or repeated runs never see each other.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from podnode import __version__, discovery
from podnode.discovery import SERVICE_TYPE, Announcer, find_members

LOOPBACK = "127.0.0.1"
MDNS_GROUP = "224.0.0.251"
IFF_MULTICAST = 0x1000
LO_FLAGS = Path("/sys/class/net/lo/flags")
FIND_TIMEOUT_S = 3.0
SLACK_S = 1.5
GONE_DEADLINE_S = 15.0

Announce = Callable[..., Awaitable[Announcer]]


# ---------------------------------------------------------------- multicast on loopback

def loopback_multicast_works(*, timeout_s: float = 1.0) -> bool:
    """Send one UDP datagram to the mDNS group through 127.0.0.1 and check that a member socket receives it."""
    token = secrets.token_bytes(8)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as tx:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", 0))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          socket.inet_aton(MDNS_GROUP) + socket.inet_aton(LOOPBACK))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(token, (MDNS_GROUP, rx.getsockname()[1]))
            deadline = time.monotonic() + timeout_s
            while (left_s := deadline - time.monotonic()) > 0:
                rx.settimeout(left_s)
                data, _ = rx.recvfrom(64)
                if data == token:
                    return True
    except OSError:
        return False
    return False


def lo_has_multicast_flag() -> bool | None:
    """Whether lo carries IFF_MULTICAST; None when that cannot be read."""
    try:
        return bool(int(LO_FLAGS.read_text(), 16) & IFF_MULTICAST)
    except (OSError, ValueError):
        return None


def set_lo_multicast(on: bool) -> bool:
    """`ip link set lo multicast on|off`; True when the command succeeded."""
    try:
        done = subprocess.run(["ip", "link", "set", "lo", "multicast", "on" if on else "off"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def lo_interfaces() -> Iterator[list[str]]:
    """interfaces=[127.0.0.1] for zeroconf, once multicast on loopback is known to work (skip otherwise)."""
    if loopback_multicast_works():
        yield [LOOPBACK]
        return
    changed = False
    if lo_has_multicast_flag() is False and os.geteuid() == 0:
        changed = set_lo_multicast(True)
    try:
        if not loopback_multicast_works():
            pytest.skip("multicast on the loopback interface does not work here "
                        f"(lo MULTICAST flag: {lo_has_multicast_flag()}, set by test: {changed})")
        yield [LOOPBACK]
    finally:
        if changed:
            set_lo_multicast(False)


# ---------------------------------------------------------------- helpers and fixtures

def cluster_name(base: str) -> str:
    """A cluster name unique to this test run, so concurrent runs never mix."""
    return f"{base}-{secrets.token_hex(3)}"


def node_url(port: int) -> str:
    """A member URL on loopback (nothing listens there; only the announcement matters)."""
    return f"http://{LOOPBACK}:{port}"


@pytest.fixture
async def announce(lo_interfaces: list[str]) -> AsyncIterator[Announce]:
    """Start announcers on loopback; all are stopped at teardown."""
    started: list[Announcer] = []

    async def start(cluster: str, node_id: str, port: int) -> Announcer:
        ann = Announcer(cluster=cluster, node_id=node_id, http_url=node_url(port), interfaces=lo_interfaces)
        await asyncio.wait_for(ann.start(), timeout=10)
        started.append(ann)
        return ann

    yield start
    for ann in started:
        await asyncio.wait_for(ann.stop(), timeout=10)


async def find(cluster: str, interfaces: list[str], *, timeout_s: float = FIND_TIMEOUT_S,
               exclude_node: str | None = None) -> list[str]:
    """find_members on loopback, itself bounded by an outer deadline."""
    return await asyncio.wait_for(
        find_members(cluster=cluster, timeout_s=timeout_s, interfaces=interfaces, exclude_node=exclude_node),
        timeout=timeout_s + SLACK_S + 5)


# ---------------------------------------------------------------- pure helpers

def test_service_name_and_label() -> None:
    assert discovery.service_name("alpha", "n1") == "alpha-n1._pod._tcp.local."
    long_label = discovery.instance_label("c" * 40, "n" * 40)
    assert len(long_label.encode()) == discovery.MAX_INSTANCE_LABEL_BYTES


def test_server_hostname_is_dns_safe() -> None:
    assert discovery.server_hostname("my cluster", "node_1.a") == "pod-my-cluster-node-1-a.local."


@pytest.mark.parametrize(("url", "port"), [("http://10.0.0.1:8080", 8080), ("http://h", 80), ("https://h/x", 443)])
def test_url_port(url: str, port: int) -> None:
    assert discovery.url_port(url) == port


async def test_url_addresses() -> None:
    assert await discovery.url_addresses("http://10.1.2.3:80") == ["10.1.2.3"]
    assert await discovery.url_addresses("http://[::1]:80") == ["::1"]
    assert await discovery.url_addresses("http://0.0.0.0:80") == []
    assert LOOPBACK in await discovery.url_addresses("http://localhost:80")


def test_member_url_filters_cluster_and_node() -> None:
    props = {"cluster": "alpha", "node": "n1", "url": "http://x:1"}
    assert discovery.member_url(props, cluster="alpha", exclude_node=None) == "http://x:1"
    assert discovery.member_url(props, cluster="beta", exclude_node=None) is None
    assert discovery.member_url(props, cluster="alpha", exclude_node="n1") is None
    assert discovery.member_url({**props, "url": ""}, cluster="alpha", exclude_node=None) is None


def test_decode_properties() -> None:
    assert discovery.decode_properties({b"cluster": b"alpha", b"flag": None}) == {"cluster": "alpha", "flag": ""}


def test_announcer_rejects_empty_fields() -> None:
    with pytest.raises(ValueError):
        Announcer(cluster="", node_id="n1", http_url="http://127.0.0.1:1")


# ---------------------------------------------------------------- over mDNS on loopback

async def test_announcement_carries_txt_port_and_address(announce: Announce, lo_interfaces: list[str]) -> None:
    alpha = cluster_name("alpha")
    ann = await announce(alpha, "n1", 18001)
    assert ann.service_name == f"{alpha}-n1.{SERVICE_TYPE}"
    azc = AsyncZeroconf(interfaces=lo_interfaces)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, ann.service_name)
        assert await info.async_request(azc.zeroconf, 3000)
    finally:
        await azc.async_close()
    assert discovery.decode_properties(info.properties) == {
        "cluster": alpha, "node": "n1", "url": node_url(18001), "version": __version__}
    assert info.port == 18001
    assert info.parsed_addresses() == [LOOPBACK]


async def test_single_member_is_found_early(announce: Announce, lo_interfaces: list[str]) -> None:
    alpha = cluster_name("alpha")
    await announce(alpha, "n1", 18011)
    started = time.monotonic()
    assert await find(alpha, lo_interfaces, timeout_s=5.0) == [node_url(18011)]
    assert time.monotonic() - started < 3.0, "should return ~0.5 s after the first match, not at timeout_s"


async def test_clusters_do_not_mix(announce: Announce, lo_interfaces: list[str]) -> None:
    alpha, beta = cluster_name("alpha"), cluster_name("beta")
    await asyncio.gather(announce(alpha, "n1", 18021), announce(alpha, "n2", 18022), announce(beta, "b1", 18023))
    assert await find(alpha, lo_interfaces) == [node_url(18021), node_url(18022)]
    assert await find(beta, lo_interfaces) == [node_url(18023)]


async def test_exclude_node(announce: Announce, lo_interfaces: list[str]) -> None:
    alpha = cluster_name("alpha")
    await asyncio.gather(announce(alpha, "n1", 18031), announce(alpha, "n2", 18032))
    assert await find(alpha, lo_interfaces, exclude_node="n1") == [node_url(18032)]
    assert await find(alpha, lo_interfaces, exclude_node="n2") == [node_url(18031)]


async def test_stopped_member_disappears(announce: Announce, lo_interfaces: list[str]) -> None:
    alpha = cluster_name("alpha")
    n1, _ = await asyncio.gather(announce(alpha, "n1", 18041), announce(alpha, "n2", 18042))
    assert await find(alpha, lo_interfaces) == [node_url(18041), node_url(18042)]
    await n1.stop()
    await n1.stop()  # idempotent
    deadline = time.monotonic() + GONE_DEADLINE_S
    urls = await find(alpha, lo_interfaces, timeout_s=1.0)
    while urls != [node_url(18042)] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        urls = await find(alpha, lo_interfaces, timeout_s=1.0)
    assert urls == [node_url(18042)]


async def test_unknown_cluster_returns_empty_within_timeout(announce: Announce, lo_interfaces: list[str]) -> None:
    await announce(cluster_name("alpha"), "n1", 18051)
    timeout_s = 1.5
    started = time.monotonic()
    assert await find(cluster_name("nobody"), lo_interfaces, timeout_s=timeout_s) == []
    elapsed_s = time.monotonic() - started
    assert timeout_s - 0.1 <= elapsed_s < timeout_s + SLACK_S
