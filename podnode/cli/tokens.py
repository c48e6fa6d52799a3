"""`pod token create|list|delete`: the cluster's API tokens (needs an admin token)."""

from __future__ import annotations

import argparse
import time

from .client import Api
from .output import emit_json, say, table, warn


def cmd_token_create(args: argparse.Namespace, api: Api) -> int:
    body = api.action("newToken", name=args.name, scope=args.scope)
    if args.json:
        emit_json(body)
        return 0
    token = body["token"]
    warn(f"token {token['name']} ({token['scope']}): shown this once; the cluster keeps only its salted hash")
    say(token["token"])
    return 0


def cmd_token_list(args: argparse.Namespace, api: Api) -> int:
    body = api.action("getTokens")
    if args.json:
        emit_json(body)
        return 0
    table([["NAME", "SCOPE", "CREATED"]] +
          [[t["name"], t["scope"], "with the cluster" if t.get("birth") else
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.get("createdAt") or 0))]
           for t in body.get("tokens", [])])
    return 0


def cmd_token_delete(args: argparse.Namespace, api: Api) -> int:
    body = api.action("deleteToken", name=args.name)
    if args.json:
        emit_json(body)
        return 0
    say(f"token {args.name} deleted")
    if body.get("unconfirmed"):
        warn(f"not confirmed by {', '.join(body['unconfirmed'])} (unreachable): they refuse it once they catch up")
    return 0


def add_token(sub) -> None:
    tok = sub.add_parser("token", help="create, list or delete API tokens (admin)")
    tsub = sub.add_subparsers(tok, "token_command")
    p = tsub.add_parser("create", help="make a token; it is printed once, on stdout")
    p.add_argument("name")
    p.add_argument("--scope", choices=["read", "submit", "admin"], default="submit",
                   help="read: status and reads; submit: also run executions and read their results; "
                        "admin: everything (default submit)")
    p.set_defaults(func=cmd_token_create)
    p = tsub.add_parser("list", help="names, scopes and creation times (never the tokens)")
    p.set_defaults(func=cmd_token_list)
    tsub.add_named("delete", cmd_token_delete, "delete a token: every node refuses it from then on")
