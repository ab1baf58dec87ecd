"""What runs where and how it went: status, history, logs, wait, drift, dora. They read the state store
(and Git); none needs the daemon running.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from typing import Any

from ..core.errors import UserError
from ..services.readmodels import NO_MARKS, deployment_json, release_marks
from .common import (
    check_env_name,
    environment,
    print_table,
    read_config,
)
from .common import (
    load_config as _config,
)
from .common import (
    repository as _repo,
)


def cmd_status(args: argparse.Namespace) -> int:
    config, unavailable = read_config(args)
    if args.repo:
        _repo(config, args.repo)
    if not args.watch:
        return _show_status(args, config, unavailable)
    import time

    try:
        while True:
            print("\033[H\033[2J", end="")  # home and clear: a plain terminal redraw, no curses
            print(f"gitopsd status, every 1s (Ctrl-C to stop)  {time.strftime('%H:%M:%S')}\n")
            _show_status(args, config, unavailable)
            sys.stdout.flush()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0


def _say_store_lost(config: Any, out: Any) -> None:
    """The running daemon's word that its state database was deleted or replaced: what is read here is not its record."""
    from ..adapters.backups import replaced_said

    lost = replaced_said(config.runtime_dir)
    if lost is not None:
        print(f"gitopsd: store-replaced: {lost} (the daemon's log says what to do)", file=out)


def json_lines(items: list[Any]) -> str:
    """A JSON array, one item per line: json's C encoder does not indent, and indent=2 cost a third of `status --json`
    at 3,000 environments (issue 28)."""
    return "[\n" + ",\n".join(json.dumps(item) for item in items) + "\n]" if items else "[]"


def _show_status(args: argparse.Namespace, config: Any, unavailable: dict[str, str]) -> int:
    from ..adapters.store import Store
    from ..services.status import ago, all_status

    store = Store.of(config, readonly=True)
    try:
        rows = all_status(config, store, args.repo, unavailable)
        unwatched = {r: why for r, why in store.unwatched().items() if args.repo in (None, r)}
        daemons = store.daemons()  # a leader and its standby, with PostgreSQL (docs/install.md, "Standby daemon")
    finally:
        store.close()
    _say_store_lost(config, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json_lines([r.as_json() for r in rows]))
        return 0
    table = [("REPO", "ENV", "BRANCH", "DESIRED", "DEPLOYED", "STATE", "LAST DEPLOYMENT")]
    for r in rows:
        last = "-"
        if r.last:
            last = f"#{r.last.id} {r.last.kind} {r.last.result} {ago(r.last.finished_at or r.last.started_at)}"
        table.append((r.repo, r.env, r.branch, (r.desired or "-")[:7], (r.deployed or "-")[:7], r.state, last))
    print_table(table)
    for r in rows:
        if r.reason:
            print(f"{r.repo}/{r.env}: {r.reason}")
        for line in r.locks:
            if line not in (r.reason or ""):  # a head blocked by it says it already
                print(f"{r.repo}/{r.env}: promotions stopped: {line}")
    for repo, why in unwatched.items():
        print(
            f"{repo}: branch moves are not watched ({why}); the push nudge and the sweep every "
            f"{config.sweep_interval:g}s still find them (`gitopsd doctor`, or the daemon's log, says how to fix it)"
        )
    if daemons:
        print("\ndaemons:")
        for d in daemons:
            heard = (
                f"heard from {d.seen_ago:.0f}s ago"
                if d.seen_ago < 30
                else f"not heard from for {ago(0, d.seen_ago).removesuffix(' ago')}: stopped or cut off?"
            )
            epoch = f"epoch {d.epoch}, " if d.role == "leader" else ""
            api = f", API {d.api}" if d.api else ""
            print(f"  {d.role:<8} {d.name} ({epoch}pid {d.pid}, {heard}{api})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..services.status import ago

    config, _unavailable = read_config(args, check=False)
    if args.repo:
        _repo(config, args.repo)
    if args.env:
        check_env_name(config, args.repo, args.env)
    with Store.of(config, readonly=True) as store:
        deployments = store.history(repo=args.repo, env=args.env, limit=args.limit)
        admissions = store.admissions(repo=args.repo, env=args.env, limit=args.limit)
        marks = release_marks(config, store, deployments)
    _say_store_lost(config, sys.stderr)
    if args.json:
        print(json.dumps([deployment_json(d, marks.get(d.id)) for d in deployments], indent=2))
        return 0
    table = [("ID", "REPO", "ENV", "KIND", "RESULT", "COMMIT", "STARTED", "TOOK", "TRIGGER", "BY")]
    for d in deployments:
        took = f"{d.finished_at - d.started_at:.1f}s" if d.finished_at else "-"
        table.append((str(d.id), d.repo, d.env, d.kind, d.result, d.commit[:7], ago(d.started_at), took, d.trigger, d.actor))
    print_table(table)
    for d in deployments:
        if d.reason:
            print(f"#{d.id}: {d.reason}")
        mark = marks.get(d.id, NO_MARKS)
        gates = ([f"rc/{mark['rc']} approved by {', '.join(mark['approved_by']) or 'nobody'}"] if mark["rc"] else []) + (
            [f"signed off by {', '.join(mark['signed_off_by'])}"] if mark["signed_off_by"] else []
        )
        if gates:
            print(f"#{d.id}: {'; '.join(gates)}")
        if d.outcome and d.result != "succeeded":
            print(f"#{d.id}: {d.result}: {d.outcome}")
    if admissions:
        print("\nadmitted past the promotion rule by an operator:")
        for a in admissions:
            print(f"  {a.repo}/{a.env} {a.commit[:7]} ({a.kind}) by {a.actor} {ago(a.created_at)}: {a.reason}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..core.runfiles import as_text, read_own
    from ..core.types import DeploymentFolders

    config, _unavailable = read_config(args)
    if args.ci is not None or args.deployment_id is None:
        return _ci_logs(config, args.ci)
    with Store.of(config, readonly=True) as store:
        dep = store.get(args.deployment_id)
    if dep is None:
        raise UserError(f"no deployment #{args.deployment_id} (see `gitopsd history`)")
    print(
        f"# deployment #{dep.id}: {dep.repo}/{dep.env} {dep.kind} of {dep.commit} -> {dep.result}"
        + (f": {dep.outcome}" if dep.outcome else "")
    )
    if dep.reason:
        print(f"# why: {dep.reason}")
    batches = dep.batches
    for batch in batches:
        checks = "; ".join(f"{c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})" for c in batch.checks)
        print(
            f"# batch {batch.batch}: {batch.result} on {', '.join(batch.hosts) or 'all hosts'}"
            + (f"; checks: {checks}" if checks else "")
        )
    folders = DeploymentFolders.of(config.state_dir, dep.id)
    outputs = folders.outputs()
    if not outputs:
        print("# no Ansible output was recorded (the run did not start, or its folder was removed)")
    for what, number, stdout in outputs:
        print(
            f"# --- {'verification playbook' if what == 'verify' else 'playbook'}, "
            f"{f'batch {number}' if len(batches) > 1 else 'run'} ---"
        )
        try:
            sys.stdout.write(as_text(read_own(folders.root, stdout)))
        except OSError as exc:
            print(f"# {exc.strerror if exc.errno == errno.ELOOP else exc}")
    return 0


def _ci_logs(config: Any, run_id: int | None) -> int:
    """`logs --ci RUN_ID`: a built-in CI run's steps and their output (gitopsd/ci/runs.py)."""
    from ..ci import runs

    if run_id is None:
        raise UserError("say which deployment (`gitopsd logs DEPLOYMENT_ID`) or CI run (`gitopsd logs --ci RUN_ID`)")
    try:
        lines = runs.describe(config.ci_dir, run_id)
    except LookupError as exc:
        raise UserError(str(exc)) from exc
    from ..core.runfiles import as_text

    sys.stdout.write(as_text("".join(line + "\n" for line in lines)))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a commit's deployment to succeed (0), fail (1) or for the timeout (2), saying so in one line."""
    import time

    from ..adapters.store import Store
    from ..base import gitcli
    from ..services.status import environment_status

    config = _config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    commit = (
        gitcli.branch_head(repo.path, env.branch)
        if args.commit is None
        else gitcli.rev_parse(repo.path, f"{args.commit}^{{commit}}")
    )
    if commit is None:
        raise UserError(f"{args.commit or env.branch} is not a commit in {repo.path}")
    deadline = time.monotonic() + args.timeout
    where = f"{repo.name}/{env.name}"
    while True:
        store = Store.of(config, readonly=True)
        try:
            # The sync request first: the daemon records the reapply before it drops the request, so a sync
            # (`gitopsd sync` just before) is seen either pending or as the newest deployment of the commit.
            sync = store.sync_request(repo.name, env.name)
            done = [d for d in store.history(repo=repo.name, env=env.name, limit=200) if d.commit == commit]
            row = environment_status(store, repo, env)
            failure = store.failure(repo.name, env.name)
        finally:
            store.close()
        pending = (sync is not None and sync.commit == commit) or (bool(done) and done[0].active)
        good = done[0] if done and not pending and done[0].result == "succeeded" else None
        if good is not None:
            print(f"{where}: {commit[:7]} deployed and verified (deployment #{good.id}, {good.kind})")
            return 0
        # "failed" while retries remain is not the end; failed for good (its automatic rollback failed too) is,
        # and so is a failed reapply of what runs (nothing retries it).
        given_up = row.state in ("stalled", "blocked") or (
            row.state == "failed" and not pending and ((failure is not None and failure.failed) or row.deployed == commit)
        )
        if row.desired == commit and given_up:
            print(f"{where}: {commit[:7]} {row.state}: {row.reason or '-'}")
            return 1
        if row.desired != commit and not (row.state == "deploying" and row.last and row.last.commit == commit):
            failed = next((d for d in done if not d.active), None)
            why = f"its deployment #{failed.id} {failed.result}: {failed.outcome}" if failed else "it was never deployed"
            print(f"{where}: {commit[:7]} is no longer the head of {env.branch} ({(row.desired or 'none')[:7]} is); {why}")
            return 1
        if time.monotonic() >= deadline:
            print(f"{where}: timed out after {args.timeout:g}s waiting for {commit[:7]} ({row.state})")
            return 2
        time.sleep(0.5)


def cmd_drift(args: argparse.Namespace) -> int:
    """What the newest drift check found in ENV: per host, the tasks that would change and their diffs."""
    from ..adapters.store import Store
    from ..services.status import ago

    config, _unavailable = read_config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    with Store.of(config, readonly=True) as store:
        report = store.drift_report(repo.name, env.name)
        deployed = store.deployed(repo.name, env.name)
    stale = report is not None and (deployed is None or report.deployment_id != deployed.id)
    if args.json:
        print(json.dumps(None if report is None else {**report.as_json(), "current": not stale}, indent=2))
        return 0
    where = f"{repo.name}/{env.name}"
    if report is None:
        print(f"{where}: no drift check yet (`drift: {{interval: 1h}}` on the environment turns them on)")
        return 0
    state = {
        "baseline": "no drift (this was the baseline run)",
        "clean": "no drift",
        "drifted": "drifted",
        "unknown": "drift unknown",
    }.get(report.state, report.state)
    print(
        f"{where}: {state}, checked {ago(report.checked_at)} against deployment #{report.deployment_id}"
        + (" (an older deployment: the one running now was not checked yet)" if stale else "")
    )
    if report.reason:
        print(f"  {report.reason}")
    if report.state != "drifted":
        return 0
    for host in report.hosts:
        print(f"\n{host}:")
        for change in (c for c in report.changes if c.host == host):
            place = change.key.partition("|")[2]
            print(f"  {change.task}" + (f" ({place})" if place else "") + ": would change")
            if change.no_log:
                print("    (no_log: values hidden)")
            for line in change.diff.splitlines():
                print(f"    {line}")
    return 0


def cmd_dora(args: argparse.Namespace) -> int:
    import time

    from ..adapters.store import Store
    from ..services import dora

    config, _unavailable = read_config(args)
    repos = [_repo(config, args.repo)] if args.repo else list(config.repositories)
    env = args.env
    if env is None:  # the last environment in promotion order (production in the default layout)
        lasts = sorted({r.environments[-1].name for r in repos if r.environments})
        if len(lasts) != 1:
            raise UserError(
                f"the repositories end in different environments ({', '.join(lasts) or 'none'}): say which with --env NAME"
            )
        env = lasts[0]
    check_env_name(config, args.repo, env)
    try:
        window = dora.parse_span(args.since)
    except ValueError as exc:
        raise UserError(f"--since: {exc}") from exc
    now = time.time()
    with Store.of(config, readonly=True) as store:
        figures = dora.figures(store, args.repo, env, now - window, now)
    if args.json:
        print(json.dumps(figures.as_json(), indent=2))
    else:
        print("\n".join(dora.text(figures, args.since)))
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "status",
        "show desired vs deployed commit and state per environment",
        "For each repository and environment: the branch head (desired), the last successfully deployed\n"
        "commit (deployed), the state (in-sync, deploying, out-of-sync, failed, stalled, blocked,\n"
        "missing-branch) and the last deployment. Works with or without the daemon running.",
        cmd_status,
    )
    p.add_argument("--repo", metavar="NAME", help="only this repository")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", action="store_true", help="show it again every second until Ctrl-C")

    p = add(
        "history",
        "list deployments, newest first",
        "List deployments, newest first: id, repo, env, commit, kind (deploy, rollback, reapply), result\n"
        "(running, succeeded, failed, canceled, interrupted), times, trigger and who caused it (gitopsd at its\n"
        "start or on its own; unknown for a branch moved with no push, e.g. by git update-ref).",
        cmd_history,
    )
    p.add_argument("env", nargs="?", metavar="ENV", help="only this environment")
    p.add_argument("--repo", metavar="NAME", help="only this repository")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N deployments (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "logs",
        "print the Ansible output of one deployment, or the output of a CI run's steps",
        "Print the Ansible output of one deployment; with --ci, each step of a built-in CI run and its output.",
        cmd_logs,
    )
    p.add_argument("deployment_id", type=int, nargs="?", metavar="DEPLOYMENT_ID", help="a deployment id from `gitopsd history`")
    p.add_argument(
        "--ci",
        type=int,
        metavar="RUN_ID",
        help="a built-in CI run instead (its id is in its gitopsd/<step> statuses and the daemon's log)",
    )

    p = add(
        "wait",
        "wait until a commit is deployed to an environment (for CI scripts)",
        "Wait until COMMIT (default: the branch head now) is deployed and verified in ENV. Prints one line.\n"
        "Exit code 0: deployed and verified; 1: its deployment failed, stalled or was blocked, or the branch\n"
        "moved on without it; 2: --timeout passed first.",
        cmd_wait,
    )
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--commit", metavar="COMMIT", help="the commit to wait for (default: the branch head)")
    p.add_argument("--timeout", type=float, default=600, metavar="SECONDS", help="give up after this long (default 600)")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "drift",
        "what drift detection found on an environment's hosts (tasks and diffs per host)",
        'Show the newest drift check of ENV (docs/operate.md, "Drift detection"): the deployed tree\'s playbook run\n'
        "in check mode with diff; per host, the tasks that would change outside the baseline taken right\n"
        "after the deployment, with their diffs (never the values of no_log tasks). `drift unknown` means\n"
        "the check-mode run itself failed. Reads the state database only.",
        cmd_drift,
    )
    p.add_argument("env", metavar="ENV", help="environment name, e.g. production")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "dora",
        "DORA figures of an environment from gitopsd's own history",
        "Deployment frequency, lead time for changes (from when each commit first reached the server to its\n"
        "first successful deployment in ENV), change failure rate, failed deployment recovery time and rework\n"
        'rate of one environment over a window (docs/monitoring.md, "DORA figures", defines each). Reads the state\n'
        "database only.",
        cmd_dora,
    )
    p.add_argument("--env", metavar="ENV", help="the environment (default: the last in promotion order, e.g. production)")
    p.add_argument("--since", default="90d", metavar="SPAN", help="the window: 90d, 12h, 2w (default 90d)")
    p.add_argument("--repo", metavar="NAME", help="only this repository (default: every repository with ENV)")
    p.add_argument("--json", action="store_true", help="machine-readable output (times in seconds)")
