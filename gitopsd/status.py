"""What `gitopsd status` shows: desired (from Git) against deployed (from the store), per environment.

Works with or without the daemon running: it reads Git and the store, nothing else.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .adapters import gitcli
from .config import Config, Environment, Repository
from .core.decide import decide_from_store
from .core.types import Action, Deployment, Head, Result, iso
from .adapters.store import Store

# The reconciler's decision, as `status` names it.
STATES = {Action.BUSY: "deploying", Action.MISSING: "missing-branch", Action.IN_SYNC: "in-sync",
          Action.STALLED: "stalled", Action.WAIT: "failed", Action.FAILED: "failed", Action.BLOCKED: "blocked",
          Action.DEPLOY: "out-of-sync", Action.WAITING: "waiting-for-promotion", Action.SUSPENDED: "suspended"}


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


def environment_status(store: Store, repo: Repository, env: Environment, now: float | None = None,
                       heads: dict[str, tuple[str, str]] | None = None) -> EnvironmentStatus:
    """The reconciler's own decision (decision.decide), put in an operator's words.

    `heads`: the repository's branch heads as gitcli.branch_heads read them (read here when not given).
    """
    if heads is None:
        heads = gitcli.branch_heads(repo.path, [env.branch])
    commit, tree = heads.get(env.branch, (None, None))
    desired = Head(commit, tree) if commit and tree else None
    deployed = store.deployed(repo.name, env.name)
    last = store.last(repo.name, env.name)
    busy = last is not None and last.active
    # The daemon's own verdict on this head, as it recorded it: it judges windows with what only it
    # knows (which pushes announced the head), so status does not judge again.
    block = store.blocked(repo.name, env.name)
    blocked = (block.reason if block is not None and commit == block.commit
               and block.deployed_commit == (deployed.commit if deployed else None) else None)
    decision = decide_from_store(store, repo.name, env.name, desired, deployed, busy, now or time.time(),
                                 blocked_reason=blocked)
    state, reason, retry_at = STATES[decision.action], decision.reason, decision.retry_at
    if decision.action == Action.MISSING:
        reason = f"branch {env.branch} does not exist or points at a missing commit"
    elif decision.action == Action.BUSY and last is not None and last.result == Result.QUEUED:
        state, reason = "queued", f"{last.commit[:7]} waits for a free worker (max_parallel deployments run at once)"
    elif decision.action == Action.BUSY and last is not None:
        progress = last.progress
        if progress is not None and progress.words is not None:
            reason = f"rolling out {last.commit[:7]}: {progress.words}"
    elif decision.action == Action.DEPLOY and decision.attempt > 1:   # a retry is due: say why the last one failed
        failure = store.failure(repo.name, env.name)
        state, reason = "failed", failure.reason if failure else None
    return EnvironmentStatus(repo.name, env.name, env.branch, commit, deployed.commit if deployed else None,
                             state, reason, last, retry_at)


def all_status(config: Config, store: Store, repo_name: str | None = None,
               unavailable: dict[str, str] | None = None) -> list[EnvironmentStatus]:
    """Every environment's status; those of a repository in `unavailable` ({name: problem}) say its problem."""
    unavailable = unavailable or {}
    repos = [r for r in config.repositories if repo_name in (None, r.name) and r.name not in unavailable]
    recorded = store.recorded_heads()

    def heads_of(repo: Repository) -> dict[str, tuple[str, str]]:
        """Commits from the ref files, trees as the daemon recorded them; git only for what it has not seen."""
        commits = gitcli.read_branches(repo.path, [e.branch for e in repo.environments])
        known = {e.branch: recorded[(repo.name, e.name)] for e in repo.environments
                 if commits is not None and (repo.name, e.name) in recorded
                 and recorded[(repo.name, e.name)][0] == commits.get(e.branch)}
        if commits is not None and len(known) == len(commits):
            return known
        return gitcli.branch_heads(repo.path, [e.branch for e in repo.environments])

    # At most one git process per repository, several at a time: status stays fast with hundreds of them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        heads = dict(zip((r.name for r in repos), pool.map(heads_of, repos), strict=True))
    now = time.time()
    return [environment_status(store, repo, env, now, heads[repo.name]) if repo.name not in unavailable
            else EnvironmentStatus(repo.name, env.name, env.branch, None, None, "unavailable", unavailable[repo.name],
                                   store.last(repo.name, env.name), None)
            for repo in config.repositories if repo_name in (None, repo.name) for env in repo.environments]


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    seconds = int((now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"
