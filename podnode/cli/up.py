"""`pod up`: a local cluster in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import socket
import time

from .client import EXIT_SERVER, EXIT_USAGE, Api, CliError
from .output import say, warn


class _Stop(Exception):
    """SIGINT or SIGTERM: stop the cluster. Set explicitly: a shell starts background jobs with SIGINT ignored."""


def check_ports(base: int, nodes: int) -> None:
    for i in range(nodes):
        for port, what in ((base + i, "HTTP"), (base + 1000 + i, "Raft")):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the nodes do: TIME_WAIT is fine
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError as err:
                    raise CliError(f"port {port} (n{i + 1} {what}) is not free: {err.strerror}; "
                                   f"pick another base with --port", EXIT_USAGE) from None


def cmd_up(args: argparse.Namespace, api: Api) -> int:
    from ..localcluster import LocalCluster

    if args.nodes < 1 or not 0 < args.port <= 65536 - 1000 - args.nodes:
        raise CliError("--nodes must be >= 1 and the ports must fit below 65536", EXIT_USAGE)
    check_ports(args.port, args.nodes)
    cluster = LocalCluster(args.data_dir, nodes=args.nodes, base_port=args.port, slots=args.slots,
                           extra_args=["--provider", "local"],
                           log_dir=args.data_dir)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_cluster(cluster, args.data_dir)
    except (KeyboardInterrupt, _Stop):
        say("stopping POD...")
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not leave nodes behind
            signal.signal(sig, signal.SIG_IGN)
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def run_cluster(cluster, data_dir: str) -> int:
    say(f"starting {len(cluster.nodes)} nodes...")
    try:
        cluster.start(timeout_s=60)
    except (RuntimeError, TimeoutError) as err:
        warn(f"POD did not start: {err}; logs in {data_dir}/")
        return EXIT_SERVER
    leader = cluster.leader()
    for node in cluster.nodes:
        say(f"{node.node_id}  {node.url}" + ("  (leader)" if leader is node else ""))
    say(f"POD is up: {len(cluster.nodes)} nodes. Ctrl-C to stop. Logs in {data_dir}/")
    while True:
        for node in cluster.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                warn(f"{node.node_id} exited with code {node.proc.returncode}; stopping the others "
                     f"(see {cluster.log_dir / (node.node_id + '.log')})")
                return 1
        time.sleep(0.5)


def add_up(sub) -> None:
    p = sub.add_parser("up", help="run a local cluster in the foreground until Ctrl-C")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=8080,
                   help="node i serves HTTP on PORT+i and Raft on PORT+1000+i (default 8080)")
    p.add_argument("--data-dir", default="./pod-data", help="data and logs (default ./pod-data)")
    p.add_argument("--slots", type=int, default=None, help="concurrent executions per node (default: CPUs)")
    p.set_defaults(func=cmd_up)
