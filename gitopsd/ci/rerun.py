"""Running CI again on a head: `gitopsd ci rerun REPO HEAD` and the dashboard's "Run CI again" button.

A CI run that failed for a reason outside the commit (a CI server down, a full disk, a flaky
network) could only be replaced by a new commit. A rerun hands the head to the daemon's CI sinks
again, as a new head would be: the built-in steps run anew (their statuses replace the old run's)
and the configured triggers are sent again. It is asked over the daemon's control socket (the
caller's identity is the kernel's) or by the dashboard's signed-in user, and recorded with that name.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..core.errors import INVALID, MISSING, Refused
from ..core.settings import Repository
from .heads import HeadEvent, ci_globs, list_heads

_HEX = re.compile(r"[0-9a-f]{7,40}")


class RerunRefused(Refused):
    """The rerun cannot be done as asked: one line saying why and what instead, its kind and reason id."""


def head_event(
    repo: Repository, head: str, asked_by: str, pusher_of: Callable[[str, str], str | None] = lambda _r, _c: None
) -> HeadEvent:
    """Given a CI branch of `repo` (or the commit at the head of one), return the event a rerun hands to the sinks.

    Raise RerunRefused when the repository has no CI, or `head` is neither such a branch nor its head commit.
    """
    globs = ci_globs(repo)
    if not globs:
        raise RerunRefused(
            f"repository {repo.name} has no CI to run again: neither ci.steps nor ci.trigger is configured", INVALID, "no_ci"
        )
    heads = list_heads(repo, globs)
    name = head.removeprefix("refs/heads/")
    if name not in heads:
        found = sorted(b for b, (commit, _tree) in heads.items() if _HEX.fullmatch(head) and commit.startswith(head))
        if not found:
            raise RerunRefused(
                f"{head[:100]!r} is neither a CI branch of {repo.name} nor the commit at the head of one "
                f"(CI branches: {', '.join(sorted(heads)) or 'none yet'}); name the branch, e.g. "
                f"gitopsd ci rerun {repo.name} {min(heads) if heads else 'main'}",
                MISSING,
                "ci_head_not_found",
            )
        name = found[0]
    commit, tree = heads[name]
    return HeadEvent(repo.name, name, commit, commit, tree, pusher_of(repo.name, commit) or "unknown", asked_by)
