"""`pod up`: a local cluster in the foreground until Ctrl-C or SIGTERM.

A node that dies is restarted (see local/supervisor.py); one that was drained leaves for good. On Ctrl-C every
process of the cluster stops within STOP_GRACE_S plus a moment; a second Ctrl-C kills them all at once.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

from ..local.cluster import LocalCluster
from ..local.left import read_left
from ..local.procs import (
    become_subreaper,
    cmdline,
    cwd,
    is_node_process,
    kill_until_gone,
    pids,
    port_free,
    stop_groups,
    within,
    working_in,
)
from ..local.supervisor import STRAGGLER_S, Supervisor, kill_now, status, stop_everything, why_gone
from .client import EXIT_SERVER, EXIT_USAGE, URLS_FILE, Api, CliError
from .output import say, warn

READY_TIMEOUT_S = 60.0


class _Stop(Exception):
    """SIGINT or SIGTERM: stop the cluster. Set explicitly: a shell starts background jobs with SIGINT ignored."""


def check_ports(base: int, nodes: list[int]) -> None:
    for i in nodes:
        for port, what in ((base + i, "HTTP"), (base + 1000 + i, "Raft")):
            if not port_free(port):
                raise CliError(f"port {port} (n{i + 1} {what}) is not free; pick another base with --port",
                               EXIT_USAGE)


def lock_data_dir(data_dir: Path) -> int:
    """Hold DATA/pod-up.lock for as long as this `pod up` runs: one `pod up` per data dir, so that the
    podnode processes found there without a running `pod up` are leftovers (see stop_leftovers)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o711)   # see LocalCluster
    fd = os.open(data_dir / "pod-up.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise CliError(f"another pod up (pid {other or '?'}) is running on {data_dir}/", EXIT_USAGE) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def stop_leftovers(data_dir: Path) -> None:
    """Stop what an earlier `pod up` on this data dir left running when it was killed: its nodes (also one
    the local provider launched, which would otherwise rejoin the new cluster unseen) and their executions
    (found by their working directory, in the data dir, since they run in sessions of their own)."""
    root = data_dir.resolve()
    nodes, work = _nodes_of(root), working_in(root, part="activities")   # executions and installs
    if not nodes and not work:
        return
    say(f"stopping what an earlier pod up on {data_dir}/ left running ({len(nodes)} nodes, {len(work)} "
        f"processes of executions); this pod up starts its own and rejoins none of them")
    stop_groups(nodes, grace_s=5.0)
    kill_until_gone(lambda: _nodes_of(root) + working_in(root, part="activities"))


def _nodes_of(root: Path) -> list[int]:
    """podnode processes whose data dir is in `root`."""
    return [pid for pid in pids() if is_node_process(pid) and within(_data_dir_of(pid), root)]


def _data_dir_of(pid: int) -> Path | None:
    args = cmdline(pid)
    if "--data-dir" not in args or args.index("--data-dir") + 1 >= len(args):
        return None
    where = cwd(pid)
    return None if where is None else (where / args[args.index("--data-dir") + 1]).resolve()


def cmd_up(args: argparse.Namespace, api: Api) -> int:
    if args.nodes < 1 or not 0 < args.port <= 65536 - 1000 - args.nodes:
        raise CliError("--nodes must be >= 1 and the ports must fit below 65536", EXIT_USAGE)
    data_dir = Path(args.data_dir)
    lock = lock_data_dir(data_dir)
    try:
        become_subreaper()
        stop_leftovers(data_dir)
        cluster = LocalCluster(data_dir, nodes=args.nodes, base_port=args.port, slots=args.slots,
                               extra_args=["--provider", "local", "--log-format", args.log_format], log_dir=data_dir,
                               tls=args.tls)
        departed = [n for n in cluster.nodes if read_left(n.data_dir) is not None]
        for node in departed:
            say(f"{node.node_id} left the cluster earlier; starting without it (its files stay in {node.data_dir}/; "
                f"remove {data_dir}/ to start afresh)")
        cluster.nodes = [n for n in cluster.nodes if n not in departed]
        if not cluster.nodes:
            raise CliError(f"every node of {data_dir}/ left the cluster; remove {data_dir}/ to start afresh",
                           EXIT_USAGE)
        join_new_nodes(cluster)
        check_ports(args.port, [int(n.node_id[1:]) - 1 for n in cluster.nodes])
        supervisor = Supervisor(cluster, restart=args.restart, say=say)
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return run_cluster(cluster, supervisor, data_dir)
        except (KeyboardInterrupt, _Stop):
            return 0
        finally:
            def hurry(signum, frame) -> None:
                try:
                    say("killing every process of the cluster now")
                except RuntimeError:   # the signal came in the middle of another print
                    pass
                kill_now(cluster)
            for sig in previous:  # a second Ctrl-C kills at once
                signal.signal(sig, hurry)
            say("stopping POD...")
            with contextlib.suppress(OSError):
                (data_dir / URLS_FILE.name).unlink()   # no node there any more: pod falls back to its defaults
            took_s = stop_everything(cluster)
            say(f"POD stopped in {took_s:.1f} s")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        os.close(lock)


def join_new_nodes(cluster) -> None:
    """On a data dir that holds a cluster already, a node without a journal (`--nodes` grew) joins it through
    a member: listed in --peers it would not be a member, since Raft's own record of its members wins."""
    members = [n for n in cluster.nodes if (n.data_dir / "raft.journal").exists()]
    for node in cluster.nodes:
        if members and node not in members:
            node.join = members[0].url
            say(f"{node.node_id} is new to the cluster in {cluster.data_dir}/: it joins through {members[0].node_id}")


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def run_cluster(cluster, supervisor, data_dir: Path) -> int:
    say(f"starting {_nodes(len(cluster.nodes))}...")
    for node in cluster.nodes:
        cluster.start_node(node)
    try:
        wait_up(cluster, supervisor)
    except (RuntimeError, TimeoutError) as err:
        warn(f"POD did not start: {err}; logs in {data_dir}/")
        return EXIT_SERVER
    supervisor.mark_up()
    leader = cluster.leader()
    for node in cluster.nodes:
        say(f"{node.node_id}  {node.url}" + ("  (leader)" if leader is node else ""))
    if cluster.tls_ca is not None:
        say(f"https with certificates of a private CA: pod --cacert {cluster.tls_ca} --url {cluster.nodes[0].url} "
            "... (or export POD_CACERT)")
    write_urls(cluster, data_dir)
    say(f"POD is up: {_nodes(len(cluster.nodes))}. Ctrl-C to stop. Logs in {data_dir}/")
    say(f"admin token in {cluster.token_file} (pod reads it there, or from $POD_TOKEN or --token)")
    while True:
        supervisor.tick()
        time.sleep(0.25)


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def write_urls(cluster, data_dir: Path) -> None:
    """List the nodes' URLs in DATA/urls, where pod run from the same directory finds them (client.find_urls):
    no --url needed with another --port, and the next node is asked when one cannot be reached."""
    path = data_dir / URLS_FILE.name
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # private like everything else in DATA
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{node.url}\n" for node in cluster.nodes))
    tmp.replace(path)


def wait_up(cluster, supervisor, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until every node knows the leader and has registered. A node that left the cluster (its data dir
    or the replicated state says so), or that is no longer a Raft member, would never find a leader: once
    the others have had one for STRAGGLER_S, it is stopped, recorded as gone, and the cluster goes on
    without it (never a hang). One that left is let go as soon as the others have a leader."""
    deadline = time.monotonic() + timeout_s
    led_since = None
    while True:
        for node in cluster.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.node_id} exited with {node.proc.returncode}; "
                                   f"see {cluster.log_dir / (node.node_id + '.log')}")
        statuses = {n.node_id: status(n) for n in cluster.nodes}
        led = [n for n in cluster.nodes if (statuses[n.node_id] or {}).get("leader")]
        if len(led) == len(cluster.nodes):
            try:
                cluster.wait_ready(timeout_s=5.0)
                return
            except TimeoutError:
                pass
        if len(led) * 2 > len(cluster.nodes):
            led_since = led_since or time.monotonic()
            waited_s = time.monotonic() - led_since
            for node in [n for n in cluster.nodes if n not in led]:
                why = why_gone(node, led[0], statuses[led[0].node_id], membership=waited_s > STRAGGLER_S)
                if why:
                    supervisor.let_go(node, why)
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster not ready within {timeout_s:g} s")
        time.sleep(0.2)


def add_up(sub) -> None:
    p = sub.add_parser("up", help="run a local cluster in the foreground until Ctrl-C")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=8080,
                   help="node i serves HTTP on PORT+i and Raft on PORT+1000+i (default 8080)")
    p.add_argument("--data-dir", default="./pod-data", help="data and logs (default ./pod-data)")
    p.add_argument("--slots", type=int, default=None, help="concurrent executions per node (default: CPUs)")
    p.add_argument("--restart", action=argparse.BooleanOptionalAction, default=True,
                   help="restart a node that exits, after 1 s doubling to 30 s (default); --no-restart "
                        "leaves it down")
    p.add_argument("--tls", action="store_true",
                   help="serve https: a private CA and a certificate per node (127.0.0.1, localhost) are made in "
                        "DATA/tls/ (kept for the next run); clients verify with --cacert DATA/tls/ca.pem")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="the nodes' logs in DATA/nN.log: text (default) or json, one JSON object a line")
    p.set_defaults(func=cmd_up)
