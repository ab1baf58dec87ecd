"""`gitopsd cancel ENV`: stop the deployment running in an environment (a playbook that hangs), through the daemon.

The daemon knows the caller by its control socket (SO_PEERCRED) and records the cancel with that name; the
environment then stalls on what ran before until the branch moves or `gitopsd retry`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .common import ask_daemon


def cmd_cancel(args: argparse.Namespace) -> int:
    return ask_daemon(args, {"op": "cancel", "env": args.env})


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register `cancel` on the main parser (cli.build_parser)."""
    p = add(
        "cancel",
        "stop the deployment running in an environment (e.g. a playbook that hangs)",
        "Cancel the deployment running (or waiting for a worker) in ENV: the daemon stops its playbook and\n"
        "every process it started, as at its timeout, and records it canceled with your name. ENV then\n"
        "stays stalled on what ran before (its hosts may run part of the canceled commit) until the branch\n"
        "moves (push a fix, or `gitopsd rollback ENV`) or `gitopsd retry ENV` deploys the head again.\n"
        "Your identity is your Unix user, as the daemon's socket sees it.",
        cmd_cancel,
    )
    p.add_argument("env", metavar="ENV", help="the environment whose deployment to stop, e.g. qa")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
