"""The command line of change control: lock, unlock, locks, override (docs/change-control.md); cli/main.py registers it.

Locking and break-glass ask the daemon over its control socket, which takes the caller's identity from the
kernel (SO_PEERCRED), as the human gates' commands do: run them as yourself, not through sudo. `locks` reads
the state store.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from .common import ask_daemon as _ask
from .common import load_config


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    return {"env": args.env, "all": args.all, "reason": args.reason}


def cmd_lock(args: argparse.Namespace) -> int:
    return _ask(args, {"op": "lock", **_scope(args), "until": args.until, "for": getattr(args, "for")})


def cmd_unlock(args: argparse.Namespace) -> int:
    return _ask(args, {"op": "unlock", **_scope(args)})


def cmd_override(args: argparse.Namespace) -> int:
    if args.what[0] == "confirm":
        if len(args.what) != 2:
            from ..core.errors import UserError

            raise UserError("give the request's number: gitopsd override confirm ID (gitopsd locks lists them)")
        return _ask(args, {"op": "override-confirm", "id": args.what[1], "reason": args.reason})
    if len(args.what) != 1:
        from ..core.errors import UserError

        raise UserError("give one environment: gitopsd override ENV --reason '...' (or: gitopsd override confirm ID)")
    if not args.reason:
        from ..core.errors import UserError

        raise UserError("say why with --reason '...': it is recorded with your name and shown to whoever confirms")
    return _ask(args, {"op": "override", "env": args.what[0], "reason": args.reason})


def cmd_locks(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..gate.locks import utc

    config = load_config(args)
    now = time.time()
    with Store.of(config, readonly=True) as store:
        held = store.all_locks(now)
        asked = store.break_glass_requests(now)
        past = store.lock_history(args.history) if args.history else []
    if args.json:
        print(
            json.dumps(
                {
                    "locks": [lock.as_json() for lock in held],
                    "break_glass": [r.as_json() for r in asked],
                    **({"history": [r.as_json() for r in past]} if args.history else {}),
                },
                indent=2,
            )
        )
        return 0
    for lock in held:
        print(lock.describe())
    if not held:
        print("nothing is locked")
    for asking in asked:
        state = (
            f"confirmed by {asking.confirmed_by}, in force until {utc(asking.expires_at)}"
            if asking.confirmed_by and asking.expires_at is not None  # set together when confirmed
            else f"waits for a second person until {utc(asking.confirm_before)}"
        )
        print(f"break-glass #{asking.id} {asking.repo}/{asking.env} asked by {asking.asked_by}: {asking.reason} ({state})")
    if past:
        print("\nhistory, newest first:")
    for r in past:
        ended = (
            f"; expired at {utc(r.lifted_at)}"
            if r.lifted_by == "expired" and r.lifted_at is not None
            else f"; lifted by {r.lifted_by} at {utc(r.lifted_at)}" + (f": {r.lift_reason}" if r.lift_reason else "")
            if r.lifted_at is not None
            else "; expired"
            if r.expires_at and r.expires_at <= now
            else "; in force"
        )
        print(f"  #{r.id} {r.lock().describe()}{ended}")
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register change control's commands on the main parser (cli.build_parser)."""
    for verb, helptext in (
        ("lock", "stop promotions into an environment, a repository or everything, with a reason"),
        ("unlock", "lift the locks a person set on an environment, a repository or everything"),
    ):
        p = add(
            verb,
            helptext,
            f"{helptext[0].upper()}{helptext[1:]}. A locked environment refuses pushes and promotions\n"
            "(the refusal names who locked it, why and until when); rollbacks always pass. A freeze raised by a\n"
            "firing alert (freeze_on) lifts when the alert resolves, expires when Alertmanager stops sending it\n"
            "(alert_freezes), and is lifted by `unlock ENV --reason` run by a person in ENV's override_by.\n"
            "Your identity is your Unix user as the daemon's socket sees it (not sudo).",
            cmd_lock if verb == "lock" else cmd_unlock,
        )
        p.add_argument("env", nargs="?", metavar="ENV", help="the environment (with --repo when several are configured)")
        p.add_argument("--repo", metavar="NAME", help="the repository; without ENV, every environment of it")
        p.add_argument("--all", action="store_true", help="every environment of every repository")
        p.add_argument("--reason", required=verb == "lock", metavar="TEXT", help="why (recorded with your name)")
        if verb == "lock":
            p.add_argument(
                "--until", metavar="TIME", help="when it ends by itself, e.g. 2026-12-24T18:00 (UTC unless it says +01:00)"
            )
            p.add_argument("--for", metavar="DURATION", help="how long it holds, e.g. 30m, 2h, 1d")

    p = add(
        "locks",
        "the locks, alert freezes and break-glass requests in force",
        "List what holds promotions now: locks (who, why, until when), freezes raised by firing alerts, and\n"
        "break-glass requests (waiting for their second person, or confirmed and in force).",
        cmd_locks,
    )
    p.add_argument(
        "--history", type=int, default=0, metavar="N", help="also the last N locks, lifted ones too: who lifted each and why"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "override",
        "break glass: let promotions through a lock, freeze or deny window, with a second person",
        "Two people: `gitopsd override ENV --reason TEXT` asks (and prints the request's number); a second\n"
        "identity in ENV's override_by confirms within break_glass.confirm_within (default 15m):\n"
        "`gitopsd override confirm ID`. Once confirmed, promotions to ENV pass its locks, freezes and deny\n"
        "windows for break_glass.lasts (default 1h). The same person cannot confirm their own. Both are\n"
        "recorded in the deployment's history and in git notes.",
        cmd_override,
    )
    p.add_argument("what", nargs="+", metavar="ENV | confirm ID", help="the environment, or `confirm` and a number")
    p.add_argument("--reason", metavar="TEXT", help="why (required to ask; optional to confirm)")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
