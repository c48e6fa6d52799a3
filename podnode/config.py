"""One typed configuration object for a node. Every field says its unit."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from .raft.replica import RaftTiming

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(kw_only=True)
class NodeConfig:
    node_id: str                                  # this node's name in the cluster, e.g. "n1"
    http_host: str = "127.0.0.1"                  # where the action API listens
    http_port: int = 8080
    raft_host: str = "127.0.0.1"                  # where the Raft port listens; peers reach it there
    raft_port: int = 9080
    peers: list[str] = field(default_factory=list)  # other members' Raft addresses, host:port
    data_dir: str = "pod-data"                    # this node's journal, snapshot, activities, outputs
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)  # concurrent executions here
    secret: str | None = None                     # cluster secret; required when Raft binds beyond loopback
    allow_file_urls: bool | None = None           # file:// install scripts; None: only on a loopback node
    advertise_host: str | None = None             # host other nodes use to reach this one (default: bind host)
    join: str | None = None                       # HTTP URL (or HOST:PORT) of any member, to join a running cluster
    observer: bool = False                        # a non-voting member (set when joining a cluster of max_voters)
    cluster_name: str = "pod"                     # announced over zeroconf; --join auto finds only this cluster
    announce: bool = True                         # announce this node over zeroconf (_pod._tcp.local.)
    max_voters: int = 5                           # Raft voters at most; more nodes join as observers
    timing: RaftTiming = field(default_factory=RaftTiming)
    command_timeout_s: float = 5.0                # a write not committed by then answers 503
    output_cap_bytes: int = 1024 * 1024           # per stream of one execution, kept and replicated
    max_input_bytes: int = 64 * 1024              # newExecution input larger than this is a 413
    max_wait_s: float = 60.0                      # cap on getExecutionStatus wait=S
    script_max_bytes: int = 1024 * 1024           # install script download cap
    fetch_timeout_s: float = 30.0                 # install script download timeout
    install_timeout_s: float = 600.0              # install script run timeout
    kill_grace_s: float = 5.0                     # SIGTERM to SIGKILL, when terminating an execution
    scheduler_interval_s: float = 0.5             # the leader re-plans at least this often
    plan_gap_s: float = 0.05                      # ...and at most this often
    node_lost_after_s: float = 3.0                # a node the leader cannot reach this long is lost: its work moves
    provider: str | None = None                   # who launches and destroys nodes: none, local or libcloud
    provider_options: dict = field(default_factory=dict)  # the provider's settings (libcloud: driver, image, ...)
    scaling_interval_s: float = 2.0               # the leader evaluates the active policy this often
    result_ttl_s: float = 24 * 3600.0             # unread finished results are dropped after this long

    def __post_init__(self) -> None:
        if self.allow_file_urls is None:
            self.allow_file_urls = is_loopback(self.http_host)
        if self.slots < 0:
            raise ValueError("slots must be >= 0")

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise_host or self.raft_host}:{self.raft_port}"

    @property
    def http_url(self) -> str:
        host = self.advertise_host or self.http_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.http_port}"

    @property
    def zeroconf_interfaces(self) -> list[str] | None:
        """Loopback-only nodes announce and browse on loopback; others on every interface."""
        return ["127.0.0.1"] if is_loopback(self.http_host) else None

    def check_secure(self) -> None:
        """Raft messages are pickles: an open Raft port is remote code execution. Refuse to run that way."""
        if not self.secret and not is_loopback(self.raft_host):
            raise SystemExit(
                f"refusing to bind Raft on {self.raft_host} without a cluster secret: "
                "set --secret or POD_SECRET (every member needs the same one)"
            )
