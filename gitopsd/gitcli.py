"""Git through its command line: the writes (commits, compare-and-swap ref updates) and the hook's reads.

Stdlib only, so the hook path stays fast. Every call is an argv list; revisions given by anyone
else come after `--end-of-options`. Subprocesses inherit the environment, so inside pre-receive
they see quarantined objects.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ZERO = "0" * 40


class GitError(Exception):
    """A git command failed; the message carries git's own words."""


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


GITOPSD_IDENTITY = Identity("gitopsd", "gitopsd@localhost")


def git(repo: Path | str, *args: str, input: str | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    """Run `git ARGS` in a repository and return its stdout. Raise GitError on failure."""
    proc = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, text=True,
                          env=env, check=False)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def rev_parse(repo: Path | str, rev: str) -> str | None:
    """Given a revision, return its full object id, or None if it does not resolve."""
    out = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", rev, check=False).strip()
    return out or None


def branch_head(repo: Path | str, branch: str) -> str | None:
    return rev_parse(repo, f"refs/heads/{branch}^{{commit}}")


def tree_of(repo: Path | str, commit: str) -> str | None:
    return rev_parse(repo, f"{commit}^{{tree}}")


def subject(repo: Path | str, commit: str) -> str:
    return git(repo, "log", "-1", "--format=%s", "--end-of-options", commit).strip()


def parents(repo: Path | str, commit: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n", "1", "--end-of-options", commit).split()[1:]


def is_ancestor(repo: Path | str, ancestor: str, descendant: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant],
                          capture_output=True, check=False).returncode == 0


def commit_tree(repo: Path | str, tree: str, parent_ids: list[str], message: str,
                identity: Identity = GITOPSD_IDENTITY) -> str:
    """Write a commit object for `tree` with the given parents; return its id. Moves no ref."""
    env = {**os.environ, "GIT_AUTHOR_NAME": identity.name, "GIT_AUTHOR_EMAIL": identity.email,
           "GIT_COMMITTER_NAME": identity.name, "GIT_COMMITTER_EMAIL": identity.email}
    args = ["commit-tree"]
    for p in parent_ids:
        args += ["-p", p]
    return git(repo, *args, "-F", "-", "--end-of-options", tree, input=message, env=env).strip()


def update_branch(repo: Path | str, branch: str, new: str, expected_old: str, reason: str) -> bool:
    """Move a branch to `new` only if it still points at `expected_old` (compare-and-swap)."""
    proc = subprocess.run(["git", "-C", str(repo), "update-ref", "-m", reason, f"refs/heads/{branch}", new, expected_old],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0


def create_branch(repo: Path | str, branch: str, commit: str, reason: str) -> bool:
    return update_branch(repo, branch, commit, ZERO, reason)
