"""Tokens of the HTTP API: token create, list, revoke (kept as sha256 only in api.tokens_file)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .common import (
    cli_identity,
    print_table,
)
from .common import (
    load_config as _config,
)


def _tokens_file(config: Any) -> Path:
    if config.api is None:
        raise UserError(
            f'the HTTP API is not configured: add `api: {{listen: "127.0.0.1:8470", tokens_file: '
            f"tokens.yml}}` to {config.source} (docs/api.md)"
        )
    return Path(config.api.tokens_file)


def _daemon_group(config: Any) -> int:
    """The group the daemon reads its files with: its state folder's owner's (install-service), else the config's."""
    from ..adapters.ownership import daemon_account

    account = daemon_account(config.state_dir)
    return account.gid if account is not None else os.stat(config.source).st_gid


def cmd_token_create(args: argparse.Namespace) -> int:
    from ..services.tokens import create

    config = _config(args)
    path = _tokens_file(config)
    contexts, repos = _patterns(args.contexts), _patterns(args.repos)
    secret = create(
        path,
        args.name,
        args.scope or [],
        created_by=cli_identity(),
        group=_daemon_group(config),
        owner=args.owner,
        contexts=contexts,
        repos=repos,
    )
    print(secret)
    print(
        f"token {args.name} created with scope {', '.join(dict.fromkeys(args.scope))}"
        + (f", acting as {args.owner or args.name} for sign-offs and approvals" if "approvals:write" in args.scope else "")
        + (f", reporting only contexts {', '.join(contexts)}" if contexts else "")
        + (f", only for repositories {', '.join(repos)}" if repos else "")
        + f" in {path}. The secret above is shown only this once: "
        + (
            f"give it to {args.owner} alone, who signs in with it on the dashboard's /login page or sends it to "
            f"the API as {args.owner}."
            if args.owner
            else "put it in your CI's secret store (the daemon takes it from its next request)."
        ),
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from ..services.tokens import read_tokens

    path = _tokens_file(_config(args))
    tokens = read_tokens(path)
    if not tokens:
        print(f"no API tokens in {path} (create one with `gitopsd token create NAME --scope read`)")
        return 0
    print_table(
        [("NAME", "SCOPES", "OWNER", "CONTEXTS", "REPOS", "CREATED", "BY")]
        + [
            (
                t.name,
                ",".join(t.scopes),
                t.identity,
                ",".join(t.contexts) or "*",
                ",".join(t.repos) or "*",
                t.created_at,
                t.created_by,
            )
            for t in tokens
        ]
    )
    return 0


def _patterns(given: list[str] | None) -> tuple[str, ...]:
    """`--contexts`/`--repos` as given, each repeatable and comma-separated: the glob patterns, in order."""
    return tuple(p.strip() for value in given or () for p in value.split(",") if p.strip())


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from ..services.tokens import read_tokens, revoke

    config = _config(args)
    path = _tokens_file(config)
    if not revoke(path, args.name, _daemon_group(config)):
        known = ", ".join(t.name for t in read_tokens(path)) or "none"
        raise UserError(f"no API token named {args.name!r} in {path} (known: {known})")
    print(f"token {args.name} revoked: the daemon refuses it from its next request")
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "token",
        "create, list or revoke tokens of the HTTP API",
        "Tokens of the daemon's HTTP API (docs/api.md): named, scoped (statuses:write to report\n"
        "and read back commit statuses, limited by --contexts and --repos, never gitopsd/ contexts, the built-in\n"
        "CI's; read for status and history; approvals:write for sign-offs, release candidates and\n"
        "approvals as the token's --owner), kept as sha256 only in api.tokens_file. `create`\n"
        "prints the secret once; the daemon reads the file again when it changes (no restart).",
        cmd_token_list,
    )
    token = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = token.add_parser("create", parents=[common], help="create a token and print its secret once")
    t.set_defaults(func=cmd_token_create)
    t.add_argument("name", metavar="NAME", help="who uses it, e.g. jenkins (recorded as the reporter of its statuses)")
    t.add_argument(
        "--scope",
        "--scopes",
        action="append",
        metavar="SCOPE",
        help="statuses:write (also reads statuses back, as GitHub's repo:status), read or approvals:write; repeat for several",
    )
    t.add_argument("--owner", metavar="USER", help="the identity its requests act as for sign-offs and approvals (default: NAME)")
    t.add_argument(
        "--contexts",
        action="append",
        metavar="PATTERN",
        help="glob patterns of the status contexts it may report, e.g. 'ci/*' (default: any but gitopsd/...)",
    )
    t.add_argument(
        "--repos",
        action="append",
        metavar="PATTERN",
        help="glob patterns of the repositories it may report for, e.g. shop (default: any)",
    )
    t = token.add_parser("list", parents=[common], help="list tokens: name, scopes, created (never secrets)")
    t.set_defaults(func=cmd_token_list)
    t = token.add_parser("revoke", parents=[common], help="delete a token (refused from the next request)")
    t.set_defaults(func=cmd_token_revoke)
    t.add_argument("name", metavar="NAME")
