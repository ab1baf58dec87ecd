"""Operator actions shared by the command line and the web dashboard: promote, roll back, retry.

One implementation, so `gitopsd promote` and the dashboard's Promote button judge with the same
`policy.judge`, move branches the same way and say the same words. Each returns an Outcome: the
lines the command line prints (stdout when done, stderr when refused); a mistake in what was asked
raises Refusal, a UserError the command line prints as `gitopsd: error: ...` and the web answers
with the status of its kind. Who acts is the caller's word: the Unix user on the command line, the
signed-in user on the web.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..base import gitcli
from ..core.errors import CONFLICT, FORBIDDEN, INVALID, MISSING, Refused
from ..core.settings import Config, Environment, Repository

# (trigger, commits, reason) -> did the daemon get the nudge
Announce = Callable[[str, tuple[str, ...], "str | None"], bool]
# Opens the store for one operation: the command line opens its own file, the daemon lends its open store.
OpenStore = Callable[[], AbstractContextManager[Any]]


Refusal = Refused  # the one refusal type (core/errors.py), by the name the operations have always raised


@dataclass(frozen=True)
class Outcome:
    """What an operation said: `ok` (exit code 0) and its lines (stdout when ok, stderr when refused)."""

    ok: bool
    lines: tuple[str, ...]


def nudged(sent: bool) -> str:
    """The line saying whether the daemon was told to deploy now."""
    return (
        "the daemon deploys it now; follow with `gitopsd status`"
        if sent
        else "the daemon is not running: it deploys this as soon as it starts"
    )


def environment(repo: Repository, name: str) -> Environment:
    """`repo`'s environment `name`. Raise Refusal (missing) listing the ones it has."""
    env = repo.environment(name)
    if env is None:
        raise Refusal(
            f"repository {repo.name} has no environment {name!r} (it has: {', '.join(e.name for e in repo.environments)})",
            MISSING,
            "env_not_found",
        )
    return env


def promote(
    config: Config,
    open_store: OpenStore,
    repo: Repository,
    src: str,
    dst_name: str,
    identity: str,
    *,
    override: str | None = None,
    dry_run: bool = False,
    announce: Announce,
    refused: Callable[[str, str], None] = lambda _env, _rule: None,
) -> Outcome:
    """Promote `src` (an environment, `dst`'s source branch, or rc/NAME) to `dst_name` with exactly its tree.

    The canonical promotion commit, judged as the hook judges a push (gate/promotion.py); a refusal says the
    command, the rule and what would succeed, in command terms (services/promote_refusal.py)."""
    from ..adapters import signing
    from ..gate import snapshot
    from ..gate.promotion import promote as make_promotion
    from .promote_refusal import promotion_refusal_lines

    dst = environment(repo, dst_name)
    src_env = repo.environment(src)
    src_branch = src_env.branch if src_env else src
    if src.startswith("rc/"):  # a release candidate: its tag's commit (docs/human-gates.md)
        src_head = gitcli.rev_parse(repo.path, f"refs/tags/{src}^{{commit}}")
        if src_head is None:
            raise Refusal(f"no release candidate {src} in {repo.name} (see gitopsd rc list)", MISSING, "rc_not_found")
    else:
        if src_env is None and src_branch != dst.promote_from:
            raise Refusal(
                f"{src!r} is neither an environment of {repo.name}, nor {dst.name}'s source branch "
                f"({dst.promote_from}), nor a release candidate rc/NAME",
                INVALID,
                "bad_source",
            )
        src_head = gitcli.branch_head(repo.path, src_branch)
    dst_head = gitcli.branch_head(repo.path, dst.branch)
    if src_head is None or dst_head is None:
        raise Refusal(
            f"branch {src_branch if src_head is None else dst.branch} does not exist in {repo.path}", MISSING, "branch_not_found"
        )
    view = snapshot.from_config(config).repository(repo.name)  # what the hook judges with, too
    assert view is not None
    gate_dst = view.environment(dst.name)
    assert gate_dst is not None
    with open_store() as store:
        done = make_promotion(
            view,
            str(repo.path),
            store,
            gate_dst,
            src,
            src_head,
            dst_head,
            identity=identity,
            override=override,
            dry_run=dry_run,
            announce=lambda commit, reason: announce("promote", (commit,), reason),
            ssh_crypto=signing.ssh_crypto,
        )
    if done.state == "refused":
        assert done.verdict is not None
        if not dry_run:  # as the hook reports a refused promotion request: (environment, rule id), to the daemon
            refused(dst.name, done.verdict.rule_id)
        command = f"gitopsd promote {src} {dst.name}" + (f" --repo {repo.name}" if len(config.repositories) > 1 else "")
        return Outcome(False, tuple(promotion_refusal_lines(done.verdict, command, src)))
    if done.state == "raced":
        raise Refusal(done.summary, CONFLICT, "branch_moved")
    lines = [done.summary]
    if done.state == "moved":
        if done.verdict is not None and done.verdict.override:
            lines.append(f"recorded: {done.verdict.override}")
        lines.append(nudged(done.announced))
    return Outcome(True, tuple(lines))


def rollback(
    open_store: OpenStore, repo: Repository, env_name: str, identity: str, *, to: int | None = None, announce: Announce
) -> Outcome:
    """Revert `env_name`'s branch to its previous good tree (or to deployment `to`'s) and tell the daemon.

    With `to`, the commit is recorded as admitted before the branch moves: the tree may be older than
    the rule's rollback target, and the daemon judges every head again."""
    from .revert import move_to_revert, rollback_target, write_revert

    env = environment(repo, env_name)
    with open_store() as store:
        head = gitcli.branch_head(repo.path, env.branch)
        deployed = store.deployed(repo.name, env.name)
        if head is None:
            raise Refusal(f"branch {env.branch} does not exist in {repo.path}", MISSING, "branch_not_found")
        if deployed is None:
            raise Refusal(
                f"nothing was ever deployed successfully to {env.name}: there is no good state to roll back to",
                CONFLICT,
                "nothing_deployed",
            )
        head_tree = gitcli.tree_of(repo.path, head)
        target = rollback_target(store, repo.name, env.name, deployed, head_tree, to)
        if target.tree == head_tree:
            return Outcome(
                True,
                (
                    f"{env.name}: {env.branch} already has the tree of deployment #{target.id} "
                    f"({target.commit[:7]}); nothing to roll back",
                ),
            )
        reason = f"Rollback of {env.name} to the tree of deployment #{target.id} ({target.commit[:7]}), requested by {identity}."
        commit = write_revert(repo.path, head, target.tree, requested_by=identity, reason=reason, automatic=False)
        if to is not None:
            store.admit(
                repo=repo.name,
                env=env.name,
                commit=commit,
                kind="rollback",
                actor=identity,
                reason=f"rollback --to deployment #{target.id} ({target.commit[:7]})",
                now=time.time(),
            )
    if not move_to_revert(repo.path, env.branch, head, commit, requested_by=identity, automatic=False):
        raise Refusal(
            f"{env.branch} moved while the rollback was being made; nothing was changed. Run it again.", CONFLICT, "branch_moved"
        )
    sent = announce("rollback", (commit,), None)
    return Outcome(
        True,
        (
            f"{env.name}: {env.branch} is now at revert {commit[:7]}, whose tree is the one deployment "
            f"#{target.id} ({target.commit[:7]}) ran.",
            nudged(sent),
        ),
    )


def retry(
    config: Config,
    open_store: OpenStore,
    repo: Repository,
    env_name: str,
    identity: str,
    *,
    force: bool = False,
    reason: str | None = None,
    announce: Announce,
) -> Outcome:
    """Clear `env_name`'s stall (and its trees marked bad) and tell the daemon to try the head again.

    With `force`, also admit the head past the promotion rule: only identities in override_by, recorded."""
    env = environment(repo, env_name)
    # The head tried again is announced with who asked: its deployment is theirs, as a retry, not its pusher's.
    head = gitcli.branch_head(repo.path, env.branch)
    if force:
        if identity not in env.override_by:
            raise Refusal(
                f"{identity} may not force a head past the promotion rule in {env.name}; "
                f"only {', '.join(env.override_by) or 'nobody (override_by is empty)'} may "
                f"(override_by in {config.source})",
                FORBIDDEN,
                "override_not_allowed",
            )
        if not (reason and reason.strip()):  # an override carries its reason, as locks and approvals do
            raise Refusal(
                f"say why with --reason '...': forcing a head past the promotion rule in {env.name} is "
                "recorded with your name and its reason",
                INVALID,
                "note_required",
            )
        if head is None:
            raise Refusal(f"branch {env.branch} does not exist in {repo.path}", MISSING, "branch_not_found")
    with open_store() as store:
        cleared = store.clear_failure(repo.name, env.name)
        bad = store.clear_bad_trees(repo.name, env.name)
        if force and head is not None:
            block = store.blocked(repo.name, env.name)
            why = reason or ""
            if block is not None and block.commit == head:
                why += f" (it was blocked: {block.reason})"
            store.admit(
                repo=repo.name,
                env=env.name,
                commit=head,
                kind="override",
                actor=identity,
                reason=f"retry --force: {why}",
                now=time.time(),
            )
    sent = announce("retry", (head,) if head else (), None)
    what = "stall cleared" if cleared or bad else "nothing was stalled"
    if force and head is not None:
        what = f"{head[:7]} admitted past the promotion rule by {identity} (recorded); {what}"
    return Outcome(
        True, (f"{repo.name}/{env.name}: {what}; " + ("the daemon looks at it now" if sent else "the daemon is not running"),)
    )
