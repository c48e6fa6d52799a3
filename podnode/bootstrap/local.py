"""pod-bootstrap `local`: N detached podnode processes on this machine, and stopping them."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from ..local.cluster import LocalCluster, LocalNode
from ..local.procs import is_node_process, port_free, stop_groups
from .state import (
    BootstrapError,
    Out,
    already_running,
    existing_cluster,
    load_state,
    new_secret,
    new_state,
    report,
    save_state,
    say,
    state_path,
)

STOP_GRACE_S = 10.0


# ---------------------------------------------------------------------------------------------------- local


class SecretLocalCluster(LocalCluster):
    """A LocalCluster with the recorded cluster secret (POD_SECRET in its nodes' environment, never in argv),
    whose nodes run detached in the state dir."""

    def __init__(self, *args: Any, secret: str, **kwargs: Any):
        super().__init__(*args, secret=secret, **kwargs)

    def start_node(self, node: LocalNode) -> None:
        """Start one node detached (own session), output to LOG_DIR/<id>.log."""
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{node.node_id}.log", "ab") as out:
            node.proc = subprocess.Popen(self.command(node), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=self.env(),
                                         cwd=self.data_dir)


def check_local_ports(port: int, nodes: int) -> None:
    """BootstrapError naming the first busy HTTP (PORT+i) or Raft (PORT+1000+i) port."""
    if nodes < 1 or not 0 < port <= 65535 - 1000 - nodes:
        raise BootstrapError("--nodes must be >= 1 and PORT+1000+nodes must stay below 65536")
    for i in range(nodes):
        for p, what in ((port + i, "HTTP"), (port + 1000 + i, "Raft")):
            if not port_free(p):
                raise BootstrapError(f"port {p} (n{i + 1} {what}) is busy; pick another base with --port")


def local_cluster(state_dir: Path, state: dict[str, Any]) -> SecretLocalCluster:
    """The LocalCluster the record describes: data in STATE_DIR/nX, logs in STATE_DIR/nX.log."""
    cfg = state["local"]
    return SecretLocalCluster(state_dir, nodes=cfg["nodes"], base_port=cfg["port"], slots=cfg.get("slots"),
                              extra_args=list(cfg.get("node_args") or []), log_dir=state_dir,
                              secret=state["secret"])


def local_member(node: LocalNode, log_dir: Path) -> dict[str, Any]:
    """The record of one local node."""
    return {"id": node.node_id, "url": node.url, "raft": node.raft_addr, "pid": node.proc.pid if node.proc else None,
            "data_dir": str(node.data_dir), "log": str(log_dir / f"{node.node_id}.log")}


def start_local(state_dir: Path, state: dict[str, Any], timeout_s: float, out: Out) -> None:
    """Start the recorded local members detached, wait for a leader and all registered, record pids."""
    check_local_ports(state["local"]["port"], state["local"]["nodes"])
    cluster = local_cluster(state_dir, state)
    out(f"starting {len(cluster.nodes)} local nodes (logs in {state_dir}/nX.log)...")
    for node in cluster.nodes:
        cluster.start_node(node)
    state["members"] = [local_member(n, state_dir) for n in cluster.nodes]
    state["status"] = "starting"
    save_state(state_dir, state)
    try:
        cluster.wait_ready(timeout_s=timeout_s)
    except (RuntimeError, TimeoutError) as err:
        cluster.stop()
        state["status"] = "failed"
        save_state(state_dir, state)
        raise BootstrapError(f"the local cluster did not come up: {err}; logs in {state_dir}/") from None
    state["status"] = "running"
    save_state(state_dir, state)   # the nodes keep running: this process does not stop them


def stop_pids(members: list[dict[str, Any]], grace_s: float = STOP_GRACE_S) -> list[str]:
    """SIGTERM the process groups of the members' pids, SIGKILL those still running after `grace_s`.
    Returns the ids that had to be killed."""
    live = [(m["id"], int(m["pid"])) for m in members if m.get("pid") and is_node_process(int(m["pid"]), m["id"])]
    killed = stop_groups([pid for _, pid in live], grace_s)
    return [n for n, pid in live if pid in killed]


def cmd_local(args: argparse.Namespace, out: Out = say) -> int:
    """`local`: start N detached podnode processes, or report/restart the recorded ones."""
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    action = existing_cluster(state, "local", args.force, state_dir)
    if action == "running":
        return already_running(state, state_dir, out)
    if action == "restart":
        cfg = state["local"]
        out(f"POD cluster {state['name']!r} is recorded in {state_path(state_dir)} but no member answers; "
            f"restarting its {cfg['nodes']} members on port {cfg['port']} with the same secret.")
        if (args.nodes, args.port) != (cfg["nodes"], cfg["port"]):
            out(f"(ignoring --nodes {args.nodes} --port {args.port}: the record says {cfg['nodes']} and {cfg['port']})")
        stop_pids(state["members"])
    else:
        state = new_state(args.name, "local", new_secret())
        state["local"] = {"nodes": args.nodes, "port": args.port, "slots": args.slots,
                          "node_args": list(args.node_arg or [])}
    start_local(state_dir, state, args.timeout, out)
    report(state, state_dir, out)
    return 0


def stop_local(state_dir: Path, state: dict[str, Any], out: Out) -> None:
    """Stop the recorded local processes and mark the cluster stopped."""
    killed = stop_pids(state["members"])
    if killed:
        out(f"killed {', '.join(killed)} (still running {STOP_GRACE_S:g} s after SIGTERM)")
    state["status"] = "stopped"
    save_state(state_dir, state)
    out(f"stopped local cluster {state['name']!r} ({len(state['members'])} members); data stays in {state_dir}")
