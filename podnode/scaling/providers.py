"""Node providers: start and stop servers that join a running POD cluster.

`LocalProvider` starts podnode processes on this machine; `LibcloudProvider` creates servers through any
apache-libcloud compute driver, with cloud-init user data (see `userdata.py`) that installs podnode and joins.
Launching returns as soon as the server is started: waiting for it to register is the caller's business.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from .. import __version__
from ..local.procs import free_ports, stop_foreign_node, stop_popen
from . import userdata

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class LaunchedNode:
    """A server a provider started for the cluster."""

    node_id: str
    ref: str              # provider's handle: a pid for local, the cloud node id for libcloud
    hourly_price: float
    provider: str         # "local" or "libcloud"


class ProviderError(Exception):
    """A launch or destroy that failed; the message says why."""


@runtime_checkable
class Provider(Protocol):
    """What the scaler needs from a place that can start and stop nodes."""

    name: str

    async def prepare(self) -> None:
        """Look up once what launching needs (a cloud's image, size and price); may take network calls.
        The autoscaler calls it at start, with a timeout, and again with back-off while it fails
        (ProviderError); it launches nothing before it succeeded."""
        ...

    def hourly_price(self) -> float:
        """Price per hour of one new node; no I/O once prepare() succeeded."""
        ...

    def slots_per_node(self) -> int:
        """Concurrent executions one new node offers; no I/O."""
        ...

    async def launch(self, node_id: str) -> LaunchedNode:
        """Start a server that joins the cluster as `node_id`; raise ProviderError on failure."""
        ...

    async def destroy(self, node_id: str, ref: str | None = None) -> None:
        """Stop the server of `node_id` (ref: the provider's handle recorded at launch, for a server that
        another leader launched); an unknown id is fine."""
        ...

    async def list_nodes(self) -> list[LaunchedNode]:
        """What this provider has running now."""
        ...


# ---------------------------------------------------------------------------------------------------- local


@dataclass
class _LocalProcess:
    """One podnode process LocalProvider started."""

    node_id: str
    proc: subprocess.Popen
    http_port: int
    raft_port: int
    log_path: Path


class LocalProvider:
    """Nodes as podnode processes on this machine (name "local"; free of charge)."""

    name = "local"

    def __init__(self, *, join_url: str, data_dir: Path, host: str = "127.0.0.1", slots: int | None = None,
                 secret: str | None = None, extra_args: list[str] | None = None, stop_grace_s: float = 10.0):
        self.join_url = join_url
        self.data_dir = Path(data_dir)
        self.host = host
        self.slots = slots
        self.secret = secret
        self.extra_args = list(extra_args or [])
        self.stop_grace_s = stop_grace_s
        self._procs: dict[str, _LocalProcess] = {}

    async def prepare(self) -> None:
        """Nothing to look up."""

    def hourly_price(self) -> float:
        """Local processes cost nothing."""
        return 0.0

    def slots_per_node(self) -> int:
        """The --slots given to new nodes, else podnode's default (one per CPU)."""
        return self.slots if self.slots is not None else (os.cpu_count() or 1)

    def url(self, node_id: str) -> str | None:
        """HTTP URL of a node this provider started, or None (https when the cluster it joins serves https: it
        is given the same TLS options, see factory.tls_args)."""
        entry = self._procs.get(node_id)
        scheme = "https" if self.join_url.startswith("https://") else "http"
        return f"{scheme}://{self.host}:{entry.http_port}" if entry else None

    def command(self, node_id: str, http_port: int, raft_port: int) -> list[str]:
        """The podnode command line for a new node (the secret travels in the environment, not argv)."""
        cmd = [sys.executable, "-m", "podnode", "--id", node_id, "--http", f"{self.host}:{http_port}",
               "--raft", f"{self.host}:{raft_port}", "--join", self.join_url,
               "--data-dir", str(self.data_dir / node_id)]
        if self.slots is not None:
            cmd += ["--slots", str(self.slots)]
        return cmd + self.extra_args

    async def launch(self, node_id: str) -> LaunchedNode:
        """Start a podnode process that joins `join_url`; returns once the process is started."""
        existing = self._procs.get(node_id)
        if existing is not None and existing.proc.poll() is None:
            raise ProviderError(f"local node {node_id} is already running (pid {existing.proc.pid})")
        entry = await asyncio.to_thread(self._start, node_id)
        self._procs[node_id] = entry
        log.info("local: started %s (pid %d, http %s:%d, log %s)", node_id, entry.proc.pid, self.host,
                 entry.http_port, entry.log_path)
        return self._launched(entry)

    def _start(self, node_id: str) -> _LocalProcess:
        """Popen one node in a session of its own, output to DATA_DIR/<id>.log (blocking)."""
        http_port, raft_port = free_ports(2, self.host)
        log_path = self.data_dir / f"{node_id}.log"
        env = dict(os.environ)
        if self.secret:
            env["POD_SECRET"] = self.secret
        try:
            (self.data_dir / node_id).mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(self.command(node_id, http_port, raft_port), stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env)
        except OSError as err:
            raise ProviderError(f"cannot start local node {node_id}: {err}") from err
        return _LocalProcess(node_id, proc, http_port, raft_port, log_path)

    async def destroy(self, node_id: str, ref: str | None = None) -> None:
        """SIGTERM the node's process group, SIGKILL after stop_grace_s; unknown ids are fine. A node that
        another leader launched is found by its pid (ref), checked to still be that podnode."""
        entry = self._procs.pop(node_id, None)
        if entry is None:
            if ref and ref.isdigit():
                if not await asyncio.to_thread(stop_foreign_node, int(ref), node_id, self.stop_grace_s):
                    log.info("local: pid %s is not node %s (any more); nothing to stop", ref, node_id)
            return
        if await asyncio.to_thread(stop_popen, entry.proc, self.stop_grace_s):
            log.warning("local: %s did not stop within %.1f s of SIGTERM; killed it", node_id, self.stop_grace_s)
        log.info("local: stopped %s (pid %d, exit %s)", node_id, entry.proc.pid, entry.proc.returncode)

    async def list_nodes(self) -> list[LaunchedNode]:
        """The nodes whose process is still running."""
        return [self._launched(e) for e in self._procs.values() if e.proc.poll() is None]

    async def close(self) -> None:
        """Destroy every node this provider launched."""
        await asyncio.gather(*(self.destroy(node_id) for node_id in list(self._procs)))

    def _launched(self, entry: _LocalProcess) -> LaunchedNode:
        return LaunchedNode(node_id=entry.node_id, ref=str(entry.proc.pid), hourly_price=0.0, provider=self.name)


# ---------------------------------------------------------------------------------------------------- libcloud


class LibcloudProvider:
    """Nodes as servers of an apache-libcloud compute driver (name "libcloud").

    Each server is named `name_prefix + node_id` and gets cloud-init user data that installs podnode and joins
    `join_url`. Every libcloud call blocks, so each runs in a worker thread.
    """

    name = "libcloud"

    def __init__(self, *, driver: str, key: str, secret: str | None = None, driver_kwargs: dict | None = None,
                 image: str, size: str, location: str | None = None, join_url: str, cluster_secret: str | None,
                 slots: int = 2, name_prefix: str = "pod-"):
        self.driver_name = driver
        self._key = key
        self._secret = secret
        self.driver_kwargs = dict(driver_kwargs or {})
        self.image_ref = image
        self.size_ref = size
        self.location_ref = location
        self.join_url = join_url
        self.cluster_secret = cluster_secret
        self.slots = slots
        self.name_prefix = name_prefix
        self._driver: Any = None
        self._resolved: tuple[Any, Any, Any] | None = None   # (image, size, location or None)
        self._lock = threading.Lock()

    # -- driver and lookups (blocking)

    @property
    def driver(self) -> Any:
        """The libcloud NodeDriver, created on first use (blocking; ProviderError if it cannot be)."""
        with self._lock:
            if self._driver is None:
                self._driver = self._make_driver()
            return self._driver

    def _make_driver(self) -> Any:
        from libcloud.compute.providers import get_driver
        try:
            cls = get_driver(self.driver_name)
            args = (self._key,) if self._secret is None else (self._key, self._secret)
            return cls(*args, **self.driver_kwargs)
        except Exception as err:  # noqa: BLE001 - libcloud raises many kinds
            raise ProviderError(f"cannot create libcloud driver {self.driver_name!r}: {_describe(err)}") from err

    def _resolve(self) -> tuple[Any, Any, Any]:
        """Find the image, size and location named in the configuration (cached; blocking)."""
        if self._resolved is None:
            drv = self.driver
            size = _find("size", self.size_ref, _call(drv.list_sizes, "list_sizes"), _describe_size)
            image = self._find_image(drv)
            location = None
            if self.location_ref is not None:
                location = _find("location", self.location_ref, _call(drv.list_locations, "list_locations"),
                                 _describe_plain)
            self._resolved = (image, size, location)
        return self._resolved

    def _find_image(self, drv: Any) -> Any:
        """get_image(id) where the driver has it (clouds list thousands of images), else search list_images."""
        try:
            image = drv.get_image(self.image_ref)
            if image is not None:
                return image
        except Exception:  # noqa: BLE001 - not implemented, or not an id: fall back to the list
            pass
        return _find("image", self.image_ref, _call(drv.list_images, "list_images"), _describe_plain)

    async def prepare(self) -> None:
        """Create the driver and look up image, size (and so the price) and location now, off the event loop."""
        await asyncio.to_thread(self._resolve)

    # -- Provider

    def hourly_price(self) -> float:
        """NodeSize.price of the configured size (None -> 0.0). Blocks on the first call unless prepare() ran."""
        return _price(self._resolve()[1])

    def slots_per_node(self) -> int:
        return self.slots

    def server_name(self, node_id: str) -> str:
        return self.name_prefix + node_id

    async def launch(self, node_id: str) -> LaunchedNode:
        """create_node with user data that joins the cluster; returns once the cloud accepted it."""
        return await asyncio.to_thread(self._launch, node_id)

    def _launch(self, node_id: str) -> LaunchedNode:
        image, size, location = self._resolve()
        name = self.server_name(node_id)
        if any(n.name == name for n in self._live_nodes()):
            raise ProviderError(f"a server named {name} already exists")
        script = userdata.render(node_id=node_id, join_url=self.join_url, cluster_secret=self.cluster_secret,
                                 slots=self.slots, pod_version=__version__)
        kwargs = self._create_kwargs(name=name, image=image, size=size, location=location, script=script)
        node = _call(lambda: self.driver.create_node(**kwargs), f"create_node {name}")
        price = _price(size)
        log.info("libcloud: created %s (id %s, size %s, $%.4f/h)", name, node.id, size.id, price)
        return LaunchedNode(node_id=node_id, ref=str(node.id), hourly_price=price, provider=self.name)

    def _create_kwargs(self, *, name: str, image: Any, size: Any, location: Any, script: str) -> dict[str, Any]:
        """create_node arguments, leaving out what this driver's create_node does not take."""
        params = inspect.signature(self.driver.create_node).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs: dict[str, Any] = {"name": name, "image": image, "size": size}
        if location is not None:
            if "location" in params or takes_any:
                kwargs["location"] = location
            else:
                log.warning("libcloud: %s create_node takes no location; ignoring %s", self.driver_name,
                            self.location_ref)
        if "ex_userdata" in params:
            kwargs["ex_userdata"] = script
        else:
            log.warning("libcloud: %s create_node takes no ex_userdata; creating %s without user data, so it "
                        "must be an image that starts podnode by itself", self.driver_name, name)
        return kwargs

    async def destroy(self, node_id: str, ref: str | None = None) -> None:
        """Destroy every live server named name_prefix+node_id; none is fine (found by name: ref unused)."""
        await asyncio.to_thread(self._destroy, node_id)

    def _destroy(self, node_id: str) -> None:
        name = self.server_name(node_id)
        for node in [n for n in self._live_nodes() if n.name == name]:
            ok = _call(lambda node=node: self.driver.destroy_node(node), f"destroy_node {name}")
            if ok is False:
                raise ProviderError(f"destroy_node {name} (id {node.id}) returned False")
            log.info("libcloud: destroyed %s (id %s)", name, node.id)

    async def list_nodes(self) -> list[LaunchedNode]:
        """Servers named with name_prefix that are not terminated."""
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[LaunchedNode]:
        fallback = _price(self._resolved[1]) if self._resolved else 0.0
        return [LaunchedNode(node_id=n.name[len(self.name_prefix):], ref=str(n.id),
                             hourly_price=_price(n.size) if getattr(n.size, "price", None) is not None else fallback,
                             provider=self.name)
                for n in self._live_nodes()]

    def _live_nodes(self) -> list[Any]:
        """The driver's nodes with our prefix, not terminated (blocking)."""
        from libcloud.compute.types import NodeState
        nodes = _call(self.driver.list_nodes, "list_nodes")
        return [n for n in nodes if (n.name or "").startswith(self.name_prefix) and n.state != NodeState.TERMINATED]


def _call(fn: Callable[[], T], what: str) -> T:
    """Run one libcloud call, turning whatever it raises into ProviderError."""
    try:
        return fn()
    except ProviderError:
        raise
    except Exception as err:  # noqa: BLE001 - libcloud, requests and driver errors alike
        raise ProviderError(f"libcloud {what} failed: {_describe(err)}") from err


def _find(kind: str, ref: str, items: Sequence[Any], describe: Callable[[Any], str], shown: int = 30) -> Any:
    """The item whose id, else name, is `ref`; ProviderError listing what exists otherwise."""
    for attr in ("id", "name"):
        for item in items:
            if str(getattr(item, attr, None)) == ref:
                return item
    listing = ", ".join(describe(i) for i in items[:shown]) or "none"
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    raise ProviderError(f"no {kind} with id or name {ref!r}; available {kind}s: {listing}{more}")


def _describe_plain(item: Any) -> str:
    return item.id if item.name in (None, "", item.id) else f"{item.id} ({item.name})"


def _describe_size(size: Any) -> str:
    price = f"${size.price}/h" if size.price is not None else "price unknown"
    return f"{_describe_plain(size)}: {size.ram} MB, {price}"


def _price(size: Any) -> float:
    """NodeSize.price as a float; None (or something unreadable) counts as free."""
    price = getattr(size, "price", None)
    try:
        return float(price) if price is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _describe(err: BaseException) -> str:
    text = str(err) or repr(err)
    return f"{type(err).__name__}: {text}"
