"""The `podnode` command: its arguments, parsed into a frozen NodeConfig, and running the node until a signal.

Run it with `podnode --id n1 --http 127.0.0.1:8080 --raft 127.0.0.1:9080 --peers HOST:PORT,...`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ..config import NodeConfig, RaftTiming
from ..errors import IncompatibleDependency
from ..scaling.factory import load_options
from .serve import serve


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def parse_args(argv: list[str] | None = None) -> NodeConfig:
    ap = argparse.ArgumentParser(prog="podnode", description="Run one POD node.")
    ap.add_argument("--id", required=True, help="this node's name in the cluster, e.g. n1")
    ap.add_argument("--http", type=_host_port, default=("127.0.0.1", 8080), help="HTTP API address HOST:PORT")
    ap.add_argument("--raft", type=_host_port, default=("127.0.0.1", 9080), help="Raft address HOST:PORT")
    ap.add_argument("--peers", default="", help="other members' Raft addresses, comma-separated")
    ap.add_argument("--join", default=None, metavar="URL",
                    help="join a running cluster through any member's HTTP address (http://HOST:PORT or "
                         "HOST:PORT), or 'auto' to find one of --cluster-name on the local network (zeroconf)")
    ap.add_argument("--join-timeout-s", type=float, default=60.0,
                    help="keep asking the member to let this node in this long before giving up (default 60)")
    ap.add_argument("--cluster-name", default=os.environ.get("POD_CLUSTER", "pod"),
                    help="the cluster's name, announced over zeroconf (default pod)")
    ap.add_argument("--announce", action=argparse.BooleanOptionalAction, default=True,
                    help="announce this node over zeroconf so that --join auto finds the cluster")
    ap.add_argument("--data-dir", default=None, help="journal, snapshot, activities (default ./pod-data/ID)")
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="concurrent executions here")
    ap.add_argument("--secret", default=os.environ.get("POD_SECRET"),
                    help="cluster secret (env POD_SECRET); required when Raft binds beyond loopback")
    ap.add_argument("--allow-file-urls", action=argparse.BooleanOptionalAction, default=None,
                    help="accept file:// install scripts (default: only when HTTP binds to loopback)")
    ap.add_argument("--advertise-host", default=None, help="host other nodes use to reach this one")
    ap.add_argument("--output-cap-bytes", type=int, default=1024 * 1024, help="per stream of an execution")
    ap.add_argument("--kill-grace-s", type=float, default=5.0, help="SIGTERM to SIGKILL when terminating")
    ap.add_argument("--run-as", default=None, metavar="USER",
                    help="when the node runs as root, run executions and install scripts as USER "
                         "(default pod, a system user created if missing)")
    ap.add_argument("--cgroups", choices=["auto", "v2", "v1", "none"], default="auto",
                    help="each execution's cgroup: v2, v1 (pids, memory), none (a session + rlimits); "
                         "auto picks the first that works (default)")
    ap.add_argument("--exec-timeout-s", type=float, default=0.0,
                    help="default limit: an execution running longer is killed and ends error (0: none, default)")
    ap.add_argument("--exec-memory-mb", type=int, default=0,
                    help="default limit: memory of an execution, all its processes (0: none, default)")
    ap.add_argument("--exec-max-processes", type=int, default=1024,
                    help="default limit: processes and threads of an execution (0: none; default 1024)")
    ap.add_argument("--auth", choices=["token", "none"], default="token",
                    help="token (default): every /POD/ action and /status needs Authorization: Bearer TOKEN; "
                         "none: no token asked, only for an HTTP bound to loopback (prints a warning)")
    ap.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                    help="a browser Origin (scheme://host:port) allowed besides the node's own; '*' for any "
                         "(repeatable; by default a request from another site's page is refused with 403)")
    ap.add_argument("--tls-cert", default=None, metavar="PEM", help="serve the HTTP API over TLS with this "
                    "certificate (chain); peers then talk https too")
    ap.add_argument("--tls-key", default=None, metavar="PEM", help="the private key of --tls-cert")
    ap.add_argument("--tls-ca", default=None, metavar="PEM",
                    help="CA bundle that the certificates of peers are checked against (default: the system's)")
    ap.add_argument("--max-waiting-executions", type=int, default=200_000,
                    help="quota: executions waiting cluster-wide; a newExecution beyond it gets 429 (0: none)")
    ap.add_argument("--max-activities", type=int, default=1000,
                    help="quota: activities registered; a newActivity beyond it gets 429 (0: none)")
    ap.add_argument("--max-unread-result-bytes", type=int, default=256 * 1024 * 1024,
                    help="quota: output of ended executions not read yet, held by every node; new executions "
                         "get 429 while it is over (0: none; default 256 MiB)")
    ap.add_argument("--node-lost-after-s", type=float, default=3.0,
                    help="a node the leader cannot reach this long is declared lost and its work moves")
    ap.add_argument("--election-timeout-s", type=float, default=0.4,
                    help="Raft election timeout (lower bound; the upper is 3.5x)")
    ap.add_argument("--provider", choices=["none", "local", "libcloud"], default="none",
                    help="who launches and destroys nodes for the scaling policy (default none)")
    ap.add_argument("--provider-config", default=None, metavar="FILE", help="JSON options of the provider")
    ap.add_argument("--scaling-interval-s", type=float, default=2.0, help="how often the leader scales")
    ap.add_argument("--max-voters", type=int, default=5,
                    help="Raft voters at most; further nodes join as non-voting observers (default 5)")
    ap.add_argument("--log-level", default=os.environ.get("POD_LOG_LEVEL", "INFO"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    election = max(0.2, a.election_timeout_s)
    timing = RaftTiming(heartbeat_s=min(0.05, election / 4), election_min_s=election,
                        election_max_s=election * 3.5, leader_fallback_s=election * 7.5)
    try:
        return _config(a, timing)
    except ValueError as exc:  # a bad combination of options: say which, without a traceback
        ap.error(str(exc))


def _config(a: argparse.Namespace, timing: RaftTiming) -> NodeConfig:
    return NodeConfig(
        node_id=a.id, http_host=a.http[0], http_port=a.http[1], raft_host=a.raft[0], raft_port=a.raft[1],
        peers=[p.strip() for p in a.peers.split(",") if p.strip()], join=a.join, join_timeout_s=a.join_timeout_s,
        data_dir=a.data_dir or os.path.join("pod-data", a.id), slots=a.slots, secret=a.secret or None,
        allow_file_urls=a.allow_file_urls, advertise_host=a.advertise_host,
        output_cap_bytes=a.output_cap_bytes, kill_grace_s=a.kill_grace_s, timing=timing,
        run_as=a.run_as, cgroups=a.cgroups, exec_timeout_s=a.exec_timeout_s, exec_memory_mb=a.exec_memory_mb,
        exec_max_processes=a.exec_max_processes, auth=a.auth, allow_origins=tuple(a.allow_origin),
        tls_cert=a.tls_cert, tls_key=a.tls_key, tls_ca=a.tls_ca, max_waiting_executions=a.max_waiting_executions,
        max_activities=a.max_activities, max_unread_result_bytes=a.max_unread_result_bytes,
        node_lost_after_s=a.node_lost_after_s, provider=a.provider,
        provider_options=load_options(a.provider_config), scaling_interval_s=a.scaling_interval_s,
        max_voters=max(3, a.max_voters), cluster_name=a.cluster_name, announce=a.announce,
    )


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)   # the journal, the snapshot, every file the node makes: 600; its directories 700
    try:
        asyncio.run(serve(parse_args(argv)))
    except IncompatibleDependency as exc:  # refuse to start, saying why, without a traceback
        raise SystemExit(f"podnode: {exc}") from None


if __name__ == "__main__":
    main()
