"""`pod`: the command-line client of a POD cluster, and `pod up` to run one on this machine.

Talks to the HTTP action API with the standard library only. The exit codes are in EXIT_CODES (`pod --help`).
"""

from __future__ import annotations

import argparse
import os

from ..tls import TlsError, client_context
from .activities import add_activity
from .client import EXIT_INTERRUPTED, EXIT_USAGE, Api, CliError, find_token, find_urls
from .cluster import add_cluster
from .executions import add_execution, add_run
from .output import warn
from .tokens import add_token
from .up import add_up


def _common() -> argparse.ArgumentParser:
    """--url and --json are accepted after the command too (`pod status --json`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="a node's URL")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON")
    common.add_argument("--token", default=argparse.SUPPRESS, help="the API token to send")
    return common


class _Sub:
    """Subparsers whose every parser also takes the common options."""

    def __init__(self, actions):
        self.actions = actions

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.actions.add_parser(name, parents=[_common()], **kwargs)

    def add_named(self, name: str, func, text: str) -> argparse.ArgumentParser:
        """An action on one named thing: `pod KIND ACTION NAME`."""
        p = self.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(func=func)
        return p

    def add_subparsers(self, parser: argparse.ArgumentParser, dest: str) -> _Sub:
        return _Sub(parser.add_subparsers(dest=dest, required=True, metavar="ACTION"))


EXIT_CODES = """exit codes:
  0    done (pod execution status: also while the execution waits or runs)
  1    the job failed: an activity was rejected, an execution ended in error without an exit code
  2    bad usage, or the node refused the request (4xx: unknown name or id, name taken, ...)
  3    no node reachable at the URL, or it failed (5xx, or 503 for longer than the retries);
       pod up: the cluster did not start
  124  gave up waiting (--timeout)
  130  interrupted (Ctrl-C)
  N    pod run --wait and pod execution status of an ended execution: main.sh's exit code N
       (128+S if a signal S ended it), 143 if it was terminated;
       pod run --inputs: 0 if every execution finished, else the largest of their codes (1: an error
       without a code, or a result lost)"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pod", description="Client of a POD cluster (processing on demand).",
                                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None,
                    help="a node's URL (default: env POD_URL, else the nodes listed in ./pod-data/urls by a pod up "
                         "running from this directory, else http://localhost:8080)")
    ap.add_argument("--cacert", default=os.environ.get("POD_CACERT") or None, metavar="FILE",
                    help="PEM CA bundle to verify an https node's certificate with (default: env POD_CACERT, "
                         "else the system's CAs)")
    ap.add_argument("--json", action="store_true", help="print the raw JSON answers")
    ap.add_argument("--token", default=None,
                    help="the API token (default: env POD_TOKEN, else the file ./pod-data/token that pod up writes)")
    sub = _Sub(ap.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    add_up(sub)
    add_activity(sub)
    add_run(sub)
    add_execution(sub)
    add_cluster(sub)
    add_token(sub)
    return ap


def _ssl_context(cacert: str | None):
    """The context an https node's certificate is verified with: --cacert's CA, else the system's (None)."""
    if not cacert:
        return None
    try:
        return client_context(cacert, option="--cacert")
    except TlsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (the `pod` script exits with it)."""
    args = build_parser().parse_args(argv)
    try:
        api = Api(find_urls(args.url), find_token(args.token), ssl_context=_ssl_context(args.cacert))
        code = args.func(args, api)
    except CliError as err:
        warn(err.message)
        code = err.code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    return code
