"""Seed a POD cluster: local processes, servers reached over ssh, or cloud servers through libcloud.

    pod-bootstrap local --nodes 3 --port 8080 --state-dir ./pod-cluster
    pod-bootstrap ssh --hosts 10.0.0.1,10.0.0.2,10.0.0.3 --user root --state-dir ./pod-cluster [--dry-run]
    pod-bootstrap cloud --provider-config cloud.json --nodes 3 --state-dir ./pod-cluster
    pod-bootstrap stop --state-dir ./pod-cluster

Every mode generates a cluster secret and records the cluster in `<state-dir>/cluster.json` (mode 600): name,
secret, mode, members. Running again with the same state dir is safe: a cluster that answers (some member's
/status names a leader) is printed and nothing starts; a recorded cluster that does not answer is restarted with
the same secret (local) or left alone with an explanation (ssh, cloud) unless --force.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

from . import __version__
from .localcluster import LocalCluster, LocalNode, get_json
from .scaling import userdata

T = TypeVar("T")
Out = Callable[[str], None]

STATE_FILE = "cluster.json"
STOP_GRACE_S = 10.0
MODES = ("local", "ssh", "cloud")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


class BootstrapError(Exception):
    """Something the user must fix or decide; main prints the message and exits 1."""


def say(text: str = "") -> None:
    """Print one line of output right away."""
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------- state


def state_path(state_dir: str | Path) -> Path:
    """Where the cluster record lives."""
    return Path(state_dir) / STATE_FILE


def new_secret() -> str:
    """A fresh cluster secret."""
    return secrets.token_urlsafe(32)


def new_state(name: str, mode: str, secret: str) -> dict[str, Any]:
    """An empty cluster record."""
    return {"name": name, "mode": mode, "secret": secret, "status": "new", "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "members": []}


def load_state(state_dir: str | Path) -> dict[str, Any] | None:
    """The recorded cluster, or None when the state dir has none."""
    path = state_path(state_dir)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise BootstrapError(f"cannot read {path}: {err}") from None
    if not isinstance(state, dict) or state.get("mode") not in MODES or not state.get("secret"):
        raise BootstrapError(f"{path} is not a cluster record (no mode or secret); move it away")
    return state


def save_state(state_dir: str | Path, state: dict[str, Any]) -> None:
    """Write the record atomically, readable by the owner only (it holds the secret)."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, state_path(directory))


# ---------------------------------------------------------------------------------------------------- probing


def member_status(url: str | None) -> dict[str, Any] | None:
    """A member's /status, or None if it does not answer 200."""
    if not url:
        return None
    try:
        code, body = get_json(url.rstrip("/") + "/status", timeout_s=2.0)
    except (OSError, ValueError):
        return None
    return body if code == 200 else None


def answering(state: dict[str, Any]) -> dict[str, Any] | None:
    """The /status of the first recorded member that knows a leader, else None."""
    for member in state.get("members", []):
        status = member_status(member.get("url"))
        if status and status.get("leader"):
            return status
    return None


def workers(url: str) -> dict[str, str]:
    """{worker id: status} as the member at `url` sees it ({} when it does not answer)."""
    try:
        code, body = get_json(url.rstrip("/") + "/POD/?action=getWorkers", timeout_s=5.0)
    except (OSError, ValueError):
        return {}
    return {w["id"]: w.get("status", "") for w in body.get("workers", [])} if code == 200 else {}


def poll(check: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Call `check` until it returns something truthy; BootstrapError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BootstrapError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def existing_cluster(state: dict[str, Any] | None, mode: str, force: bool, state_dir: str | Path) -> str:
    """What to do about the recorded cluster: "new" (none), "running" (it answers: start nothing) or "restart"
    (it does not answer; local mode, or --force). Refuses with BootstrapError otherwise."""
    if state is None:
        return "new"
    where = state_path(state_dir)
    if state["mode"] != mode:
        raise BootstrapError(f"{where} records a {state['mode']} cluster {state['name']!r}, not a {mode} one; "
                             f"use another --state-dir, or stop that cluster and move the file away")
    if answering(state):
        return "running"
    if mode == "local" or force:
        return "restart"
    raise BootstrapError(
        f"{where} records the {mode} cluster {state['name']!r} ({len(state['members'])} members), but no member "
        f"answers with a leader. Check the servers (systemctl status {userdata.UNIT_NAME}, journalctl -u "
        f"{userdata.UNIT_NAME}); rerun with --force to deploy again with the same secret"
        + (" (this destroys the recorded servers first)" if mode == "cloud" else ""))


# ---------------------------------------------------------------------------------------------------- output


def member_where(member: dict[str, Any]) -> str:
    """Where a member runs, for the listing: its pid, host or cloud server."""
    if member.get("pid"):
        return f"pid {member['pid']}"
    if member.get("server"):
        return f"server {member['server']}"
    return f"host {member.get('host', '?')}"


def report(state: dict[str, Any], state_dir: str | Path, out: Out = say) -> None:
    """Print the members and how to reach the API."""
    status = answering(state)
    leader = status.get("leader") if status else None
    members = state["members"]
    out(f"POD cluster {state['name']!r} ({state['mode']}, {len(members)} members, secret "
        f"{'set' if state['secret'] else 'none'})" + (f", leader {leader}" if leader else ", no leader answering"))
    for m in members:
        out(f"  {m['id']:<5} {m.get('url') or '(no URL yet)':<30} {member_where(m)}"
            + ("  (leader)" if m["id"] == leader else ""))
    url = (status or {}).get("httpUrl") or next((m["url"] for m in members if m.get("url")), None)
    if url:
        out(f"API:   export POD_URL={url}")
        out(f"       pod status   # or: curl '{url}/POD/?action=getWorkers'")
    out(f"State: {state_path(state_dir).resolve()} (mode 600, holds the cluster secret)")


def already_running(state: dict[str, Any], state_dir: str | Path, out: Out) -> int:
    """The recorded cluster answers: say so and start nothing."""
    out(f"POD cluster {state['name']!r} is already running; starting nothing.")
    report(state, state_dir, out)
    return 0


# ---------------------------------------------------------------------------------------------------- local


class SecretLocalCluster(LocalCluster):
    """A LocalCluster whose nodes get the cluster secret as POD_SECRET in their environment, never in argv."""

    def __init__(self, *args: Any, secret: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.secret = secret

    def start_node(self, node: LocalNode) -> None:
        """Start one node detached (own session), output to LOG_DIR/<id>.log."""
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "POD_SECRET": self.secret}
        with open(self.log_dir / f"{node.node_id}.log", "ab") as out:
            node.proc = subprocess.Popen(self.command(node), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                         cwd=self.data_dir)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a node could bind `port` (TIME_WAIT is fine, as for the nodes)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def is_node_process(pid: int, node_id: str) -> bool:
    """Whether `pid` is still a running podnode process of `node_id` (not a zombie, not a reused pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"podnode" in a for a in args) and node_id.encode() in args


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group; a gone group is fine."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_pids(members: list[dict[str, Any]], grace_s: float = STOP_GRACE_S) -> list[str]:
    """SIGTERM the process groups of the members' pids, SIGKILL those still running after `grace_s`.
    Returns the ids that had to be killed."""
    live = [(m["id"], int(m["pid"])) for m in members if m.get("pid") and is_node_process(int(m["pid"]), m["id"])]
    for _, pid in live:
        signal_group(pid, signal.SIGCONT)
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_node_process(pid, n) for n, pid in live):
        time.sleep(0.1)
    killed = [n for n, pid in live if is_node_process(pid, n)]
    for node_id, pid in live:
        if node_id in killed:
            signal_group(pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while time.monotonic() < end and any(is_node_process(pid, n) for n, pid in live):
        time.sleep(0.1)
    return killed


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
        poll(lambda m=member: (member_status(m["url"]) or {}).get("leader"), timeout_s=args.timeout,
             what=f"{member['url']}/status to name a leader")
    state["status"] = "running"
    save_state(state_dir, state)
    report(state, state_dir, out)
    return 0


# ---------------------------------------------------------------------------------------------------- cloud


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one provider coroutine to completion from synchronous code."""
    return asyncio.run(coro)


def load_provider_options(path: str | Path) -> dict[str, Any]:
    """The libcloud provider's options from a JSON file (as for `podnode --provider-config`)."""
    from .scaling.factory import read_options
    try:
        return read_options(path)
    except ValueError as err:
        raise BootstrapError(str(err)) from None


def provider_from_options(options: dict[str, Any], secret: str) -> Any:
    """A LibcloudProvider for the options (driver, key, image, size, ...; "register": "module:function" runs
    first), with no join URL yet: the first node it launches is a seed."""
    from .scaling.providers import LibcloudProvider
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
    status = member_status(url)
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
    poll(lambda: all(workers(seed_url).get(n) == "up" for n in ids), timeout_s=timeout_s,
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


if __name__ == "__main__":
    sys.exit(main())
