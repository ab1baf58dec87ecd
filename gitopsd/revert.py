"""Rollback commits: a revert on the environment branch whose tree is a known good tree.

Used by `gitopsd rollback` and by automatic rollback alike. The branch moves by
compare-and-swap, so a push that lands meanwhile is never overwritten.
"""
from __future__ import annotations

from pathlib import Path

from . import gitcli


def revert_message(repo: Path, head: str, *, requested_by: str, reason: str | None, automatic: bool) -> str:
    """Git's own revert message for `head`, plus trailers saying gitopsd made it and for whom."""
    title = gitcli.subject(repo, head)
    parent_ids = gitcli.parents(repo, head)
    body = f"This reverts commit {head}"
    body += f", reversing\nchanges made to {parent_ids[0]}.\n" if len(parent_ids) > 1 else ".\n"
    lines = [f'Revert "{title}"', "", body]
    if reason:
        lines += [reason, ""]
    lines += [f"Gitopsd-Rollback: {'automatic' if automatic else 'manual'}",
              f"Gitopsd-Requested-By: {requested_by}"]
    return "\n".join(lines) + "\n"


def write_revert(repo: Path, head: str, good_tree: str, *, requested_by: str, reason: str | None,
                 automatic: bool) -> str:
    """Write the revert commit (`good_tree` on top of `head`) and return its id. Moves no branch."""
    message = revert_message(repo, head, requested_by=requested_by, reason=reason, automatic=automatic)
    return gitcli.commit_tree(repo, good_tree, [head], message)


def move_to_revert(repo: Path, branch: str, head: str, commit: str, *, requested_by: str, automatic: bool) -> bool:
    """Move `branch` from `head` to the revert `commit` (compare-and-swap); False if it moved meanwhile."""
    return gitcli.update_branch(repo, branch, commit, head,
                                f"gitopsd: {'automatic ' if automatic else ''}rollback for {requested_by}")


def make_revert(repo: Path, branch: str, head: str, good_tree: str, *, requested_by: str, reason: str | None,
                automatic: bool) -> str | None:
    """Commit `good_tree` on top of `head` and move `branch` there if it still points at `head`.

    Return the new commit id, or None if the branch moved meanwhile (nothing is changed then).
    """
    commit = write_revert(repo, head, good_tree, requested_by=requested_by, reason=reason, automatic=automatic)
    moved = move_to_revert(repo, branch, head, commit, requested_by=requested_by, automatic=automatic)
    return commit if moved else None
