"""A release candidate's "Changes since production's last release": what the release changes against what production
runs now, tree-wise (a change reverted on production and promoted again is a change again).

Real: a bare repository and a clone, real commits, promotions as gitopsd writes them (parents [target head, source
head], the source's exact tree) and a rollback as `git revert -m 1` on production; the functions rc create and
rc evidence list the changes with.
"""

from __future__ import annotations

from pathlib import Path

from gitopsd.core.settings import Repository
from gitopsd.services.evidence import changes
from gitopsd.services.releases import HumanGates
from tests.support import git


def _commit(work: Path, text: str, message: str) -> str:
    (work / "app.txt").write_text(text)
    git(work, "commit", "--quiet", "-am", message)
    return git(work, "rev-parse", "HEAD").stdout.strip()


def _promotion(work: Path, target: str, source: str) -> str:
    """The commit `gitopsd promote` makes: parents [target, source], exactly the source's tree."""
    tree = git(work, "rev-parse", f"{source}^{{tree}}").stdout.strip()
    return git(work, "commit-tree", "-p", target, "-p", source, "-m", f"Promote {source[:7]}", tree).stdout.strip()


def test_a_change_reverted_on_production_and_promoted_again_is_listed_with_what_came_after_it(tmp_path):
    work = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    git(work, "config", "user.email", "dev@example.com")
    git(work, "config", "user.name", "Dev")
    (work / "app.txt").write_text("v1")
    git(work, "add", "app.txt")
    git(work, "commit", "--quiet", "-m", "initial")
    first = git(work, "rev-parse", "HEAD").stdout.strip()
    change = _commit(work, "v2", "the real change")
    promoted = _promotion(work, first, change)  # staging ran it, then production
    git(work, "checkout", "--quiet", "-b", "production", promoted)
    git(work, "revert", "--quiet", "--no-edit", "-m", "1", promoted)  # rolled back on production
    production = git(work, "rev-parse", "HEAD").stdout.strip()
    git(work, "checkout", "--quiet", "main")
    later = _commit(work, "v3", "a later change")  # staging runs the change and one after it: the release

    assert (
        git(work, "rev-parse", f"{production}^{{tree}}").stdout.strip()
        == git(work, "rev-parse", f"{first}^{{tree}}").stdout.strip()
    )
    listed = HumanGates._changes(Repository(name="shop", path=work, environments=()), production, later)
    assert listed == [(later, "a later change"), (change, "the real change")]
    assert [c["commit"] for c in changes(str(work), production, later)] == [later, change]
    # Where production runs what the release was built on, the list is as ancestry says.
    assert HumanGates._changes(Repository(name="shop", path=work, environments=()), promoted, later) == [
        (later, "a later change")
    ]
