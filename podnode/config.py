"""One typed configuration object for a node. Every field says its unit.

Frozen once parsed: what joining decides before the node starts is a new config (dataclasses.replace); what
changes while the node runs (an observer promoted to a voter) is the replica's, not the config's. Importing this
module has no side effect and imports nothing heavy (no pysyncobj): anything may read the config.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class RaftTiming:
    """pysyncobj's timings (raft/replica.py passes them to SyncObjConf)."""
    heartbeat_s: float = 0.05            # appendEntriesPeriod: leader heartbeat interval
    election_min_s: float = 0.4          # raftMinTimeout: a follower waits at least this long for a heartbeat
    election_max_s: float = 1.4          # raftMaxTimeout
    leader_fallback_s: float = 3.0       # a leader that hears from no majority this long steps down
    connection_timeout_s: float = 3.5    # a silent peer connection is dropped after this long
    connection_retry_s: float = 0.5      # reconnect to a lost peer this often
    compaction_min_entries: int = 5000   # snapshot the state after this many log entries...
    compaction_min_s: float = 300.0      # ...or this many seconds


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    node_id: str                                  # this node's name in the cluster, e.g. "n1"
    http_host: str = "127.0.0.1"                  # where the action API listens
    http_port: int = 8080
    raft_host: str = "127.0.0.1"                  # where the Raft port listens; peers reach it there
    raft_port: int = 9080
    peers: list[str] = field(default_factory=list)  # other members' Raft addresses, host:port
    data_dir: str = "pod-data"                    # this node's journal, snapshot, activities, outputs
    slots: int = field(default_factory=lambda: os.cpu_count() or 1)  # concurrent executions here
    secret: str | None = None                     # cluster secret: Raft password, peer requests' HMAC key
    allow_file_urls: bool | None = None           # file:// install scripts; None: only on a loopback node
    advertise_host: str | None = None             # host other nodes use to reach this one (default: bind host)
    join: str | None = None                       # HTTP URL (or HOST:PORT) of any member, to join a running cluster
    observer: bool = False                        # start as a non-voting member (joining decides; a promotion
                                                  # later is the replica's, see Replica.observer)
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
    # ---- the sandbox of executions and install scripts (exec/sandbox.py); a limit of 0 means none ------------
    run_as: str | None = None                     # the user they run as when the node is root (None: "pod")
    cgroups: str = "auto"                         # auto (v2, else v1, else none), v2, v1 or none (rlimits only)
    exec_timeout_s: float = 0.0                   # default: an execution running longer is killed, ends error
    exec_memory_mb: int = 0                       # default: memory.max / memory.limit_in_bytes (RLIMIT_AS)
    exec_max_processes: int = 1024                # default: pids.max, processes and threads (RLIMIT_NPROC)
    # ---- who may call the API (api/auth.py) and how it is served -------------------------------------------
    auth: str = "token"                           # token: every /POD/ action and /status needs a bearer token;
                                                  # none: nobody is asked (only for an HTTP bound to loopback)
    allow_origins: tuple[str, ...] = ()           # browser Origins allowed besides the node's own ("*": any)
    tls_cert: str | None = None                   # PEM certificate (chain) of the HTTP API: serve https
    tls_key: str | None = None                    # ...and its private key
    tls_ca: str | None = None                     # PEM CA bundle that peers' certificates are checked against
    # ---- quotas, cluster-wide (a full one refuses new work with 429 + Retry-After; 0 means none) -------------
    max_waiting_executions: int = 200_000         # executions waiting for a slot
    max_activities: int = 1000                    # activities registered
    max_unread_result_bytes: int = 256 * 1024 * 1024  # stdout+stderr of ended executions nobody has read yet
    scheduler_interval_s: float = 0.5             # the leader re-plans at least this often
    plan_gap_s: float = 0.05                      # ...and at most this often
    node_lost_after_s: float = 3.0                # a node the leader cannot reach this long is lost: its work moves
    provider: str | None = None                   # who launches and destroys nodes: none, local or libcloud
    provider_options: dict = field(default_factory=dict)  # the provider's settings (libcloud: driver, image, ...)
    scaling_interval_s: float = 2.0               # the leader evaluates the active policy this often
    result_ttl_s: float = 24 * 3600.0             # unread finished results are dropped after this long
    # ---- the node's own timings -----------------------------------------------------------------------
    peer_timeout_s: float = 3.0                   # a request to another node's HTTP API (live output) gives up
    forward_timeout_s: float = 30.0               # a join request, or one forwarded to the leader (through an observer)
    promote_timeout_s: float = 10.0               # the leader telling an observer it is a voter now
    execution_arrival_s: float = 0.2              # a read of an id not applied here yet waits this long for it
    join_timeout_s: float = 60.0                  # --join: keep asking the member this long before giving up
    join_retry_s: float = 1.0                     # ...asking again this often
    discovery_timeout_s: float = 10.0             # --join auto: listen for members on zeroconf this long
    stop_timeout_s: float = 5.0                   # the node's tasks must stop within this when it stops
    announce_stop_timeout_s: float = 3.0          # unregistering from zeroconf at stop gives up after this
    http_shutdown_timeout_s: float = 2.0          # open HTTP requests are given this long at stop
    stale_kill_timeout_s: float = 5.0             # at start, an earlier run's leftover processes must be gone by then
    alive_interval_s: float = 0.5                 # an observer tells the leader it is alive this often (at most
                                                  # node_lost_after_s / 4)
    leader_retry_s: float = 0.2                   # the leader retries an uncommitted plan or a Raft membership change
    plan_failure_pause_s: float = 1.0             # ...and pauses this long after the scheduler failed (a bug)
    reconcile_interval_s: float = 1.0             # the agent compares the state with what runs here at least this often
    retry_first_s: float = 0.1                    # the agent retries a report no leader took after this...
    retry_max_s: float = 2.0                      # ...doubling up to this
    # ---- the autoscaler's timings (scaling/autoscaler.py) ------------------------------------------------
    launch_join_timeout_s: float = 90.0           # a launched node must have registered by then (launch included)
    destroy_lost_after_s: float = 30.0            # a launched node lost this long is destroyed
    launch_backoff_first_s: float = 10.0          # no launch for this long after a failed one...
    launch_backoff_max_s: float = 300.0           # ...doubling with each failure up to this
    scale_in_drain_deadline_s: float = 60.0       # a node scaled in may finish its work this long
    provider_timeout_s: float = 120.0             # a provider's destroy or price lookup gives up after this
    # ---- the node's log (logs.py) ---------------------------------------------------------------------
    log_level: str = "info"                       # debug, info, warning, error or critical
    log_format: str = "text"                      # text: a line of text a record; json: a JSON object a line

    def __post_init__(self) -> None:
        if self.allow_file_urls is None:
            object.__setattr__(self, "allow_file_urls", is_loopback(self.http_host))
        if self.slots < 0:
            raise ValueError("slots must be >= 0")
        for name in ("exec_timeout_s", "exec_memory_mb", "exec_max_processes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit)")
        if self.auth not in ("token", "none"):
            raise ValueError(f"auth must be token or none, not {self.auth!r}")
        if self.auth == "none" and not is_loopback(self.http_host):
            raise ValueError("auth none is only for a node whose HTTP binds loopback: anyone who reaches "
                             f"{self.http_host} could run code on the cluster")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        for name in ("max_waiting_executions", "max_activities", "max_unread_result_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit)")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.cgroups not in ("auto", "v2", "v1", "none"):
            raise ValueError(f"cgroups must be auto, v2, v1 or none, not {self.cgroups!r}")

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise_host or self.raft_host}:{self.raft_port}"

    @property
    def http_scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def http_url(self) -> str:
        host = self.advertise_host or self.http_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{self.http_scheme}://{host}:{self.http_port}"

    @property
    def zeroconf_interfaces(self) -> list[str] | None:
        """Loopback-only nodes announce and browse on loopback; others on every interface."""
        return ["127.0.0.1"] if is_loopback(self.http_host) else None

    def check_secure(self) -> None:
        """Raft messages are pickles: a Raft port without a password is remote code execution, also on loopback
        (any local user can connect). Refuse to run without a cluster secret (serve makes one for a node whose
        Raft binds loopback)."""
        if self.secret:
            return
        if not is_loopback(self.raft_host):
            raise SystemExit(
                f"refusing to bind Raft on {self.raft_host} without a cluster secret: "
                "set POD_SECRET in its environment, or secret in a config file only its owner reads (every member "
                "needs the same one; --secret would show it in ps)"
            )
        raise SystemExit("refusing to run without a cluster secret: its Raft port would take anyone's pickles")
