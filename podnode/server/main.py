"""The `podnode` command: its settings (config file < POD_* environment < flags, see config_file.py), parsed
into a frozen NodeConfig, and running the node until a signal.

Run it with `podnode --id n1 --http 127.0.0.1:8080 --raft 127.0.0.1:9080 --peers HOST:PORT,...`, or with
`podnode --config pod.toml`; `podnode --config pod.toml --print-config` shows what the node would run with.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .. import logs
from ..config import NodeConfig
from ..config_file import CONFIG_ENV, ConfigError, Settings, merge, node_config, render_toml
from ..errors import IncompatibleDependency
from ..options import add_flags
from .serve import serve


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="podnode", description="Run one POD node. Every option may also be set in a TOML file (--config) and "
        "in a POD_* environment variable; flags win over the environment, which wins over the file.")
    ap.add_argument("--config", metavar="FILE", default=None,
                    help=f"a TOML file of options, keys as the flags with _ for - (env: {CONFIG_ENV})")
    ap.add_argument("--print-config", action="store_true",
                    help="print the effective settings as TOML (the secret not shown), and exit")
    add_flags(ap)
    return ap


def settings(argv: list[str] | None = None, environ=None) -> tuple[Settings, argparse.Namespace]:
    """The merged settings and the parsed command line. A bad flag: argparse's usage error (exit 2); a bad file
    or variable: ConfigError."""
    a = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(a).items() if k not in ("config", "print_config")}
    return merge(flags=flags, environ=os.environ if environ is None else environ, path=a.config), a


def parse_args(argv: list[str] | None = None, environ=None) -> NodeConfig:
    """The NodeConfig of a command line (and `environ`, by default this process's environment). Any error:
    one line `podnode: error: ...` on stderr and exit 2."""
    try:
        return node_config(settings(argv, environ)[0])
    except ConfigError as exc:
        _usage_error(exc)


def _usage_error(exc: Exception):
    print(f"podnode: error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)   # the journal, the snapshot, every file the node makes: 600; its directories 700
    try:
        s, a = settings(argv)
        if a.print_config:
            print(render_toml(s), end="")
            return
        cfg = node_config(s)
    except ConfigError as exc:
        _usage_error(exc)
    logs.setup(level=cfg.log_level, fmt=cfg.log_format, node_id=cfg.node_id)
    logs.redact(cfg.secret)
    if s.sources.get("secret", "").startswith("flag"):
        logging.getLogger("podnode").warning("the cluster secret was given with --secret, which ps shows to every "
                                             "user of this host: give it in POD_SECRET or a config file (mode 600)")
    try:
        try:
            asyncio.run(serve(cfg))
        except IncompatibleDependency as exc:  # refuse to start, saying why, without a traceback
            raise SystemExit(f"podnode: {exc}") from None
    except SystemExit as exc:
        if cfg.log_format != "json" or not isinstance(exc.code, str):
            raise
        logging.getLogger("podnode").critical(exc.code)   # a refusal to start: one more JSON line, not text
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
