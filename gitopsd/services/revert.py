"""Rollback commits: a revert on the environment branch whose tree is a known good tree.

Used by `gitopsd rollback` and by automatic rollback alike. The branch moves by
compare-and-swap, so a push that lands meanwhile is never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..base import gitcli
from ..core.errors import UserError
from ..core.types import Deployment, Result
from ..gate.policy import rollback_trees


class History(Protocol):
    def get(self, deployment_id: int) -> Deployment | None: ...
    def successes(self, repo: str, env: str) -> list[tuple[str, str]]: ...
    def history(self, *, repo: str | None = None, env: str | None = None, limit: int = 20) -> list[Deployment]: ...


def rollback_target(
    store: History, repo: str, env: str, deployed: Deployment, head_tree: str | None, to: int | None = None
) -> Deployment:
    """The deployment whose tree a rollback of `env` returns to: the one rule, for `gitopsd rollback`.

    With `to`, that successful deployment of this environment. Else, when the head has not run (it
    failed, or waits), what runs now; else the tree that ran before it (policy.rollback_trees, the
    rule the hook and the daemon accept as a rollback). Raise UserError when there is none.
    """
    if to is not None:
        target = store.get(to)
        if target is None or (target.repo, target.env) != (repo, env):
            raise UserError(
                f"deployment #{to} is not a deployment of {repo}/{env}; pick one from `gitopsd history {env} --repo {repo}`"
            )
        if target.result != Result.SUCCEEDED:
            raise UserError(
                f"deployment #{to} {target.result}: only a tree that ran successfully is a rollback "
                f"target; pick a succeeded one from `gitopsd history {env} --repo {repo}`"
            )
        return target
    if head_tree != deployed.tree:
        return deployed  # the head has not run (it failed, or waits): back to what runs now
    _current, tree = rollback_trees(store.successes(repo, env))
    found = (
        next((d for d in store.history(repo=repo, env=env, limit=500) if d.result == Result.SUCCEEDED and d.tree == tree), None)
        if tree
        else None
    )
    if found is None:
        raise UserError(
            f"{env} has no earlier good state to roll back to (it has run only {deployed.tree[:7]} "
            f"since its last rollback); to go further back: gitopsd rollback {env} --to DEPLOYMENT_ID"
        )
    return found


def revert_message(repo: Path, head: str, *, requested_by: str, reason: str | None, automatic: bool) -> str:
    """Git's own revert message for `head`, plus trailers saying gitopsd made it and for whom."""
    title = gitcli.subject(repo, head)
    parent_ids = gitcli.parents(repo, head)
    body = f"This reverts commit {head}"
    body += f", reversing\nchanges made to {parent_ids[0]}.\n" if len(parent_ids) > 1 else ".\n"
    lines = [f'Revert "{title}"', "", body]
    if reason:
        lines += [reason, ""]
    lines += [f"Gitopsd-Rollback: {'automatic' if automatic else 'manual'}", f"Gitopsd-Requested-By: {requested_by}"]
    return "\n".join(lines) + "\n"


def write_revert(repo: Path, head: str, good_tree: str, *, requested_by: str, reason: str | None, automatic: bool) -> str:
    """Write the revert commit (`good_tree` on top of `head`) and return its id. Moves no branch."""
    message = revert_message(repo, head, requested_by=requested_by, reason=reason, automatic=automatic)
    return gitcli.commit_tree(repo, good_tree, [head], message)


def move_to_revert(repo: Path, branch: str, head: str, commit: str, *, requested_by: str, automatic: bool) -> bool:
    """Move `branch` from `head` to the revert `commit` (compare-and-swap); False if it moved meanwhile."""
    return gitcli.update_branch(
        repo, branch, commit, head, f"gitopsd: {'automatic ' if automatic else ''}rollback for {requested_by}"
    )


def make_revert(
    repo: Path, branch: str, head: str, good_tree: str, *, requested_by: str, reason: str | None, automatic: bool
) -> str | None:
    """Commit `good_tree` on top of `head` and move `branch` there if it still points at `head`.

    Return the new commit id, or None if the branch moved meanwhile (nothing is changed then).
    """
    commit = write_revert(repo, head, good_tree, requested_by=requested_by, reason=reason, automatic=automatic)
    moved = move_to_revert(repo, branch, head, commit, requested_by=requested_by, automatic=automatic)
    return commit if moved else None
