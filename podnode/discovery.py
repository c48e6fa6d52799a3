"""Zeroconf (mDNS) discovery of POD cluster members on the local network, for ``--join auto``.

Every member announces one ``_pod._tcp.local.`` service whose TXT record carries the cluster's name, the
node id, the member's HTTP URL and the podnode version. A joining node browses that service type and keeps
only the members whose TXT ``cluster`` equals its own, so two clusters on one LAN never mix.

Everything here runs on the asyncio event loop through zeroconf's async API (AsyncZeroconf,
AsyncServiceBrowser, AsyncServiceInfo.async_request); nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import urllib.parse
from typing import Any

from zeroconf import InterfaceChoice, InterfacesType, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from podnode import __version__

log = logging.getLogger(__name__)

SERVICE_TYPE = "_pod._tcp.local."
SETTLE_AFTER_FIRST_MATCH_S = 0.5       # keep listening this long after the first match, for the other members
MAX_INSTANCE_LABEL_BYTES = 56          # a DNS label holds 63 bytes; leave room for zeroconf's "-N" renames
_HOSTNAME_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def interface_choice(interfaces: list[str] | None) -> InterfacesType:
    """What to pass to Zeroconf(interfaces=...): the given addresses, or every interface when None."""
    return InterfaceChoice.All if interfaces is None else list(interfaces)


def instance_label(cluster: str, node_id: str) -> str:
    """The service instance label ``{cluster}-{node_id}``, cut to MAX_INSTANCE_LABEL_BYTES of UTF-8."""
    label = f"{cluster}-{node_id}"
    return label.encode()[:MAX_INSTANCE_LABEL_BYTES].decode(errors="ignore")


def service_name(cluster: str, node_id: str) -> str:
    """The full mDNS service instance name, e.g. ``alpha-n1._pod._tcp.local.``."""
    return f"{instance_label(cluster, node_id)}.{SERVICE_TYPE}"


def server_hostname(cluster: str, node_id: str) -> str:
    """A host name for the SRV record, made of DNS-safe characters only: ``pod-{cluster}-{node_id}.local.``."""
    safe = _HOSTNAME_UNSAFE.sub("-", f"pod-{cluster}-{node_id}").strip("-")[:63].rstrip("-")
    return f"{safe or 'pod'}.local."


def url_port(http_url: str) -> int:
    """The TCP port of an HTTP(S) URL, using the scheme's default when the URL names none."""
    parts = urllib.parse.urlsplit(http_url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


async def url_addresses(http_url: str) -> list[str]:
    """The IP addresses to announce for the URL's host: the literal itself, or the host resolved without
    blocking the loop. An unspecified address (0.0.0.0, ::) or an unresolvable name gives []."""
    host = urllib.parse.urlsplit(http_url).hostname
    if not host:
        return []
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return [] if literal.is_unspecified else [str(literal)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=0)
    except OSError as exc:
        log.warning("discovery: cannot resolve %s (%s); announcing without addresses", host, exc)
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def txt_properties(*, cluster: str, node_id: str, http_url: str) -> dict[str, str]:
    """The TXT record of a member: cluster, node, url and version."""
    return {"cluster": cluster, "node": node_id, "url": http_url, "version": __version__}


def decode_properties(raw: dict[bytes, bytes | None]) -> dict[str, str]:
    """TXT properties as text; keys without a value map to ''."""
    return {k.decode(errors="replace"): (v or b"").decode(errors="replace") for k, v in raw.items()}


def member_url(properties: dict[str, str], *, cluster: str, exclude_node: str | None) -> str | None:
    """The member's HTTP URL when its TXT says it belongs to `cluster` and is not `exclude_node`; else None."""
    if properties.get("cluster") != cluster:
        return None
    if exclude_node is not None and properties.get("node") == exclude_node:
        return None
    return properties.get("url") or None


class Announcer:
    """Announce this node: instance name f"{cluster}-{node_id}._pod._tcp.local.", port = HTTP port,
    addresses = [ip of the URL's host], TXT properties cluster, node, url and version."""

    def __init__(self, *, cluster: str, node_id: str, http_url: str, interfaces: list[str] | None = None):
        if not cluster or not node_id or not http_url:
            raise ValueError("cluster, node_id and http_url must be non-empty")
        self.cluster = cluster
        self.node_id = node_id
        self.http_url = http_url
        self.interfaces = interfaces
        self._zc: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None

    @property
    def service_name(self) -> str | None:
        """The registered instance name (zeroconf may have renamed it on a conflict); None when not started."""
        return self._info.name if self._info is not None else None

    async def build_info(self) -> ServiceInfo:
        """The ServiceInfo this node announces."""
        return ServiceInfo(
            SERVICE_TYPE,
            service_name(self.cluster, self.node_id),
            port=url_port(self.http_url),
            properties=txt_properties(cluster=self.cluster, node_id=self.node_id, http_url=self.http_url),
            server=server_hostname(self.cluster, self.node_id),
            parsed_addresses=await url_addresses(self.http_url),
        )

    async def start(self) -> None:
        """Register the service (renaming it on a conflict) and return once it has been announced."""
        if self._zc is not None:
            return
        info = await self.build_info()
        zc = AsyncZeroconf(interfaces=interface_choice(self.interfaces))
        try:
            announced = await zc.async_register_service(info, allow_name_change=True)
            await announced
        except BaseException:
            await zc.async_close()
            raise
        self._zc, self._info = zc, info
        log.info("discovery: announcing %s at %s", info.name, self.http_url)

    async def stop(self) -> None:
        """Unregister the service (sending goodbye packets) and close zeroconf; safe to call more than once."""
        zc, info = self._zc, self._info
        self._zc = self._info = None
        if zc is None or info is None:
            return
        try:
            goodbye = await zc.async_unregister_service(info)
            await goodbye
        except Exception as exc:  # closing below must still happen
            log.warning("discovery: unregistering %s failed: %s", info.name, exc)
        finally:
            await zc.async_close()


class _MemberCollector:
    """Browser handler for one find_members call: resolves each seen service and keeps the matching URLs."""

    def __init__(self, zc: Zeroconf, *, cluster: str, exclude_node: str | None, resolve_timeout_ms: float):
        self.zc = zc
        self.cluster = cluster
        self.exclude_node = exclude_node
        self.resolve_timeout_ms = resolve_timeout_ms
        self.urls_by_name: dict[str, str] = {}
        self.first_match = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange, **_: Any) -> None:
        """AsyncServiceBrowser handler (called on the loop): resolve added/updated services, drop removed ones."""
        if state_change is ServiceStateChange.Removed:
            self.urls_by_name.pop(name, None)
            return
        task = asyncio.create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        """Fetch the service's TXT record (from the cache when it is there) and record a matching member."""
        info = AsyncServiceInfo(service_type, name)
        try:
            resolved = await info.async_request(self.zc, self.resolve_timeout_ms)
        except Exception as exc:  # e.g. zeroconf shutting down; one unresolved service must not end the browse
            log.debug("discovery: resolving %s failed: %s", name, exc)
            return
        if not resolved:
            log.debug("discovery: %s did not resolve", name)
            return
        url = member_url(decode_properties(info.properties), cluster=self.cluster, exclude_node=self.exclude_node)
        if url is None:
            self.urls_by_name.pop(name, None)
            return
        self.urls_by_name[name] = url
        self.first_match.set()

    async def wait(self, *, timeout_s: float, settle_s: float) -> None:
        """Wait for the first match (at most timeout_s), then settle_s more, never past timeout_s in total."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self.first_match.wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            return
        await asyncio.sleep(max(0.0, min(settle_s, deadline - loop.time())))

    async def cancel(self) -> None:
        """Cancel the resolutions still in flight and wait for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def urls(self) -> list[str]:
        """The matching members' URLs, sorted and de-duplicated."""
        return sorted(set(self.urls_by_name.values()))


async def find_members(*, cluster: str, timeout_s: float = 5.0, interfaces: list[str] | None = None,
                       exclude_node: str | None = None) -> list[str]:
    """Browse SERVICE_TYPE for up to timeout_s and return the HTTP URLs (TXT 'url') of the members whose TXT
    cluster == `cluster`, other than `exclude_node`; sorted, de-duplicated. Returns early, about
    SETTLE_AFTER_FIRST_MATCH_S after the first match; returns [] when nobody of `cluster` answers in time.
    Services of other clusters are ignored."""
    azc = AsyncZeroconf(interfaces=interface_choice(interfaces))
    collector = _MemberCollector(azc.zeroconf, cluster=cluster, exclude_node=exclude_node,
                                 resolve_timeout_ms=max(timeout_s, 0.0) * 1000)
    browser: AsyncServiceBrowser | None = None
    try:
        browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[collector.on_change])
        await collector.wait(timeout_s=timeout_s, settle_s=SETTLE_AFTER_FIRST_MATCH_S)
    finally:
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        await collector.cancel()
        await azc.async_close()
    return collector.urls()
