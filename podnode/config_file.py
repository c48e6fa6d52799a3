"""A node's settings from three sources, each over the one before: the TOML file (--config FILE, or POD_CONFIG),
the POD_* environment variables, the command-line flags. Every key, variable and flag is an option of
options.OPTIONS; this module reads the file (refusing unknown keys, wrong types, and a secret in a file others can
read), merges the sources, builds the NodeConfig and renders the effective settings as TOML (`--print-config`).
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser, as a package
    import tomli as tomllib

from .config import NodeConfig, RaftTiming, is_loopback
from .options import BY_KEY, OPTIONS, Option, OptionError, check_toml, convert, default_slots, host_port

CONFIG_ENV = "POD_CONFIG"   # the file, when --config is not given


class ConfigError(Exception):
    """Settings that cannot be used; the message (one line) names the file, variable or key and what is wrong."""


@dataclass
class Settings:
    """The merged values of the options given somewhere, and where each came from ("file pod.toml", "env POD_X",
    "flag --x"). An option not given anywhere is absent: its default applies."""
    values: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def update(self, values: Mapping[str, object], source) -> None:
        for key, value in values.items():
            self.values[key] = value
            self.sources[key] = source(key) if callable(source) else source

    def get(self, key: str) -> object:
        return self.values[key] if key in self.values else BY_KEY[key].default


def read_file(path: str) -> dict[str, object]:
    """The options a TOML file sets, checked. ConfigError for an unreadable file, bad TOML, a key that is no
    option, a value of the wrong type, or the secret in a file whose mode lets others (group or world) read it."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            doc = tomllib.loads(f.read().decode())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values = {}
    for key, value in doc.items():
        opt = BY_KEY.get(key)
        if opt is None:
            close = difflib.get_close_matches(key, BY_KEY, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        try:
            values[key] = check_toml(opt, value)
        except OptionError as exc:
            raise ConfigError(f"config file {path}: {key}: {exc}") from None
        if opt.secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"config file {path} holds the cluster secret but others may read it (mode "
                              f"{stat.S_IMODE(mode):03o}): chmod 600 {path}, or give the secret in POD_SECRET")
    return values


def read_env(environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    """The options set in the environment: {key: (value, variable)}. POD_KEY first, then an option's older
    names; an empty variable is not set. ConfigError names the variable whose value does not fit."""
    found = {}
    for opt in OPTIONS:
        for name in opt.env_names:
            text = environ.get(name, "")
            if text.strip():
                try:
                    found[opt.key] = (convert(opt, text), name)
                except OptionError as exc:
                    raise ConfigError(f"environment variable {name}: {exc}") from None
                break
    return found


def merge(*, flags: Mapping[str, object], environ: Mapping[str, str], path: str | None) -> Settings:
    """file < environment < flags."""
    settings = Settings()
    path = path or environ.get(CONFIG_ENV) or None
    if path:
        settings.update(read_file(path), f"file {path}")
    env = read_env(environ)
    settings.update({k: v for k, (v, _) in env.items()}, lambda k: f"env {env[k][1]}")
    settings.update(flags, lambda k: f"flag {BY_KEY[k].flag}")
    return settings


def node_config(s: Settings) -> NodeConfig:
    """The NodeConfig of merged settings. ConfigError for a missing id or a bad combination (NodeConfig's
    checks); the provider's options file is read here."""
    from .scaling.factory import read_options

    node_id = s.get("id")
    if not node_id:
        raise ConfigError("no node id: give --id, id in the config file, or POD_ID")
    http, raft = host_port(s.get("http")), host_port(s.get("raft"))
    election = max(0.2, s.get("election_timeout_s"))
    timing = RaftTiming(heartbeat_s=min(0.05, election / 4), election_min_s=election,
                        election_max_s=election * 3.5, leader_fallback_s=election * 7.5)
    try:
        provider_options = read_options(s.get("provider_config")) if s.get("provider_config") else {}
        return NodeConfig(
            node_id=node_id, http_host=http[0], http_port=http[1], raft_host=raft[0], raft_port=raft[1],
            peers=list(s.get("peers")), join=s.get("join"), join_timeout_s=s.get("join_timeout_s"),
            data_dir=data_dir(s), slots=slots(s), secret=s.get("secret") or None,
            allow_file_urls=s.get("allow_file_urls"), advertise_host=s.get("advertise_host"),
            output_cap_bytes=s.get("output_cap_bytes"), kill_grace_s=s.get("kill_grace_s"), timing=timing,
            run_as=s.get("run_as"), cgroups=s.get("cgroups"), exec_timeout_s=s.get("exec_timeout_s"),
            exec_memory_mb=s.get("exec_memory_mb"), exec_max_processes=s.get("exec_max_processes"),
            auth=s.get("auth"), allow_origins=tuple(s.get("allow_origin")), tls_cert=s.get("tls_cert"),
            tls_key=s.get("tls_key"), tls_ca=s.get("tls_ca"), max_waiting_executions=s.get("max_waiting_executions"),
            max_activities=s.get("max_activities"), max_unread_result_bytes=s.get("max_unread_result_bytes"),
            node_lost_after_s=s.get("node_lost_after_s"), provider=s.get("provider"),
            provider_options=provider_options, scaling_interval_s=s.get("scaling_interval_s"),
            max_voters=max(3, s.get("max_voters")), cluster_name=s.get("cluster_name"), announce=s.get("announce"),
            log_level=s.get("log_level"), log_format=s.get("log_format"),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def data_dir(s: Settings) -> str:
    return s.get("data_dir") or os.path.join("pod-data", s.get("id"))


def slots(s: Settings) -> int:
    return default_slots() if s.get("slots") is None else s.get("slots")


def render_toml(s: Settings) -> str:
    """The effective settings as a TOML file that --config reads back: every option, in the table's order, with
    where its value came from; an option without a value is a comment, and so is the secret (never shown)."""
    computed = {"data_dir": data_dir(s) if s.get("id") else None, "slots": slots(s),
                "allow_file_urls": is_loopback(host_port(s.get("http"))[0])}
    lines = ["# podnode's effective settings: defaults < config file < POD_* environment < flags"]
    for opt in OPTIONS:
        source = s.sources.get(opt.key, "default")
        value = s.get(opt.key)
        if value is None and opt.key in computed and not opt.secret:
            value, source = computed[opt.key], "default, computed"
        if opt.secret:
            lines.append(f"# {opt.key} = ({'set, not shown' if value else 'not set'})  # {source}")
        elif value is None:
            lines.append(f"# {opt.key} = (not set)")
        else:
            lines.append(f"{opt.key} = {toml_value(opt, value)}  # {source}")
    return "\n".join(lines) + "\n"


def toml_value(opt: Option, value: object) -> str:
    """A TOML literal: JSON's strings, numbers and arrays of strings are TOML's too; booleans are lowercase."""
    if opt.kind == "bool":
        return "true" if value else "false"
    if opt.kind == "float":
        return repr(float(value))
    return json.dumps(value, ensure_ascii=False)
