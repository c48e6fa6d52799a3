"""Keep executions away from the cloud's instance metadata service.

On a cloud VM, http://169.254.169.254 (and [fd00:ec2::254] on AWS) answers any process on the machine with the
VM's user data, which holds the node's run.sh and so POD_SECRET, and often with the VM's cloud credentials. A node
that runs as root runs executions and install scripts as an unprivileged user (exec/sandbox.py); at start it adds
a kernel rule that rejects that user's packets to the metadata addresses (nft, else iptables and ip6tables, with
the owner match on the user's uid). Without a firewall tool, or when the rule cannot be added, it logs a warning
and carries on: a laptop has no metadata service, and a cloud image has the tools.

The rule is idempotent (nft: a table of our own per uid, replaced whole; iptables: added only when `-C` does not
find it) and is left in place when the node stops: several nodes on one host share the run-as user, so a node
that removed it at stop would open the way for the others' executions, and the rule only refuses what that user
must never do.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

log = logging.getLogger(__name__)

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA_V4 = ("169.254.169.254",)
METADATA_V6 = ("fd00:ec2::254",)
TOOLS = ("nft", "iptables")
TIMEOUT_S = 10.0


class GuardError(RuntimeError):
    """The rule could not be added with this tool."""


def guard_metadata(uid: int, *, v4: Sequence[str] = METADATA_V4, v6: Sequence[str] = METADATA_V6,
                   tools: Sequence[str] = TOOLS) -> str | None:
    """Reject uid's traffic to the metadata addresses; the tool that added the rule, or None (warned) if none
    could. Never raises: the node starts either way."""
    failures = []
    for tool in tools:
        path = shutil.which(tool, path=SANE_PATH)
        if path is None:
            continue
        try:
            (_with_nft if tool == "nft" else _with_iptables)(path, uid, v4, v6)
        except GuardError as exc:
            failures.append(f"{tool}: {exc}")
            continue
        log.info("executions (uid %d) cannot reach the cloud metadata service (%s): rule added with %s",
                 uid, ", ".join([*v4, *v6]), tool)
        return tool
    why = "; ".join(failures) if failures else f"none of {', '.join(tools)} is installed"
    log.warning("executions (uid %d) CAN reach the cloud metadata service at %s, which on a cloud VM hands out "
                "this node's user data (its POD_SECRET): %s. Install nftables or iptables and restart the node",
                uid, ", ".join([*v4, *v6]), why)
    return None


def nft_table(uid: int) -> str:
    return f"pod_metadata_guard_{uid}"


def nft_script(uid: int, v4: Sequence[str], v6: Sequence[str]) -> str:
    """A table of our own for this uid, replaced whole (declared, deleted, declared again: idempotent)."""
    table = nft_table(uid)
    rules = []
    if v4:
        rules.append(f"meta skuid {uid} ip daddr {{ {', '.join(v4)} }} reject")
    if v6:
        rules.append(f"meta skuid {uid} ip6 daddr {{ {', '.join(v6)} }} reject")
    body = "\n".join(f"    {rule}" for rule in rules)
    return (f"table inet {table}\ndelete table inet {table}\n"
            f"table inet {table} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n"
            f"{body}\n  }}\n}}\n")


def _with_nft(nft: str, uid: int, v4: Sequence[str], v6: Sequence[str]) -> None:
    _run([nft, "-f", "-"], stdin=nft_script(uid, v4, v6))


def _with_iptables(iptables: str, uid: int, v4: Sequence[str], v6: Sequence[str]) -> None:
    ip6tables = shutil.which("ip6tables", path=SANE_PATH)
    if v6 and ip6tables is None:
        raise GuardError("ip6tables is missing")
    for tool, addresses, prefix in ((iptables, v4, 32), (ip6tables, v6, 128)):
        for address in addresses:
            rule = ["OUTPUT", "-d", f"{address}/{prefix}", "-m", "owner", "--uid-owner", str(uid), "-j", "REJECT"]
            try:
                _run([tool, "-w", "-C", *rule])   # already there
            except GuardError:
                _run([tool, "-w", "-I", *rule])


def _run(argv: list[str], stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuardError(f"{argv[0]} failed: {exc}") from None
    if proc.returncode != 0:
        raise GuardError(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:300]}")
