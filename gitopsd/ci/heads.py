"""Which CI branches have a new head since the daemon last looked: the events CI starts from.

The daemon looks at a repository on every push nudge, ref change and sweep; each look asks
`NewHeads.changes` which branches matching the repository's CI globs (`ci.branches` and each
trigger's `branches`) point somewhere new. The last head seen per branch is kept in the store, so
a restart neither repeats nor misses a head; a branch seen for the first time is new.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..base import gitcli
from ..core.settings import Repository

log = logging.getLogger("gitopsd.ci")


@dataclass(frozen=True)
class HeadEvent:
    """A branch moved to a new commit (before is None: first seen), or a person asked to run CI on its head again
    (`asked_by`). `pusher` as the push hook said, else 'unknown'."""

    repo: str
    branch: str
    before: str | None
    after: str
    tree: str
    pusher: str
    asked_by: str | None = None  # a rerun of a head that did not move (ci/rerun.py): who asked for it

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def as_json(self) -> dict[str, str | None]:
        return {
            "repository": self.repo,
            "ref": self.ref,
            "branch": self.branch,
            "before": self.before,
            "after": self.after,
            "tree": self.tree,
            "pusher": self.pusher,
        }


class HeadRecords(Protocol):
    """The store's record of the CI heads seen (adapters.store.Store)."""

    def ci_heads(self, repo: str) -> dict[str, str]: ...
    def set_ci_heads(self, repo: str, heads: dict[str, str]) -> None: ...


def matches(branch: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(branch, glob) for glob in globs)


def ci_globs(repo: Repository) -> tuple[str, ...]:
    """Every branch glob CI cares about in `repo`: its steps' and its triggers'."""
    globs = list(repo.ci.branches) if repo.ci.steps else []
    for trigger in repo.ci.trigger:
        globs += trigger.branches
    return tuple(dict.fromkeys(globs))


def list_heads(repo: Repository, globs: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """branch -> (commit, tree) for every branch matching `globs`: one git process."""
    code, out, err = gitcli.run(
        [
            "git",
            "-C",
            str(repo.path),
            "for-each-ref",
            "--format=%(refname:lstrip=2) %(objectname) %(objecttype) %(tree)",
            "refs/heads/",
        ]
    )
    if code != 0:
        log.warning("cannot list the branches for CI: %s", err.strip(), extra={"repo": repo.name})
        return {}
    heads = {}
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) == 4 and parts[2] == "commit" and matches(parts[0], globs):
            heads[parts[0]] = (parts[1], parts[3])
    return heads


class NewHeads:
    """Finds the new heads of a repository's CI branches, remembering what it has seen in the store."""

    def __init__(self, records: HeadRecords, pusher_of: Callable[[str, str], str | None] = lambda _r, _c: None):
        self.records, self.pusher_of = records, pusher_of

    def changes(self, repo: Repository) -> list[HeadEvent]:
        """The heads that moved since the last call (and record them as seen); [] when the repository has no CI."""
        globs = ci_globs(repo)
        if not globs:
            return []
        heads = list_heads(repo, globs)
        seen = self.records.ci_heads(repo.name)
        events = [
            HeadEvent(repo.name, branch, seen.get(branch), commit, tree, self.pusher_of(repo.name, commit) or "unknown")
            for branch, (commit, tree) in sorted(heads.items())
            if seen.get(branch) != commit
        ]
        if events or set(seen) != set(heads):
            self.records.set_ci_heads(repo.name, {branch: commit for branch, (commit, _tree) in heads.items()})
        return events
