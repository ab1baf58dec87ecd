"""The command line of rejected trees: `gitopsd release reject|unreject TREE|COMMIT --reason` (docs/human-gates.md).

Like approvals, these ask the daemon over its control socket, which takes the caller's identity from the
kernel (SO_PEERCRED); the daemon checks it against the environment's `override_by` and records the word in
the store, the audit log and a git note.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .common import ask_daemon


def cmd_release(args: argparse.Namespace) -> int:
    """Ask the daemon to reject a tree, or to lift its rejection, as the caller."""
    return ask_daemon(args, {"op": f"tree-{args.verb}", "tree": args.tree, "env": args.env, "reason": args.reason})


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register `release reject|unreject` on the main parser (cli.build_parser)."""
    p = add(
        "release",
        "reject a tree, or let a rejected one through again",
        "A tree that failed in an environment (a failed deployment rolled back, a failed batch, a failed\n"
        "post-deploy watch) is rejected there and in every later environment: promotions, release\n"
        "candidates and automatic promotion refuse it, naming the deployment that failed.\n"
        "`reject` marks one by hand, `unreject` lets it through again; only identities in the\n"
        "environment's override_by may, with a reason (recorded, audited, noted on its commit).",
        cmd_release,
    )
    verbs = p.add_subparsers(dest="verb", metavar="ACTION", required=True)
    for verb, helptext, env_help in (
        (
            "reject",
            "reject a tree for an environment and every later one",
            "where it is rejected from (default: the first environment, so everywhere)",
        ),
        (
            "unreject",
            "let a rejected tree through again",
            "where its rejection is lifted (default: every environment that rejected it)",
        ),
    ):
        c = verbs.add_parser(verb, parents=[common], help=helptext)
        c.set_defaults(func=cmd_release, verb=verb)
        c.add_argument("tree", metavar="TREE|COMMIT", help="the tree, or a commit that has it")
        c.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded with your name)")
        c.add_argument("--env", metavar="ENV", help=env_help)
        c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
