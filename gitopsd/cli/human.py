"""The command line of the human gates: signoff, rc create|list|show|evidence, approve, reject, withdraw.

The writing commands ask the daemon over its control socket, which takes the caller's identity
from the kernel (SO_PEERCRED): never from an environment variable or a flag, and not SUDO_USER
either, so run them as yourself (a member of the daemon's group), not through sudo. The reading
commands (`rc list`, `rc show`) read the state store.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..services.readmodels import rc_named, rc_shown, rc_view
from .common import ask_daemon, load_config, print_preview, repository


def cmd_signoff(args: argparse.Namespace) -> int:
    return ask_daemon(args, {"op": "signoff", "env": args.env, "commit": args.commit, "note": args.note, "reject": args.reject})


def cmd_rc_create(args: argparse.Namespace) -> int:
    return ask_daemon(args, {"op": "rc-create", "from": args.source, "to": args.to, "name": args.name})


def cmd_approve(args: argparse.Namespace) -> int:
    return ask_daemon(args, {"op": args.verb, "rc": args.rc, "note": args.note})


def cmd_rc_list(args: argparse.Namespace) -> int:
    from ..adapters.store import Store

    config = load_config(args)
    repo = repository(config, args.repo)
    with Store.of(config, readonly=True) as store:
        rows = [rc_view(repo, store, rc) for rc in store.rcs(repo.name, limit=args.limit)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no release candidates in {repo.name} yet (gitopsd rc create)")
        return 0
    print(f"{'NAME':<16} {'FOR':<12} {'COMMIT':<8} {'CREATED BY':<12} {'STATE':<10} APPROVED BY")
    for r in rows:
        print(
            f"{r['name']:<16} {r['target_env']:<12} {r['commit'][:7]:<8} {r['created_by']:<12} {r['state']:<10} "
            f"{', '.join(r['approved_by']) or '-'}"
        )
    return 0


def cmd_rc_show(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..base import gitcli

    config = load_config(args)
    repo = repository(config, args.repo)
    with Store.of(config, readonly=True) as store:
        rc = rc_named(store, repo, args.name)
        view = rc_shown(repo, store, rc)
    name = rc.name
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    message = gitcli.git(repo.path, "tag", "-l", "--format=%(contents)", "--end-of-options", f"rc/{name}", check=False)
    print(message.rstrip() or f"rc/{name}")
    print("")
    print(f"State: {view['state']}" + (f" ({'; '.join(view['problems'])})" if view["problems"] else ""))
    if view["preview"] is not None:  # what it would change on the target's hosts (docs/preview.md)
        print_preview(view["preview"])
    else:
        print(f"Preview: none yet (gitopsd preview --rc {name})")
    print("Approvals, rejections and withdrawals:")
    from ..services.releases import when

    for h in view["history"] or []:
        print(f"  {when(h['at'])}  {h['actor']}: {h['kind']}: {h['note']}")
    if not view["history"]:
        print("  (none yet)")
    notes = gitcli.git(repo.path, "notes", "--ref=gitopsd", "show", "--end-of-options", rc.commit_id, check=False)
    if notes.strip():
        print("Audit notes on its commit (git log --notes=gitopsd):")
        for line in notes.strip().splitlines():
            print(f"  {line}")
    return 0


def cmd_rc_evidence(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..services.evidence import rc_evidence

    config = load_config(args)
    repo = repository(config, args.repo)
    with Store.of(config, readonly=True) as store:
        print(json.dumps(rc_evidence(config, repo, store, rc_named(store, repo, args.name)), indent=2))
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register the human gates' commands on the main parser (cli.build_parser)."""
    p = add(
        "signoff",
        "sign off (or reject) what an environment runs, after manual testing",
        "Record that you tested what ENV runs now (bound to its tree) and found it good, or with --reject\n"
        "not good. Only identities in the environment's signoff_by may. A later environment can require\n"
        "sign-offs (require_signoff); a release candidate needs them. Your identity is your Unix user,\n"
        "as the daemon's socket sees it: run this as yourself, not through sudo.",
        cmd_signoff,
    )
    p.add_argument("env", metavar="ENV", help="where you tested, e.g. staging")
    p.add_argument(
        "--note", "--reason", dest="note", required=True, metavar="TEXT", help="what you tested (recorded with your name)"
    )
    p.add_argument("--reject", action="store_true", help="record that it did not pass manual testing")
    p.add_argument("--commit", metavar="COMMIT", help="what you tested (default: what ENV runs; it must have its tree)")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "rc",
        "create, list or show release candidates",
        "Release candidates (docs/human-gates.md): `create` tags what the tested environment runs as\n"
        "rc/NAME (only if it was deployed and verified there and has its sign-offs) and asks for approvals;\n"
        "`list` and `show` say where each stands. Only gitopsd makes rc/* tags.",
        cmd_rc_list,
    )
    rc = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = rc.add_parser("create", parents=[common], help="tag what the tested environment runs as a release candidate")
    c.set_defaults(func=cmd_rc_create)
    c.add_argument("--from", dest="source", metavar="ENV", help="the tested environment (default: the source of --to)")
    c.add_argument("--to", metavar="ENV", help="the environment it is for (default: the first with approvals:)")
    c.add_argument("--name", metavar="NAME", help="its name (default: the date and a counter, e.g. 2026-11-29.1)")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c = rc.add_parser("list", parents=[common], help="release candidates, newest first, with their state")
    c.set_defaults(func=cmd_rc_list)
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c.add_argument("--limit", type=int, default=20, metavar="N")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = rc.add_parser("show", parents=[common], help="a release candidate: its changes, checks, sign-offs, approvals")
    c.set_defaults(func=cmd_rc_show)
    c.add_argument("name", metavar="NAME", help="e.g. 2026-11-29.1 or rc/2026-11-29.1")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c.add_argument("--json", action="store_true", help="machine-readable output")

    c = rc.add_parser(
        "evidence",
        parents=[common],
        help="what allowed a release candidate and what became of it, as JSON (changes, checks, "
        "artifacts, sign-offs, approvals, deployments per host, rollbacks)",
    )
    c.set_defaults(func=cmd_rc_evidence)
    c.add_argument("name", metavar="NAME", help="e.g. 2026-11-29.1 or rc/2026-11-29.1")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    for verb, helptext in (
        ("approve", "approve a release candidate for its environment"),
        ("reject", "reject a release candidate (blocks it until you withdraw)"),
        ("withdraw", "take back your approval or rejection of a release candidate"),
    ):
        p = add(
            verb,
            helptext,
            f"{helptext[0].upper()}{helptext[1:]}. Only the environment's approvers may; with\n"
            "forbid_self_approval, not whoever created it or pushed one of its changes. Approvals bind to the\n"
            "candidate's tree. Your identity is your Unix user as the daemon's socket sees it (not sudo).",
            cmd_approve,
        )
        p.set_defaults(verb=verb)
        p.add_argument("rc", metavar="RC", help="release candidate name, e.g. 2026-11-29.1")
        p.add_argument(
            "--note", "--reason", dest="note", required=verb != "withdraw", metavar="TEXT", help="why (recorded with your name)"
        )
        p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
