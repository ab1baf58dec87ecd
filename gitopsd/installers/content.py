"""Inventory and playbook files the config names that an environment branch head lacks: its next deployment fails.

Read from the branch heads as they are now, the content moves with every push: `check-config` warns about them,
`gitopsd doctor` reports them with the file the branch has that the config probably means.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..base import gitcli
from ..config import Config, Environment, Repository
from ..core.types import EMPTY_TREE


@dataclass(frozen=True)
class Missing:
    """A file of the config (`what`: inventory or playbook) that the head of `env`'s branch does not have."""

    repo: Repository
    env: Environment
    what: str
    path: str


def missing_files(config: Config) -> list[Missing]:
    """Each environment's inventory and playbook missing from its branch head. One git process per repository;
    a branch still at `gitopsd init`'s empty placeholder has nothing yet (its first promotion brings the files)."""
    found = []
    for repo in config.repositories:
        envs = repo.environments
        files = [(env, what, path) for env in envs for what, path in (("inventory", env.inventory), ("playbook", env.playbook))]
        # Names on stdin (never taken for options): each branch's tree, then `refs/heads/B:PATH` for each file;
        # git answers "<name> missing" for what is absent.
        asked = [f"refs/heads/{env.branch}^{{tree}}" for env in envs] + [f"refs/heads/{e.branch}:{p}" for e, _w, p in files]
        code, out, _err = gitcli.run(
            ["git", "-C", str(repo.path), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            input="".join(f"{name}\n" for name in asked),
        )
        answers = out.splitlines()
        if code != 0 or len(answers) != len(asked):
            continue  # an unreadable repository is a problem of the config, reported as such
        trees = {env.branch: answers[i].split()[0] for i, env in enumerate(envs) if not answers[i].endswith(" missing")}
        for (env, what, path), answer in zip(files, answers[len(envs) :], strict=True):
            if trees.get(env.branch, EMPTY_TREE) != EMPTY_TREE and answer.endswith(" missing"):
                found.append(Missing(repo, env, what, path))
    return found


def nearest_file(missing: Missing) -> str | None:
    """The file of the branch head whose path is closest to the missing one (a typo in the config), if any is close."""
    code, out, _err = gitcli.run(
        ["git", "-C", str(missing.repo.path), "ls-tree", "-r", "-z", "--name-only", f"refs/heads/{missing.env.branch}"]
    )
    names = [name for name in out.split("\0") if name] if code == 0 else []
    close = difflib.get_close_matches(missing.path, names, n=1, cutoff=0.8)
    return close[0] if close else None
