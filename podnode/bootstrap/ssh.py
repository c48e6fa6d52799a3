"""pod-bootstrap `ssh`: install podnode under systemd on hosts over ssh (the secret travels on stdin)."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..scaling import userdata
from .state import (
    BootstrapError,
    Out,
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
)

HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


# ---------------------------------------------------------------------------------------------------- ssh


@dataclass(frozen=True)
class SshStep:
    """One command to run for a host, with what it reads on stdin (the secret travels there, never in argv)."""

    host: str
    argv: list[str]
    stdin: str | None
    what: str


def check_hosts(hosts: list[str], user: str) -> None:
    """Refuse hosts and users that are not plain names (they end up in commands and scripts)."""
    if not hosts:
        raise BootstrapError("--hosts needs at least one host")
    if len(set(hosts)) != len(hosts):
        raise BootstrapError(f"--hosts names a host twice: {','.join(hosts)}")
    for host in hosts:
        if not HOST_RE.match(host):
            raise BootstrapError(f"bad host {host!r}: use a host name or IPv4 address")
    if not USER_RE.match(user):
        raise BootstrapError(f"bad --user {user!r}")


def ssh_command(host: str, user: str, ssh_port: int, remote: str) -> list[str]:
    """ssh argv that runs `remote` on the host, non-interactively."""
    return ["ssh", "-p", str(ssh_port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            f"{user}@{host}", remote if user == "root" else f"sudo {remote}"]


def env_file(*, node_id: str, secret: str, name: str) -> str:
    """/etc/pod/env: the node's environment (systemd EnvironmentFile), with the cluster secret."""
    for value in (node_id, secret, name):
        if any(ch in value for ch in "\n\r\0\"'\\ "):
            raise BootstrapError(f"{value!r} cannot go in an environment file")
    return f"POD_SECRET={secret}\nPOD_NODE_ID={node_id}\nPOD_CLUSTER={name}\nPOD_LOG_LEVEL=INFO\n"


def node_args(host: str, node_id: str, hosts: list[str], slots: int | None) -> list[str]:
    """podnode's arguments on `host`: HTTP on all interfaces, Raft on the host's address, the others as peers."""
    peers = ",".join(f"{h}:{userdata.RAFT_PORT}" for h in hosts if h != host)
    args = ["--id", node_id, "--http", f"0.0.0.0:{userdata.HTTP_PORT}", "--raft", f"{host}:{userdata.RAFT_PORT}",
            "--advertise-host", host]
    if peers:
        args += ["--peers", peers]
    args += ["--data-dir", userdata.DATA_DIR]
    return args + (["--slots", str(slots)] if slots is not None else [])


def unit_file(host: str, node_id: str, hosts: list[str], slots: int | None) -> str:
    """The systemd unit podnode.service for one host; the secret comes from the EnvironmentFile."""
    argv = [f"{userdata.VENV_DIR}/bin/python", "-m", "podnode", *node_args(host, node_id, hosts, slots)]
    return (f"[Unit]\nDescription=POD node {node_id}\nWants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nEnvironmentFile={userdata.CONFIG_DIR}/env\nExecStart={shlex.join(argv)}\n"
            f"Restart=always\nRestartSec=2\nKillMode=control-group\nTimeoutStopSec=30\n\n"
            f"[Install]\nWantedBy=multi-user.target\n")


def host_script(host: str, node_id: str, hosts: list[str], *, python: str, pip_spec: str, secret: str,
                name: str, slots: int | None) -> str:
    """The bash script fed to `bash -s` on one host: venv, pip install, env file (600), unit, enable --now."""
    venv, conf, unit = userdata.VENV_DIR, userdata.CONFIG_DIR, userdata.UNIT_NAME
    return f"""set -euo pipefail
echo "pod: installing {node_id} on $(hostname) ({pip_spec})"
if [ ! -x {venv}/bin/python ]; then
    {shlex.quote(python)} -m venv {venv}
fi
{venv}/bin/pip install --quiet --upgrade pip
{venv}/bin/pip install --quiet {shlex.quote(pip_spec)}
mkdir -p {conf} {userdata.DATA_DIR}
chmod 700 {conf} {userdata.DATA_DIR}
umask 077
cat > {conf}/env <<'POD_ENV_EOF'
{env_file(node_id=node_id, secret=secret, name=name)}POD_ENV_EOF
chmod 600 {conf}/env
umask 022
cat > /etc/systemd/system/{unit} <<'POD_UNIT_EOF'
{unit_file(host, node_id, hosts, slots)}POD_UNIT_EOF
systemctl daemon-reload
if systemctl is-active --quiet {unit}; then
    systemctl restart {unit}
fi
systemctl enable --now {unit}
echo "pod: {node_id} started"
"""


def ssh_steps(hosts: list[str], *, secret: str, user: str = "root", ssh_port: int = 22, python: str = "python3",
              pip_spec: str | None = None, name: str = "pod", slots: int | None = None) -> list[SshStep]:
    """Per host (node nI for the I-th host): one `ssh ... 'bash -s'` whose stdin is `host_script`."""
    check_hosts(hosts, user)
    spec = pip_spec or userdata.pip_spec(__version__)
    return [SshStep(host=host, argv=ssh_command(host, user, ssh_port, "bash -s"), what=f"install n{i + 1}",
                    stdin=host_script(host, f"n{i + 1}", hosts, python=python, pip_spec=spec, secret=secret,
                                      name=name, slots=slots))
            for i, host in enumerate(hosts)]


def ssh_plan(hosts: list[str], **kwargs: Any) -> list[list[str]]:
    """The argv of every command `ssh` mode runs, in order (see ssh_steps for the arguments)."""
    return [step.argv for step in ssh_steps(hosts, **kwargs)]


def ssh_stop_steps(hosts: list[str], *, user: str, ssh_port: int) -> list[SshStep]:
    """Per host: `systemctl disable --now podnode.service`."""
    check_hosts(hosts, user)
    remote = f"systemctl disable --now {userdata.UNIT_NAME}"
    return [SshStep(host=h, argv=ssh_command(h, user, ssh_port, remote), stdin=None, what="stop") for h in hosts]


def run_steps(steps: list[SshStep], *, dry_run: bool, secret: str, out: Out) -> None:
    """Run each step (stdin fed to it), or with dry_run print it with its script (the secret redacted)."""
    for step in steps:
        if dry_run:
            out(f"$ {shlex.join(step.argv)}" + (" <<'POD_SCRIPT'" if step.stdin else ""))
            if step.stdin:
                out(step.stdin.replace(secret, "<secret>") + "POD_SCRIPT")
            continue
        out(f"{step.host}: {step.what}...")
        try:
            done = subprocess.run(step.argv, input=step.stdin, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise BootstrapError(f"{step.host}: {step.what} failed: {err}") from None
        if done.returncode != 0:
            raise BootstrapError(f"{step.host}: {step.what} failed (exit {done.returncode}): {shlex.join(step.argv)}")


def ssh_state(args: argparse.Namespace, hosts: list[str], secret: str, old: dict[str, Any] | None) -> dict[str, Any]:
    """The record of an ssh cluster: members are nI on the I-th host, API on port 8080."""
    state = new_state(old["name"] if old else args.name, "ssh", secret)
    state["ssh"] = {"user": args.user, "ssh_port": args.ssh_port, "python": args.python, "pip_spec": args.pip_spec}
    state["members"] = [{"id": f"n{i + 1}", "host": h, "url": f"http://{h}:{userdata.HTTP_PORT}"}
                        for i, h in enumerate(hosts)]
    return state


def cmd_ssh(args: argparse.Namespace, out: Out = say) -> int:
    """`ssh`: install podnode on each host under systemd, then wait until every host's /status knows a leader."""
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    state_dir = Path(args.state_dir).resolve()
    old = load_state(state_dir)
    if not args.dry_run:
        if existing_cluster(old, "ssh", args.force, state_dir) == "running":
            return already_running(old, state_dir, out)
    elif old is not None and old["mode"] != "ssh":
        existing_cluster(old, "ssh", args.force, state_dir)        # refuses
    state = ssh_state(args, hosts, old["secret"] if old else new_secret(), old)
    steps = ssh_steps(hosts, secret=state["secret"], user=args.user, ssh_port=args.ssh_port, python=args.python,
                      pip_spec=args.pip_spec, name=state["name"], slots=args.slots)
    if args.dry_run:
        run_steps(steps, dry_run=True, secret=state["secret"], out=out)
        out(f"# then poll http://HOST:{userdata.HTTP_PORT}/status on each host until it names a leader")
        out("# dry run: nothing was run and no state was written")
        return 0
    state["status"] = "starting"
    save_state(state_dir, state)
    run_steps(steps, dry_run=False, secret=state["secret"], out=out)
    for member in state["members"]:
        poll(lambda m=member: (member_status(m["url"], state["secret"]) or {}).get("leader"), timeout_s=args.timeout,
             what=f"{member['url']}/status to name a leader")
    state["status"] = "running"
    save_state(state_dir, state)
    report(state, state_dir, out)
    return 0
