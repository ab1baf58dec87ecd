"""Operator actions: rollback, promote, retry, suspend, resume, sync; hosts trust and node check."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ..core.errors import UserError
from .common import (
    cli_identity,
    environment,
    not_told,
    nudge,
)
from .common import (
    load_config as _config,
)
from .common import (
    repository as _repo,
)


def cmd_rollback(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..services import operations

    config = _config(args)
    repo = _repo(config, args.repo)
    who = cli_identity()
    return _said(
        operations.rollback(
            lambda: Store.of(config, readonly=args.to is None), repo, args.env, who, to=args.to, announce=_announcer(config, repo)
        ),
        config,
    )


def cmd_promote(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..services import operations

    config = _config(args)
    repo = _repo(config, args.repo)
    return _said(
        operations.promote(
            config,
            lambda: Store.of(config, readonly=True),
            repo,
            args.src,
            args.dst,
            cli_identity(),
            override=args.override,
            dry_run=args.dry_run,
            announce=_announcer(config, repo),
            refused=_refusals(config, repo),
        ),
        config,
    )


def cmd_retry(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..gate.nudge import user_name
    from ..services import operations

    if args.force:  # the daemon checks override_by against its socket's peer (SO_PEERCRED) and writes the record
        from .common import ask_daemon

        return ask_daemon(args, {"op": "retry", "env": args.env, "force": True, "reason": args.reason})
    config = _config(args)
    repo = _repo(config, args.repo)
    who = user_name(os.getuid())
    return _said(
        operations.retry(
            config,
            lambda: Store.of(config),
            repo,
            args.env,
            who,
            force=args.force,
            reason=args.reason,
            announce=_announcer(config, repo),
        )
    )


def _refusals(config: Any, repo: Any) -> Any:
    """Tell the daemon which rule refused a promotion, as the hook does (metrics; a preview for want of approvals)."""
    from ..gate.nudge import REFUSED, Nudge, send

    return lambda env, rule: send(
        config.nudge_socket, Nudge(repo=str(repo.path), trigger=REFUSED, refusals=((env, rule),)), wait=0.0
    )


def _announcer(config: Any, repo: Any) -> Any:
    """The operations' announce: the nudge to the daemon, as the Unix user who runs the command."""
    return lambda trigger, commits, reason: nudge(config, repo, trigger, commits, reason=reason)


def _said(outcome: Any, config: Any = None) -> int:
    """Print an operation's lines (stdout when done, stderr when refused); its exit code. With `config`, a daemon
    that could not be told although it runs (its runtime folder removed) is said to be so, not to be stopped."""
    from ..services.operations import nudged

    lines = list(outcome.lines)
    if config is not None and nudged(False) in lines:
        lines = [not_told(config, line) if line == nudged(False) else line for line in lines]
    print("\n".join(lines), file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if outcome.ok else 1


def cmd_suspend(args: argparse.Namespace) -> int:
    import time

    from ..adapters.store import Store

    config = _config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    who = cli_identity()
    store = Store.of(config)
    store.suspend(repo.name, env.name, actor=who, reason=args.reason, now=time.time())
    running = store.last(repo.name, env.name)
    store.close()
    nudge(config, repo, "suspend")
    busy = running is not None and running.active
    print(
        f"{repo.name}/{env.name}: suspended by {who}"
        + (f" ({args.reason})" if args.reason else "")
        + ": no deployment starts until `gitopsd resume "
        + env.name
        + "`"
        + (f"; deployment #{running.id} still runs to its end" if busy and running else "")
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..adapters.store import Store

    config = _config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    store = Store.of(config)
    was = store.resume(repo.name, env.name)
    store.close()
    if not was:
        print(f"{repo.name}/{env.name}: was not suspended")
        return 0
    sent = nudge(config, repo, "resume")
    print(f"{repo.name}/{env.name}: resumed; " + ("the daemon looks at it now" if sent else not_told(config)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    import time

    from ..adapters.store import Store
    from ..base import gitcli

    config = _config(args)
    repo = _repo(config, args.repo)
    env = environment(repo, args.env)
    store = Store.of(config)
    try:
        deployed = store.deployed(repo.name, env.name)
        if deployed is None:
            raise UserError(f"nothing was ever deployed successfully to {env.name}: there is nothing to re-apply")
        head = gitcli.branch_head(repo.path, env.branch)
        if head != deployed.commit:
            raise UserError(
                f"{env.branch} is at {(head or 'nothing')[:7]}, not at the deployed {deployed.commit[:7]}: the "
                f"daemon deploys the head, not a re-apply (see `gitopsd status`; `gitopsd retry {env.name}` "
                "after a stall)"
            )
        hold = store.suspension(repo.name, env.name)
        if hold is not None:
            raise UserError(f"{env.name} is suspended by {hold.actor}: `gitopsd resume {env.name}` first")
        store.request_sync(repo.name, env.name, commit=head, actor=cli_identity(), reason=args.reason, now=time.time())
    finally:
        store.close()
    sent = nudge(config, repo, "sync")
    print(
        f"{repo.name}/{env.name}: re-applying {head[:7]} (kind reapply); "
        + (
            "the daemon starts it now; follow with `gitopsd status`"
            if sent
            else not_told(config, "the daemon is not running: it starts it when it is back")
        )
    )
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """`node check NAME [--trust]`: connect to an execution node, show its versions, refuse a mismatched ansible-runner."""
    from ..services.nodes import NodeCheckError, check

    config = _config(args)
    try:
        return check(config, args.name, trust=args.trust, yes=args.yes)
    except NodeCheckError as exc:
        raise UserError(str(exc)) from exc


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "rollback",
        "roll an environment back to its previous good state",
        "Make a revert commit on the environment branch whose tree is the tree that ran before the current\n"
        "one (earlier rollbacks undone first), or the current tree when the head has not run; move the\n"
        "branch there (compare-and-swap: a concurrent push is never overwritten) and nudge the daemon,\n"
        "which deploys it as a rollback. --to goes back to any earlier successful deployment's tree.",
        cmd_rollback,
    )
    p.add_argument("env", metavar="ENV", help="environment name, e.g. production")
    p.add_argument(
        "--to",
        type=int,
        metavar="DEPLOYMENT_ID",
        help="roll back to the tree of this successful deployment (from `gitopsd history ENV`); recorded",
    )
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "promote",
        "promote what one environment runs to the next, with exactly its tree",
        "Make the canonical promotion commit on DST: parents [DST head, SRC head], tree exactly SRC head's\n"
        "tree, after checking the same rule as the pre-receive hook (the tree was deployed and verified in\n"
        "SRC, the deploy window is open). Moves DST by compare-and-swap and nudges the daemon.\n"
        "SRC is an environment, DST's source branch (main for the first environment), or a release\n"
        "candidate rc/NAME (for an environment with approvals: docs/human-gates.md).",
        cmd_promote,
    )
    p.add_argument("src", metavar="SRC", help="source environment, main, or rc/NAME")
    p.add_argument("dst", metavar="DST", help="destination environment")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--dry-run", action="store_true", help="show the decision without moving anything")
    p.add_argument(
        "--override",
        metavar="REASON",
        help="emergency override of a closed deploy window: needs two people now, see gitopsd override",
    )

    p = add(
        "retry",
        "clear a stalled environment so the daemon tries again",
        "Clear the failure count and stall of an environment (and the trees marked bad there by an\n"
        "automatic rollback) and nudge the daemon to try the branch head again. --force also deploys a\n"
        "head the daemon blocked (only identities in the environment's override_by; recorded): it asks the\n"
        "daemon, which takes your identity from its socket (your Unix user, not sudo's), as approvals do.",
        cmd_retry,
    )
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument(
        "--force", action="store_true", help="admit the branch head past the promotion rule (override_by only; shown by history)"
    )
    p.add_argument("--reason", metavar="TEXT", help="why, recorded with --force")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "suspend",
        "stop deployments to an environment until `resume` (shown in status)",
        "Suspend ENV: the daemon starts no deployment there (not for a push, a retry, a rollback or a sync)\n"
        "until `gitopsd resume ENV`. A deployment already running finishes. Pushes are still judged and\n"
        "accepted; status shows `suspended` with who suspended it and why.",
        cmd_suspend,
    )
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--reason", metavar="TEXT", help="why, shown by status")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "resume",
        "let the daemon deploy to a suspended environment again",
        "Resume ENV after `gitopsd suspend` and nudge the daemon, which deploys the branch head at once\n"
        "if it differs from what is deployed.",
        cmd_resume,
    )
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "sync",
        "re-apply what an environment runs now (a `reapply` deployment)",
        "Run ENV's playbook again with the commit it runs now, although it is in sync: a deployment of kind\n"
        "reapply (e.g. after a host was rebuilt or changed by hand). Only when the branch head is what is\n"
        "deployed; recorded with who asked.",
        cmd_sync,
    )
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--reason", metavar="TEXT", help="why, recorded with the deployment")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add(
        "node",
        "check an execution node: connect, show its Python, ansible-core and ansible-runner",
        "check NAME: connect to the execution node NAME over SSH (its host key checked against ssh.known_hosts),\n"
        "print its Python, ansible-core and ansible-runner versions, and refuse (exit code 1) an ansible-runner\n"
        "whose major.minor differs from the controller's. --trust first records the node's host key after\n"
        'showing its fingerprint (docs/install.md, "Execution nodes").',
        cmd_node,
    )
    p.add_argument("action", choices=("check",), help="check: connect and compare versions")
    p.add_argument("name", metavar="NAME", help="the execution node's name in execution_nodes")
    p.add_argument("--trust", action="store_true", help="record the node's SSH host key first (shows its fingerprint)")
    p.add_argument("--yes", action="store_true", help="with --trust: record without asking")
