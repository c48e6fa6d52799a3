"""Joining a running cluster before the node starts: find a member (--join auto, over zeroconf, keeping only one
that proves it knows the cluster secret), ask it to let this node in with a request signed with the secret (never
the secret itself), and return the config the node starts with (its peers, and whether it starts as an observer)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from ..cluster_secret import check_proof, new_challenge
from ..config import NodeConfig
from ..discovery import find_members
from ..tls import peer_context
from .peers import PEER_ERRORS, PeerClient, member_url

log = logging.getLogger("podnode")


async def join_cluster(cfg: NodeConfig) -> tuple[list[str], str]:
    """Ask a member to let this node in; return the voters' Raft addresses and this node's role (a voter,
    or an observer once the cluster has max_voters voters)."""
    url = member_url(cfg.join or "", cfg.http_scheme)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.join_timeout_s
    peers = PeerClient(secret=cfg.secret, timeout_s=cfg.forward_timeout_s, ssl_context=peer_context(cfg))
    try:
        while True:
            try:
                body, status = await peers.post(url, "/internal/join",
                                                {"node": cfg.node_id, "raftAddr": cfg.raft_addr},
                                                timeout_s=cfg.forward_timeout_s)
                if status == 200:
                    return list(body["members"]), body.get("role", "voter")
                why = body.get("error", f"HTTP {status}")
                if status == 401:
                    raise SystemExit(f"cannot join through {url}: {why}: give this node the cluster's secret in "
                                     "POD_SECRET (pod up keeps it in DATA/secret)")
                if status < 500:
                    raise SystemExit(f"cannot join through {url}: {why}")
            except PEER_ERRORS as exc:
                why = repr(exc)
            if loop.time() > deadline:
                raise SystemExit(f"cannot join through {url} within {cfg.join_timeout_s:g} s: {why}")
            log.info("join through %s not done yet (%s); retrying", url, why, extra={"peer": url})
            await asyncio.sleep(cfg.join_retry_s)
    finally:
        await peers.close()


async def proven(url: str, cfg: NodeConfig) -> bool:
    """Does the node at `url` (found over zeroconf) know the cluster secret? It must answer a fresh challenge
    with an HMAC of it, its id and its own URL (the one it announced), made with the secret; nothing secret is
    sent to it. False (and a log line saying why it is skipped) for any other answer, or none."""
    challenge = new_challenge()
    peers = PeerClient(secret=cfg.secret, timeout_s=cfg.peer_timeout_s, ssl_context=peer_context(cfg))
    try:
        body, status = await peers.post(url, "/internal/prove", {"challenge": challenge},
                                        timeout_s=cfg.peer_timeout_s, sign=False)
    except PEER_ERRORS as exc:
        log.warning("--join auto: skipping %s: it did not answer the challenge (%r)", url, exc)
        return False
    finally:
        await peers.close()
    if status == 200 and isinstance(body, dict) and isinstance(body.get("node"), str) and body.get("url") == url \
            and cfg.secret and check_proof(cfg.secret, challenge, body["node"], url, body.get("proof")):
        return True
    log.warning("--join auto: skipping %s: it announces cluster %r but did not prove it knows the cluster secret "
                "(HTTP %s); a rogue announcer, or a cluster of that name with another secret", url,
                cfg.cluster_name, status)
    return False


async def joined(cfg: NodeConfig) -> NodeConfig:
    """The config to start with: `cfg` itself without --join; else, after joining through the member (found
    on the local network for --join auto, and proven to know the secret), the members as peers and the role
    joining gave."""
    if cfg.join == "auto":
        found = await find_members(cluster=cfg.cluster_name, timeout_s=cfg.discovery_timeout_s,
                                   interfaces=cfg.zeroconf_interfaces, exclude_node=cfg.node_id)
        if not found:
            raise SystemExit(f"--join auto: no member of cluster {cfg.cluster_name!r} answered on the local "
                             f"network within {cfg.discovery_timeout_s:g} s")
        log.info("found cluster %s through zeroconf: %s", cfg.cluster_name, found)
        members = [url for url in found if await proven(url, cfg)]
        if not members:
            raise SystemExit(f"--join auto: none of the nodes announcing cluster {cfg.cluster_name!r} proved it "
                             "knows this node's cluster secret: give this node the cluster's secret in POD_SECRET")
        cfg = dataclasses.replace(cfg, join=members[0])
    if not cfg.join:
        return cfg
    members, role = await join_cluster(cfg)
    log.info("joined through %s as %s; voters %s", cfg.join, role, members, extra={"peer": cfg.join, "role": role})
    return dataclasses.replace(cfg, peers=[m for m in members if m != cfg.raft_addr], observer=role == "observer")
