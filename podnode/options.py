"""Every option of a node, in one table: it drives podnode's flags, the keys of its TOML config file, the POD_*
environment variables and the README's option table (no three hand-kept lists).

An option `slots` is the flag `--slots`, the key `slots` of the file and the variable `POD_SLOTS`; a few have an
older variable kept as an alias (`POD_CLUSTER`, `POD_NODE_ID`). Values are checked here, whatever their source, by
`convert` (a string from a flag or the environment) and `check_toml` (a value the file typed); how they become a
NodeConfig is config_file.py's. Pure: no I/O.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

# kinds of value: str, int, float, bool, addr (HOST:PORT), list (comma-separated; an array in the file)
KINDS = ("str", "int", "float", "bool", "addr", "list")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    key: str                                # the file's key; the flag is --key-with-dashes, the variable POD_KEY
    kind: str
    default: object                         # None: not set (the node decides, see `shown_default`)
    help: str                               # what it means, in one or two sentences (README and --help)
    choices: tuple[str, ...] = ()           # the values allowed (any case; kept lowercase)
    metavar: str | None = None
    env_aliases: tuple[str, ...] = ()       # older variable names, read when POD_KEY is not set
    shown_default: str | None = None        # the default as the README says it, when `default` does not say it
    repeatable: bool = False                # a list flag given once per value (--allow-origin A --allow-origin B)
    secret: bool = False                    # never printed; in a file only if its mode lets nobody else read it

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return "POD_" + self.key.upper()

    @property
    def env_names(self) -> tuple[str, ...]:
        return (self.env, *self.env_aliases)

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.kind == "bool":
            return "yes" if self.default else "no"
        if self.kind == "list":
            return "none" if not self.default else ",".join(self.default)
        return "none" if self.default is None else f"{self.default:g}" if self.kind == "float" else str(self.default)


OPTIONS: tuple[Option, ...] = (
    Option("id", "str", None, "this node's name in the cluster, e.g. n1", env_aliases=("POD_NODE_ID",),
           shown_default="(required)"),
    Option("http", "addr", "127.0.0.1:8080", "where the action API and /status listen", metavar="HOST:PORT"),
    Option("raft", "addr", "127.0.0.1:9080", "where Raft listens; peers reach the node there", metavar="HOST:PORT"),
    Option("peers", "list", [], "the other members' Raft addresses (HOST:PORT, comma-separated)"),
    Option("join", "str", None, "join a running cluster through any member's HTTP address (http://HOST:PORT or "
           "HOST:PORT), or auto to find one of cluster_name on the local network (zeroconf)", metavar="URL"),
    Option("join_timeout_s", "float", 60.0, "keep asking the member to let this node in this long before giving up"),
    Option("cluster_name", "str", "pod", "the cluster's name, announced over zeroconf; --join auto joins only "
           "this cluster", env_aliases=("POD_CLUSTER",)),
    Option("announce", "bool", True, "announce this node over zeroconf so that --join auto finds the cluster"),
    Option("data_dir", "str", None, "journal, snapshot, installed activities", shown_default="./pod-data/ID"),
    Option("slots", "int", None, "executions run at once on this node", shown_default="CPU count"),
    Option("secret", "str", None, "cluster secret, the same on every member; required when Raft binds beyond "
           "loopback, a loopback node given none makes one in DATA/secret. Prefer the environment or a file only "
           "its owner reads: ps shows a flag", secret=True),
    Option("allow_file_urls", "bool", None, "accept file:// install scripts", shown_default="only on a loopback node"),
    Option("advertise_host", "str", None, "the host other nodes use to reach this one",
           shown_default="the bind host"),
    Option("output_cap_bytes", "int", 1024 * 1024, "kept per stream of an execution; the rest is drained and "
           "dropped (stdoutTruncated)"),
    Option("kill_grace_s", "float", 5.0, "terminate: SIGTERM to the execution's processes, SIGKILL after this"),
    Option("run_as", "str", None, "the user install scripts and executions run as when the node is root "
           "(created if missing)", metavar="USER", shown_default="pod"),
    Option("cgroups", "str", "auto", "each execution's cgroup: v2, v1 (pids, memory), none (a session and "
           "rlimits); auto takes the first that works", choices=("auto", "v2", "v1", "none")),
    Option("exec_timeout_s", "float", 0.0, "an execution running longer is killed and ends error (0: none)"),
    Option("exec_memory_mb", "int", 0, "memory of all of an execution's processes (memory.max, or RLIMIT_AS "
           "without cgroups; 0: none)"),
    Option("exec_max_processes", "int", 1024, "processes and threads of an execution (pids.max, or RLIMIT_NPROC "
           "without cgroups; 0: none)"),
    Option("auth", "str", "token", "token: every /POD/ action and /status needs Authorization: Bearer TOKEN; "
           "none: no token asked, only for an HTTP bound to loopback (warns)", choices=("token", "none")),
    Option("allow_origin", "list", [], "browser origins (scheme://host:port) allowed besides the node's own; * for "
           "any (the flag is repeatable)", metavar="ORIGIN", repeatable=True),
    Option("tls_cert", "str", None, "serve the API over https with this PEM certificate (chain); peers then talk "
           "https too", metavar="PEM"),
    Option("tls_key", "str", None, "the private key (PEM) of tls_cert", metavar="PEM"),
    Option("tls_ca", "str", None, "PEM CA bundle that other nodes' certificates are checked against",
           metavar="PEM", shown_default="the system's CAs"),
    Option("max_waiting_executions", "int", 200_000, "quota: waiting executions cluster-wide; newExecution "
           "beyond it gets 429 (0: none)"),
    Option("max_activities", "int", 1000, "quota: activities cluster-wide; newActivity beyond it gets 429 "
           "(0: none)"),
    Option("max_unread_result_bytes", "int", 256 * 1024 * 1024, "quota: output of ended executions nobody has "
           "read; new executions get 429 while it is reached (0: none)"),
    Option("node_lost_after_s", "float", 3.0, "a node the leader has not heard from this long is lost; its work "
           "moves"),
    Option("election_timeout_s", "float", 0.4, "Raft election timeout (lower bound; the upper is 3.5x)"),
    Option("provider", "str", "none", "who launches and destroys nodes for the scaling policy",
           choices=("none", "local", "libcloud")),
    Option("provider_config", "str", None, "JSON file of the provider's options (libcloud: driver, key, secret, "
           "image, size, ...)", metavar="FILE"),
    Option("scaling_interval_s", "float", 2.0, "how often the leader evaluates the active policy"),
    Option("max_voters", "int", 5, "Raft voters at most (3 at least); further nodes join as observers"),
    Option("log_level", "str", "info", "the least severe log records written",
           choices=("debug", "info", "warning", "error", "critical")),
    Option("log_format", "str", "text", "text: one line of text a record; json: one JSON object a line (time, "
           "level, node, event, logger and the record's ids)", choices=("text", "json")),
)
BY_KEY = {o.key: o for o in OPTIONS}


class OptionError(ValueError):
    """A value that does not fit its option; the message names the option and the value."""


def convert(opt: Option, text: str) -> object:
    """A value from a flag or an environment variable (text) as the option's kind; OptionError if it does not fit."""
    try:
        if opt.kind == "int":
            return int(text)
        if opt.kind == "float":
            return float(text)
    except ValueError:
        raise OptionError(f"expected {'an integer' if opt.kind == 'int' else 'a number'}, got {text!r}") from None
    if opt.kind == "bool":
        if text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise OptionError(f"expected true or false, got {text!r}")
    if opt.kind == "list":
        return [p.strip() for p in text.split(",") if p.strip()]
    return check_str(opt, text)


def check_toml(opt: Option, value: object) -> object:
    """A value the TOML file typed, checked against the option's kind; OptionError saying what was expected."""
    kind = opt.kind
    if kind == "int" and type(value) is int:
        return value
    if kind == "float" and type(value) in (int, float):
        return float(value)
    if kind == "bool" and type(value) is bool:
        return value
    if kind in ("str", "addr") and isinstance(value, str):
        return check_str(opt, value)
    if kind == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if kind == "list" and isinstance(value, str):
        return convert(opt, value)
    wanted = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
              "addr": "a string HOST:PORT", "list": "an array of strings"}[kind]
    raise OptionError(f"expected {wanted}, got {type(value).__name__} {value!r}")


def check_str(opt: Option, text: str) -> str:
    if opt.choices:
        if text.lower() not in opt.choices:
            raise OptionError(f"expected one of {', '.join(opt.choices)}, got {text!r}")
        return text.lower()
    if opt.kind == "addr":
        host_port(text)
    return text


def host_port(value: str) -> tuple[str, int]:
    """HOST:PORT (an empty host is 127.0.0.1) as (host, port); OptionError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise OptionError(f"expected HOST:PORT, got {value!r}")
    if not 0 < int(port) < 65536:   # 0 would bind a random port that no peer or client could be told
        raise OptionError(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}")
    return host or "127.0.0.1", int(port)


def add_flags(ap: argparse.ArgumentParser) -> None:
    """One flag per option. None has a default: what is not given stays out of the namespace (argparse.SUPPRESS),
    so that the file and the environment are not overridden by a default."""
    for opt in OPTIONS:
        text = f"{opt.help} (file: {opt.key}; env: {' or '.join(opt.env_names)}; default: {opt.default_text()})"
        kwargs = {"dest": opt.key, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if opt.metavar or opt.choices:
            kwargs["metavar"] = opt.metavar or "{" + ",".join(opt.choices) + "}"
        if opt.kind == "bool":
            ap.add_argument(opt.flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif opt.repeatable:
            ap.add_argument(opt.flag, action="append", **kwargs)
        else:
            ap.add_argument(opt.flag, type=_flag_type(opt), **kwargs)


def _flag_type(opt: Option):
    def parse(text: str) -> object:
        try:
            return convert(opt, text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = opt.kind   # argparse names it in "invalid <name> value"
    return parse


def default_slots() -> int:
    return os.cpu_count() or 1


def markdown_table() -> str:
    """The README's option table: flag, file key, environment variables, default, meaning; one row an option."""
    rows = ["| flag | `pod.toml` key | environment | default | meaning |", "|---|---|---|---|---|"]
    for opt in OPTIONS:
        flag = f"--[no-]{opt.flag[2:]}" if opt.kind == "bool" else opt.flag
        flag = f"`{flag} {opt.metavar}`" if opt.metavar else f"`{flag}`"
        env = ", ".join(f"`{name}`" for name in opt.env_names)
        named = all(re.search(rf"\b{c}\b", opt.help) for c in opt.choices)
        meaning = opt.help + ("" if named else f" (one of: {', '.join(opt.choices)})")
        rows.append(f"| {flag} | `{opt.key}` | {env} | {opt.default_text()} | {meaning} |")
    return "\n".join(rows) + "\n"
