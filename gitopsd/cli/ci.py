"""Commit statuses from the command line: ci report, ci status, ci rerun."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..core.errors import UserError
from .common import (
    ask_daemon,
    cli_identity,
    not_told,
    nudge,
    print_table,
)
from .common import (
    load_config as _config,
)
from .common import (
    repository as _repo,
)

CI_REPORT_OPTIONS = {"state": "--state", "context": "--context", "target_url": "--url", "description": "--description"}


def cmd_ci_report(args: argparse.Namespace) -> int:
    """Store a commit status as the API does (same checks), reported as cli:<user>, and nudge the daemon."""
    from ..adapters.store import Store
    from ..api.statuses import InvalidStatus, parse_report, record, resolve_commit

    config = _config(args)
    repo = _repo(config, args.repo)
    try:
        report = parse_report(
            {"state": args.state, "context": args.context, "target_url": args.url, "description": args.description}
        )
    except InvalidStatus as exc:
        raise UserError(f"{CI_REPORT_OPTIONS.get(exc.field, exc.field)}: {exc.message}") from exc
    commit, tree = resolve_commit(repo.path, args.commit)
    reporter = f"cli:{cli_identity()}"
    with Store.of(config) as store:
        record(store, repo.name, commit, tree, report, reporter)
    sent = nudge(config, repo, "ci-status")
    print(
        f"{repo.name}: {report.context} {report.state} for {commit[:7]} (tree {tree[:7]}), reported by {reporter}"
        + ("; the daemon looks at it now" if sent else f"; {not_told(config)}")
    )
    return 0


def cmd_ci_status(args: argparse.Namespace) -> int:
    """The combined state of a commit's tree, each context's state and URL, and what each environment still needs."""
    from ..adapters.store import Store
    from ..api.statuses import combined, resolve_commit
    from ..gate.required import Status, unmet
    from ..services.status import ago

    config = _config(args)
    repo = _repo(config, args.repo)
    commit, tree = resolve_commit(repo.path, args.commit)
    with Store.of(config, readonly=True) as store:
        shown = combined(store, repo.name, commit, tree)
        statuses = store.statuses(repo.name, tree)
    needs = {
        env.name: {"require_checks": list(env.require_checks), "unmet": unmet(env.require_checks, statuses)}
        for env in repo.environments
        if env.require_checks
    }
    if args.json:
        print(json.dumps({**shown, "environments": needs}, indent=2))
        return 0
    print(
        f"{repo.name} {commit[:7]} (tree {tree[:7]}): {shown['state']}"
        + ("" if statuses else " (no status reported for this tree)")
    )
    if statuses:
        by_context: dict[str, Status] = {s.context: s for s in statuses}
        print_table(
            [("CONTEXT", "STATE", "BY", "WHEN", "URL")]
            + [
                (
                    s.context,
                    s.state,
                    s.reporter + ("" if s.commit == commit else f" on {s.commit[:7]}"),
                    ago(s.created_at),
                    s.target_url or "-",
                )
                for s in by_context.values()
            ]
        )
    for env, need in needs.items():
        print(
            f"{env} requires {', '.join(need['require_checks'])}: "
            + ("all passed" if not need["unmet"] else "; ".join(need["unmet"]))
        )
    return 0


def cmd_ci_rerun(args: argparse.Namespace) -> int:
    """Ask the daemon (its control socket: the kernel says who asks) to run CI again on a head, recorded with that name."""
    return ask_daemon(args, {"op": "ci-rerun", "head": args.head})


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "ci",
        "report or show commit statuses (CI results) by tree",
        "Commit statuses, as the HTTP API takes them: `report` stores one for a commit and its tree (for\n"
        "jobs on the deploy server) and nudges the daemon; `status` shows a commit's combined state, each\n"
        "context's state and URL, and which required checks each environment still misses; `rerun` asks\n"
        "the daemon to run CI again on a head (as you: the control socket says who asks).",
        cmd_ci_status,
    )
    ci = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = ci.add_parser("report", parents=[common], help="store a commit status (reporter cli:<user>)")
    c.set_defaults(func=cmd_ci_report)
    c.add_argument("--commit", required=True, metavar="COMMIT", help="commit id (40 hex digits or at least 7)")
    c.add_argument(
        "--context",
        default="default",
        metavar="CONTEXT",
        help="e.g. ci/test (default: default); gitopsd/... are the built-in CI's alone",
    )
    c.add_argument("--state", required=True, metavar="STATE", help="pending, success, failure or error")
    c.add_argument("--url", metavar="URL", help="http(s) link to the job's output")
    c.add_argument("--description", metavar="TEXT", help="one line on the result")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c = ci.add_parser("status", parents=[common], help="a commit's combined state and each context's state and URL")
    c.set_defaults(func=cmd_ci_status)
    c.add_argument("commit", metavar="COMMIT", help="commit id (40 hex digits or at least 7)")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = ci.add_parser(
        "rerun", parents=[common], help="run CI again on a head: the built-in steps anew and the CI triggers sent again"
    )
    c.set_defaults(func=cmd_ci_rerun)
    c.add_argument("repo", metavar="REPO", help="repository name")
    c.add_argument("head", metavar="HEAD", help="a CI branch (e.g. main) or the commit at its head")
