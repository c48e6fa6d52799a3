"""Cloud-init user data that turns a fresh Linux server into a POD node joining a running cluster (or seeding one).

The script begins with a block of plain shell assignments (`POD_NODE_ID=...`, `POD_JOIN=...`, `POD_SECRET=...`,
`POD_SLOTS=...`, `POD_PIP_SPEC=...`), each value quoted with `shlex.quote`, so that tools (and the test cloud
driver) can read the node's settings back with `parse` without running anything.
"""

from __future__ import annotations

import os
import re
import shlex

#: Where the script puts things on the server.
VENV_DIR = "/opt/pod"
CONFIG_DIR = "/etc/pod"
DATA_DIR = "/var/lib/pod"
UNIT_NAME = "podnode.service"
HTTP_PORT = 8080
RAFT_PORT = 9080

#: Environment variable (on the machine that renders) that overrides what pip installs, e.g. a wheel URL.
PIP_SPEC_ENV = "POD_PIP_SPEC"

_ASSIGNMENT = re.compile(r"^(POD_[A-Z0-9_]*)=(.*)$")


def pip_spec(pod_version: str) -> str:
    """What `pip install` gets: $POD_PIP_SPEC if set where we render, else `podnode==VERSION`."""
    return os.environ.get(PIP_SPEC_ENV) or f"podnode=={pod_version}"


def settings_block(settings: dict[str, str]) -> str:
    """`NAME=quoted-value` lines, one per setting; values may not contain line breaks or NULs."""
    lines = []
    for name, value in settings.items():
        if not _ASSIGNMENT.match(f"{name}="):
            raise ValueError(f"bad setting name {name!r}: must match POD_[A-Z0-9_]*")
        if any(ch in value for ch in "\n\r\0"):
            raise ValueError(f"{name} may not contain a line break or NUL: {value!r}")
        lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def render(*, node_id: str, join_url: str | None, cluster_secret: str | None, slots: int, pod_version: str) -> str:
    """A `#!/bin/bash` cloud-init script: install podnode in a venv and run it under systemd, joining `join_url`.

    A None or empty `join_url` renders a seed: POD_JOIN is empty, the node starts without --join (and without
    peers) and becomes a one-node cluster that later nodes join.

    The node listens for HTTP on 0.0.0.0:8080 and for Raft on the server's first address (`hostname -I`) port 9080,
    which it also advertises. The cluster secret reaches podnode in its environment (POD_SECRET), never on its
    command line; run.sh holding it is 700 root. An empty or None `cluster_secret` starts the node without one,
    which podnode refuses (its Raft port binds beyond loopback), so real clouds need a secret.
    """
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    block = settings_block({
        "POD_NODE_ID": node_id,
        "POD_JOIN": join_url or "",
        "POD_SECRET": cluster_secret or "",
        "POD_SLOTS": str(slots),
        "POD_PIP_SPEC": pip_spec(pod_version),
    })
    return "#!/bin/bash\n" + block + _BODY.format(
        block=block, venv=VENV_DIR, config=CONFIG_DIR, data=DATA_DIR, unit=UNIT_NAME,
        http_port=HTTP_PORT, raft_port=RAFT_PORT)


def parse(userdata: str) -> dict[str, str]:
    """Read back the settings block at the top of a `render`ed script: {"POD_NODE_ID": ..., ...}.

    Skips the `#!` line, blank lines and comments before the block; stops at the first other line.
    Raises ValueError if an assignment's value is not exactly one shell word.
    """
    settings: dict[str, str] = {}
    for line in userdata.splitlines():
        stripped = line.strip()
        if not settings and (not stripped or stripped.startswith("#")):
            continue
        match = _ASSIGNMENT.match(line)
        if not match:
            break
        try:
            words = shlex.split(match.group(2), comments=False, posix=True)
        except ValueError as err:
            raise ValueError(f"cannot read {match.group(1)}: {err}") from err
        if len(words) != 1:
            raise ValueError(f"{match.group(1)} is not one shell word: {match.group(2)!r}")
        settings[match.group(1)] = words[0]
    return settings


# The rest of the script, after the settings block. Doubled braces are literal braces for str.format.
_BODY = r"""
set -euo pipefail
echo "pod: installing node $POD_NODE_ID ($POD_PIP_SPEC)"

install_python() {{
    if command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -y && apt-get install -y python3 python3-venv python3-pip
    elif command -v dnf >/dev/null; then
        dnf install -y python3 python3-pip
    elif command -v yum >/dev/null; then
        yum install -y python3 python3-pip
    fi
}}

if ! python3 -m venv {venv}; then
    install_python
    rm -rf {venv}
    python3 -m venv {venv}
fi
{venv}/bin/pip install --upgrade pip
{venv}/bin/pip install "$POD_PIP_SPEC"

mkdir -p {data} {config}
chmod 700 {config} {data}

# The launcher repeats the settings block and works out this server's address when the service starts.
umask 077
cat > {config}/run.sh <<'POD_RUN_EOF'
#!/bin/bash
set -euo pipefail
{block}IP="$(hostname -I | awk '{{print $1}}')"
args=(--id "$POD_NODE_ID" --http 0.0.0.0:{http_port} --raft "$IP:{raft_port}"
      --advertise-host "$IP" --slots "$POD_SLOTS" --data-dir {data})
if [ -n "$POD_JOIN" ]; then
    args+=(--join "$POD_JOIN")
fi
export POD_SECRET    # podnode reads it from its environment: never on its command line, where ps shows it
exec {venv}/bin/python -m podnode "${{args[@]}}"
POD_RUN_EOF
chmod 700 {config}/run.sh
umask 022

cat > /etc/systemd/system/{unit} <<'POD_UNIT_EOF'
[Unit]
Description=POD node
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={config}/run.sh
Restart=always
RestartSec=2
KillMode=control-group
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
POD_UNIT_EOF

systemctl daemon-reload
systemctl enable --now {unit}
echo "pod: node $POD_NODE_ID started"
"""
