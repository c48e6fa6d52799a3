"""Build the configured provider for a node (any node may become the leader that scales)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ..config import NodeConfig
from .providers import LibcloudProvider, LocalProvider, Provider


def read_options(path: str | Path) -> dict[str, Any]:
    """The provider's options from a JSON file (libcloud: driver, key, secret, driver_kwargs, image, size,
    location, slots; optional "register": "module:function" to register a driver outside libcloud).
    ValueError with a message a person can act on when the file is unreadable or not a JSON object."""
    try:
        options = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read provider config {path}: {exc}") from None
    if not isinstance(options, dict):
        raise ValueError(f"provider config {path} must be a JSON object")
    return options


def load_options(path: str | None) -> dict[str, Any]:
    """read_options for the podnode command line: no file means no options; a bad one stops the node."""
    if not path:
        return {}
    try:
        return read_options(path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def make_provider(cfg: NodeConfig) -> Provider | None:
    if cfg.provider in (None, "", "none"):
        return None
    if cfg.provider == "local":
        return LocalProvider(join_url=cfg.http_url, data_dir=Path(cfg.data_dir) / "launched",
                             slots=cfg.provider_options.get("slots", cfg.slots), secret=cfg.secret,
                             extra_args=launched_node_args(cfg))
    if cfg.provider == "libcloud":
        options = dict(cfg.provider_options)
        register = options.pop("register", None)
        if register:
            module, _, func = register.partition(":")
            getattr(importlib.import_module(module), func or "register")()
        try:
            return LibcloudProvider(join_url=cfg.http_url, cluster_secret=cfg.secret, **options)
        except TypeError as exc:
            raise SystemExit(f"bad libcloud provider options: {exc}") from None
    raise SystemExit(f"unknown provider {cfg.provider!r}: use none, local or libcloud")


def launched_node_args(cfg: NodeConfig) -> list[str]:
    """A launched local node runs with this node's timings and provider, so it can scale when it leads."""
    return ["--election-timeout-s", f"{cfg.timing.election_min_s:g}", "--node-lost-after-s",
            f"{cfg.node_lost_after_s:g}", "--kill-grace-s", f"{cfg.kill_grace_s:g}",
            "--scaling-interval-s", f"{cfg.scaling_interval_s:g}", "--provider", "local", "--log-format",
            cfg.log_format, *tls_args(cfg)]


def tls_args(cfg: NodeConfig) -> list[str]:
    """A node of a TLS cluster launched on this machine serves https with this node's certificate (it names the
    same host) and checks its peers against the same CA."""
    args = ["--tls-cert", cfg.tls_cert, "--tls-key", cfg.tls_key] if cfg.tls_cert and cfg.tls_key else []
    return args + (["--tls-ca", cfg.tls_ca] if cfg.tls_ca else [])
