"""pod-bootstrap's command line: the argument parser, `stop`, and main."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..scaling import userdata
from .cloud import cmd_cloud, destroy_cloud, load_provider_options, provider_from_options
from .local import cmd_local, stop_local
from .ssh import cmd_ssh, run_steps, ssh_stop_steps
from .state import BootstrapError, Out, load_state, save_state, say, state_path

# ---------------------------------------------------------------------------------------------------- stop


def cmd_stop(args: argparse.Namespace, out: Out = say) -> int:
    """`stop`: stop what the state dir records (local processes, ssh services, cloud servers)."""
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        raise BootstrapError(f"no cluster recorded in {state_path(state_dir)}")
    if state["mode"] == "local":
        stop_local(state_dir, state, out)
    elif state["mode"] == "ssh":
        cfg = state["ssh"]
        steps = ssh_stop_steps([m["host"] for m in state["members"]], user=cfg["user"], ssh_port=cfg["ssh_port"])
        run_steps(steps, dry_run=args.dry_run, secret=state["secret"], out=out)
        if not args.dry_run:
            state["status"] = "stopped"
            save_state(state_dir, state)
            out(f"stopped {userdata.UNIT_NAME} on {len(steps)} hosts (data stays in {userdata.DATA_DIR})")
    else:
        config = (state.get("cloud") or {}).get("provider_config")
        if not config:
            raise BootstrapError("the record names no provider config file; destroy the servers by hand: "
                                 + ", ".join(m.get("server", m["id"]) for m in state["members"]))
        destroy_cloud(provider_from_options(load_provider_options(config), state["secret"]), state_dir, out)
    return 0


# ---------------------------------------------------------------------------------------------------- arguments


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default="./pod-cluster",
                        help="where cluster.json (and local nodes' data and logs) live (default ./pod-cluster)")
    common.add_argument("--name", default="pod", help="the cluster's name (default pod)")
    common.add_argument("--force", action="store_true",
                        help="ssh/cloud: deploy again although the recorded cluster does not answer")
    return common


def add_local(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `local` subcommand."""
    p = sub.add_parser("local", parents=[common], help="start N detached podnode processes on this machine")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--port", type=int, default=8080, help="node i: HTTP on PORT+i, Raft on PORT+1000+i")
    p.add_argument("--slots", type=int, default=None, help="concurrent executions per node (default: CPUs)")
    p.add_argument("--node-arg", action="append", metavar="ARG",
                   help="extra podnode argument, repeatable, e.g. --node-arg=--election-timeout-s=0.3")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the cluster (default 60)")
    p.set_defaults(func=cmd_local)


def add_ssh(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `ssh` subcommand."""
    p = sub.add_parser("ssh", parents=[common], help="install podnode under systemd on hosts over ssh")
    p.add_argument("--hosts", required=True, help="comma-separated host names or IPv4 addresses; the I-th is nI")
    p.add_argument("--user", default="root", help="ssh user (not root: commands run with sudo)")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--python", default="python3", help="python on the hosts that creates the venv")
    p.add_argument("--pip-spec", default=None, help=f"what pip installs (default podnode=={__version__})")
    p.add_argument("--slots", type=int, default=None, help="concurrent executions per node (default: CPUs)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and scripts, run nothing")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a leader (default 600)")
    p.set_defaults(func=cmd_ssh)


def add_cloud_and_stop(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `cloud` and `stop` subcommands."""
    p = sub.add_parser("cloud", parents=[common], help="launch servers through apache-libcloud")
    p.add_argument("--provider-config", required=True, metavar="FILE",
                   help="JSON: driver, key, secret, driver_kwargs, image, size, location, slots, name_prefix")
    p.add_argument("--nodes", type=int, default=3, help="how many servers (default 3)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait per phase (default 900)")
    p.set_defaults(func=cmd_cloud)
    p = sub.add_parser("stop", parents=[common], help="stop the cluster recorded in the state dir")
    p.add_argument("--dry-run", action="store_true", help="ssh: print the commands, run nothing")
    p.set_defaults(func=cmd_stop)


def build_parser() -> argparse.ArgumentParser:
    """pod-bootstrap's argument parser."""
    ap = argparse.ArgumentParser(prog="pod-bootstrap", description="Seed a POD cluster and record it.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    add_local(sub, common)
    add_ssh(sub, common)
    add_cloud_and_stop(sub, common)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; errors print one line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BootstrapError as err:
        print(f"pod-bootstrap: {err}", file=sys.stderr, flush=True)
        return 1
