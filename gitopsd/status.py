"""What `gitopsd status` shows: desired (from Git) against deployed (from the store), per environment.

Works with or without the daemon running: it reads Git and the store, nothing else.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import gitcli
from .config import Config, Environment, Repository
from .state import Deployment, Store, iso


@dataclass(frozen=True)
class EnvironmentStatus:
    repo: str
    env: str
    branch: str
    desired: str | None
    deployed: str | None
    state: str
    reason: str | None
    last: Deployment | None
    next_retry_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "env": self.env, "branch": self.branch, "desired": self.desired,
                "deployed": self.deployed, "state": self.state, "reason": self.reason,
                "next_retry_at": iso(self.next_retry_at),
                "last_deployment": self.last.as_json() if self.last else None}


def environment_status(store: Store, repo: Repository, env: Environment) -> EnvironmentStatus:
    desired = gitcli.branch_head(repo.path, env.branch)
    deployed = store.deployed(repo.name, env.name)
    last = store.last(repo.name, env.name)
    failure = store.failure(repo.name, env.name)
    reason, retry_at = None, None
    if last is not None and last.result == "running":
        state = "deploying"
        progress = last.detail.get("progress")
        if isinstance(progress, str) and progress.startswith("batch"):
            reason = f"rolling out {last.commit[:7]}: {progress.replace('/', ' of ')}"
    elif desired is None:
        state, reason = "missing-branch", f"branch {env.branch} does not exist or points at a missing commit"
    elif deployed is not None and deployed.commit == desired:
        state = "in-sync"
    elif failure is not None and failure.commit == desired:
        state = "stalled" if failure.stalled else "failed"
        reason, retry_at = failure.reason, failure.next_retry_at
    else:
        tree = gitcli.tree_of(repo.path, desired)
        bad = store.bad_tree(repo.name, env.name, tree) if tree else None
        if bad:
            state, reason = "stalled", f"this tree failed here before: {bad}"
        else:
            state = "out-of-sync"
    return EnvironmentStatus(repo.name, env.name, env.branch, desired, deployed.commit if deployed else None,
                             state, reason, last, retry_at)


def all_status(config: Config, store: Store, repo_name: str | None = None) -> list[EnvironmentStatus]:
    return [environment_status(store, repo, env) for repo in config.repositories
            if repo_name in (None, repo.name) for env in repo.environments]


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    seconds = int((now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"
