"""pod-bootstrap `cloud`: seed and grow a cluster on cloud servers through the libcloud provider."""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..scaling import userdata
from .state import (
    BootstrapError,
    Out,
    T,
    already_running,
    existing_cluster,
    load_state,
    member_status,
    new_secret,
    new_state,
    poll,
    report,
    save_state,
    say,
    state_path,
    workers,
)

# ---------------------------------------------------------------------------------------------------- cloud


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one provider coroutine to completion from synchronous code."""
    return asyncio.run(coro)


def load_provider_options(path: str | Path) -> dict[str, Any]:
    """The libcloud provider's options from a JSON file (as for `podnode --provider-config`)."""
    from ..scaling.factory import read_options
    try:
        return read_options(path)
    except ValueError as err:
        raise BootstrapError(str(err)) from None


def provider_from_options(options: dict[str, Any], secret: str) -> Any:
    """A LibcloudProvider for the options (driver, key, image, size, ...; "register": "module:function" runs
    first), with no join URL yet: the first node it launches is a seed."""
    from ..scaling.providers import LibcloudProvider
    opts = dict(options)
    register = opts.pop("register", None)
    if register:
        module, _, func = str(register).partition(":")
        getattr(importlib.import_module(module), func or "register")()
    try:
        return LibcloudProvider(join_url=None, cluster_secret=secret, **opts)   # type: ignore[arg-type]
    except TypeError as err:
        raise BootstrapError(f"bad provider options: {err}") from None


def server_url(node: Any) -> str | None:
    """A cloud server's POD API URL: extra["http_url"] if the driver says, else its public IP on port 8080."""
    extra = getattr(node, "extra", None) or {}
    if extra.get("http_url"):
        return str(extra["http_url"])
    ips = [ip for ip in (getattr(node, "public_ips", None) or []) if ip]
    if not ips:
        return None
    host = f"[{ips[0]}]" if ":" in ips[0] else ips[0]
    return f"http://{host}:{userdata.HTTP_PORT}"


def find_server(provider: Any, node_id: str) -> Any:
    """The live server of `node_id`, or None (also when listing fails: callers poll)."""
    from libcloud.compute.types import NodeState
    name = provider.server_name(node_id)
    try:
        nodes = provider.driver.list_nodes()
    except Exception:  # noqa: BLE001 - any cloud hiccup: the caller polls again
        return None
    return next((n for n in nodes if n.name == name and n.state != NodeState.TERMINATED), None)


def seed_url_when_leading(provider: Any, node_id: str) -> str | None:
    """The seed's URL once its /status shows it as the leader, else None."""
    url = server_url(find_server(provider, node_id))
    status = member_status(url, provider.cluster_secret)
    return url if status and status.get("node") == node_id and status.get("leader") == node_id else None


def cloud_member(provider: Any, launched: Any) -> dict[str, Any]:
    """The record of one cloud server."""
    return {"id": launched.node_id, "server": provider.server_name(launched.node_id), "server_id": launched.ref,
            "url": server_url(find_server(provider, launched.node_id))}


def launch_joiners(provider: Any, node_ids: list[str]) -> tuple[list[Any], list[BaseException]]:
    """Launch servers that join provider.join_url, all at once; returns (launched, errors)."""
    async def launch_all() -> list[Any]:
        return await asyncio.gather(*(provider.launch(n) for n in node_ids), return_exceptions=True)
    results = run_async(launch_all())
    return ([r for r in results if not isinstance(r, BaseException)],
            [r for r in results if isinstance(r, BaseException)])


def launch_cloud(provider: Any, state: dict[str, Any], state_dir: Path, nodes: int, timeout_s: float,
                 out: Out) -> None:
    """Seed on n1, wait for it to lead, launch n2..nN joining it, wait until all are registered.
    Every server is recorded as soon as the cloud accepts it."""
    ids = [f"n{i + 1}" for i in range(nodes)]
    out(f"launching seed {provider.server_name(ids[0])}...")
    state["members"] = [cloud_member(provider, run_async(provider.launch(ids[0])))]
    save_state(state_dir, state)
    seed_url = poll(lambda: seed_url_when_leading(provider, ids[0]), timeout_s=timeout_s,
                    what=f"seed {ids[0]} to lead a one-node cluster")
    state["members"][0]["url"] = seed_url
    provider.join_url = seed_url
    if len(ids) > 1:
        out(f"seed {ids[0]} leads at {seed_url}; launching {len(ids) - 1} more that join it...")
        launched, errors = launch_joiners(provider, ids[1:])
        state["members"] += [cloud_member(provider, n) for n in launched]
        save_state(state_dir, state)
        if errors:
            raise BootstrapError(f"launching failed: {errors[0]}")
    poll(lambda: all(workers(seed_url, state["secret"]).get(n) == "up" for n in ids), timeout_s=timeout_s,
         what=f"{', '.join(ids)} registered at {seed_url}")
    for member in state["members"][1:]:
        member["url"] = member["url"] or server_url(find_server(provider, member["id"]))


def cloud_bootstrap(options: dict[str, Any], *, nodes: int, state_dir: str | Path, name: str = "pod",
                    force: bool = False, timeout_s: float = 900.0, config_path: str | None = None,
                    out: Out = say) -> tuple[Any, dict[str, Any]]:
    """`cloud` mode as a function: returns (the LibcloudProvider used, or None if the cluster already ran;
    the record). Tests keep the provider to destroy what its driver started."""
    if nodes < 1:
        raise BootstrapError("--nodes must be >= 1")
    state_dir = Path(state_dir).resolve()
    old = load_state(state_dir)
    if existing_cluster(old, "cloud", force, state_dir) == "running":
        already_running(old, state_dir, out)
        return None, old
    provider = provider_from_options(options, old["secret"] if old else new_secret())
    if old is not None:
        out(f"--force: destroying the {len(old['members'])} recorded servers first")
        destroy_members(provider, old["members"])
    state = new_state(old["name"] if old else name, "cloud", provider.cluster_secret)
    state["cloud"] = {"provider_config": config_path, "driver": provider.driver_name,
                      "name_prefix": provider.name_prefix}
    state["status"] = "starting"
    try:
        launch_cloud(provider, state, state_dir, nodes, timeout_s, out)
    except Exception as err:
        state["status"] = "failed"
        save_state(state_dir, state)
        raise BootstrapError(f"{err}; the launched servers still run: `pod-bootstrap stop --state-dir "
                             f"{state_dir}` destroys them") from None
    state["status"] = "running"
    save_state(state_dir, state)
    report(state, state_dir, out)
    return provider, state


def destroy_members(provider: Any, members: list[dict[str, Any]]) -> None:
    """Destroy the members' servers (found by name; already gone is fine)."""
    async def destroy_all() -> None:
        await asyncio.gather(*(provider.destroy(m["id"]) for m in members))
    run_async(destroy_all())


def destroy_cloud(provider: Any, state_dir: str | Path, out: Out = say) -> None:
    """Destroy the recorded cloud servers and mark the cluster stopped."""
    state = load_state(state_dir)
    if state is None or state["mode"] != "cloud":
        raise BootstrapError(f"no cloud cluster recorded in {state_path(state_dir)}")
    destroy_members(provider, state["members"])
    state["status"] = "stopped"
    save_state(state_dir, state)
    out(f"destroyed {len(state['members'])} servers of cloud cluster {state['name']!r}")


def cmd_cloud(args: argparse.Namespace, out: Out = say) -> int:
    """`cloud`: seed and grow a cluster through the libcloud provider."""
    path = str(Path(args.provider_config).resolve())
    cloud_bootstrap(load_provider_options(path), nodes=args.nodes, state_dir=args.state_dir, name=args.name,
                    force=args.force, timeout_s=args.timeout, config_path=path, out=out)
    return 0
