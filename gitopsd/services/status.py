"""What `gitopsd status` shows: desired (from Git) against deployed (from the store), per environment.

Works with or without the daemon running: it reads Git and the store, nothing else. The read-only
commands (`status`, `history`, `logs`) take the configuration from readconfig.py (re-exported here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from ..core.types import Action, Deployment, Head, Result, iso

# Where they lived before readconfig.py: importers of status find them here still.
from .readconfig import DEFAULT_STATE_DIR as DEFAULT_STATE_DIR
from .readconfig import ReadConfig as ReadConfig
from .readconfig import read_config as read_config
from .readconfig import repository_problem as repository_problem

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `history` imports this module for `ago`
    from ..adapters.store import EnvironmentRecords, Store
    from ..config import Config, Environment, Repository

# The reconciler's decision, as `status` names it.
STATES = {
    Action.BUSY: "deploying",
    Action.MISSING: "missing-branch",
    Action.IN_SYNC: "in-sync",
    Action.STALLED: "stalled",
    Action.WAIT: "failed",
    Action.FAILED: "failed",
    Action.BLOCKED: "blocked",
    Action.DEPLOY: "out-of-sync",
    Action.WAITING: "waiting-for-promotion",
    Action.SUSPENDED: "suspended",
    Action.WATCHING: "watching",
    Action.WATCH_FAILED: "watch-failed",
    Action.DRIFTED: "drifted",
}


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
    locks: tuple[str, ...] = ()  # the locks and alert freezes in force, one line each (who, why, until when)

    def as_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "env": self.env,
            "branch": self.branch,
            "desired": self.desired,
            "deployed": self.deployed,
            "state": self.state,
            "reason": self.reason,
            "next_retry_at": iso(self.next_retry_at),
            "locks": list(self.locks),
            "last_deployment": self.last.as_json() if self.last else None,
        }


def environment_status(
    store: Store, repo: Repository, env: Environment, now: float | None = None, heads: dict[str, tuple[str, str]] | None = None
) -> EnvironmentStatus:
    """The reconciler's own decision (decision.decide), put in an operator's words.

    `heads`: the repository's branch heads as gitcli.branch_heads read them (read here when not given).
    """
    from ..core.decide import decide_from_store

    if heads is None:
        from ..base import gitcli

        heads = gitcli.branch_heads(repo.path, [env.branch])
    commit, tree = heads.get(env.branch, (None, None))
    desired = Head(commit, tree) if commit and tree else None
    deployed = store.deployed(repo.name, env.name)
    last = store.last(repo.name, env.name)
    busy = last is not None and last.active
    # The daemon's own verdict on this head, as it recorded it: it judges windows with what only it
    # knows (which pushes announced the head), so status does not judge again.
    block = store.blocked(repo.name, env.name)
    blocked = (
        block.reason
        if block is not None and commit == block.commit and block.deployed_commit == (deployed.commit if deployed else None)
        else None
    )
    decision = decide_from_store(store, repo.name, env.name, desired, deployed, busy, now or time.time(), blocked_reason=blocked)
    state, reason, retry_at = STATES[decision.action], decision.reason, decision.retry_at
    if decision.action == Action.MISSING:
        reason = f"branch {env.branch} does not exist or points at a missing commit"
    elif decision.action == Action.BUSY and last is not None and last.result == Result.QUEUED:
        state, reason = "queued", f"{last.commit[:7]} waits for a free worker (max_parallel deployments run at once)"
    elif decision.action == Action.BUSY and last is not None:
        progress = last.progress
        if progress is not None and progress.words is not None:
            reason = f"rolling out {last.commit[:7]}: {progress.words}"
    elif decision.action == Action.DEPLOY and decision.attempt > 1:  # a retry is due: say why the last one failed
        failure = store.failure(repo.name, env.name)
        state, reason = "failed", failure.reason if failure else None
    held = tuple(lock.describe() for lock in store.locks(repo.name, env.name, now or time.time()))
    return EnvironmentStatus(
        repo.name, env.name, env.branch, commit, deployed.commit if deployed else None, state, reason, last, retry_at, held
    )


class _Recorded:
    """The store as `all_status` reads it: every environment's records read at once, the rest asked of the store."""

    def __init__(self, store: Store, records: EnvironmentRecords):
        self._store, self._records, self._covered = store, records, records.covered

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _newest(self, table: str, repo: str, env: str) -> Any:
        if (repo, env) in self._covered:
            return getattr(self._records, table).get((repo, env))
        return getattr(self._store, {"drift": "drift_report"}.get(table, table))(repo, env)

    def last(self, repo: str, env: str) -> Deployment | None:
        return self._newest("last", repo, env)  # type: ignore[no-any-return]

    def deployed(self, repo: str, env: str) -> Deployment | None:
        return self._newest("deployed", repo, env)  # type: ignore[no-any-return]

    def drift_report(self, repo: str, env: str) -> Any:
        return self._newest("drift", repo, env)

    def failure(self, repo: str, env: str) -> Any:
        return self._records.failure.get((repo, env))

    def blocked(self, repo: str, env: str) -> Any:
        return self._records.blocked.get((repo, env))

    def suspension(self, repo: str, env: str) -> Any:
        return self._records.suspension.get((repo, env))

    def watch(self, repo: str, env: str) -> Any:
        return self._records.watch.get((repo, env))

    def bad_tree(self, repo: str, env: str, tree: str) -> str | None:
        return self._records.bad_trees.get((repo, env, tree))

    def locks(self, repo: str, env: str, now: float) -> list[Any]:
        return [lock for lock in self._records.locks if lock.repo in ("*", repo) and lock.env in ("*", env)]


def with_records(store: Store, now: float, repos: list[str] | None = None) -> Store:
    """The store with every environment's records (of `repos`) read at once, for environment_status to read from;
    the store itself when it is older than the tables those are read from (one environment at a time then)."""
    records = store.environment_records(now, repos)
    return store if records is None else cast("Store", _Recorded(store, records))


def all_status(
    config: Config, store: Store, repo_name: str | None = None, unavailable: dict[str, str] | None = None
) -> list[EnvironmentStatus]:
    """Every environment's status; those of a repository in `unavailable` ({name: problem}) say its problem."""
    from ..base import gitcli

    unavailable = unavailable or {}
    repos = [r for r in config.repositories if repo_name in (None, r.name) and r.name not in unavailable]
    recorded = store.recorded_heads()

    def known_heads(repo: Repository) -> dict[str, tuple[str, str]] | None:
        """Commits from the ref files, trees as the daemon recorded them; None if git must say."""
        commits = gitcli.read_branches(repo.path, [e.branch for e in repo.environments])
        known = {
            e.branch: recorded[(repo.name, e.name)]
            for e in repo.environments
            if commits is not None
            and (repo.name, e.name) in recorded
            and recorded[(repo.name, e.name)][0] == commits.get(e.branch)
        }
        return known if commits is not None and len(known) == len(commits) else None

    heads = {r.name: known_heads(r) for r in repos}
    unseen = [r for r in repos if heads[r.name] is None]
    if unseen:  # one git process per repository the daemon has not seen, several at a time
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            heads.update(
                zip(
                    (r.name for r in unseen),
                    pool.map(lambda r: gitcli.branch_heads(r.path, [e.branch for e in r.environments]), unseen),
                    strict=True,
                )
            )
    now = time.time()
    store = with_records(store, now)
    return [
        environment_status(store, repo, env, now, heads[repo.name])
        if repo.name not in unavailable
        else unavailable_status(store, repo, env, unavailable[repo.name])
        for repo in config.repositories
        if repo_name in (None, repo.name)
        for env in repo.environments
    ]


def unavailable_status(store: Store, repo: Repository, env: Environment, problem: str) -> EnvironmentStatus:
    """An environment of a repository that cannot be read (readconfig.repository_problem says why): its last deployment
    as recorded, nothing from its branches."""
    return EnvironmentStatus(
        repo.name, env.name, env.branch, None, None, "unavailable", problem, store.last(repo.name, env.name), None
    )


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    seconds = int((now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"
