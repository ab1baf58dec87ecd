"""What `gitopsd status` shows: desired (from Git) against deployed (from the store), per environment.

Works with or without the daemon running: it reads Git and the store, nothing else. The read-only
commands (`status`, `history`, `logs`) also take the configuration from here: from the snapshot the
daemon keeps in the state database while it matches the file, so they need not import PyYAML and
validate the whole file on every call (docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..core.lookup import by_name
from ..core.types import Action, Deployment, Head, Result, iso

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `history` imports this module for `ago`
    from ..adapters.store import Store
    from ..config import Config, Environment, Repository
    from ..gate.snapshot import GateRepository

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

    def __init__(self, store: Store, records: dict[str, Any]):
        self._store, self._records, self._covered = store, records, records["covered"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _newest(self, table: str, repo: str, env: str) -> Any:
        if (repo, env) in self._covered:
            return self._records[table].get((repo, env))
        return getattr(self._store, {"drift": "drift_report"}.get(table, table))(repo, env)

    def last(self, repo: str, env: str) -> Deployment | None:
        return self._newest("last", repo, env)  # type: ignore[no-any-return]

    def deployed(self, repo: str, env: str) -> Deployment | None:
        return self._newest("deployed", repo, env)  # type: ignore[no-any-return]

    def drift_report(self, repo: str, env: str) -> Any:
        return self._newest("drift", repo, env)

    def failure(self, repo: str, env: str) -> Any:
        return self._records["failure"].get((repo, env))

    def blocked(self, repo: str, env: str) -> Any:
        return self._records["blocked"].get((repo, env))

    def suspension(self, repo: str, env: str) -> Any:
        return self._records["suspension"].get((repo, env))

    def watch(self, repo: str, env: str) -> Any:
        return self._records["watch"].get((repo, env))

    def bad_tree(self, repo: str, env: str, tree: str) -> str | None:
        return self._records["bad_trees"].get((repo, env, tree))  # type: ignore[no-any-return]

    def locks(self, repo: str, env: str, now: float) -> list[Any]:
        return [lock for lock in self._records["locks"] if lock.repo in ("*", repo) and lock.env in ("*", env)]


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
    records = store.environment_records(now)
    if records is not None:  # else a store older than the tables it reads: one environment at a time
        store = cast("Store", _Recorded(store, records))
    return [
        environment_status(store, repo, env, now, heads[repo.name])
        if repo.name not in unavailable
        else EnvironmentStatus(
            repo.name,
            env.name,
            env.branch,
            None,
            None,
            "unavailable",
            unavailable[repo.name],
            store.last(repo.name, env.name),
            None,
        )
        for repo in config.repositories
        if repo_name in (None, repo.name)
        for env in repo.environments
    ]


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    seconds = int((now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


# -- the configuration for read-only commands ----------------------------------------------------------

# Where the file puts the state folder, when it says so on one plain top-level line (a value with a `/`, so
# YAML cannot read it as null, a number or a boolean). Anything else and the file is loaded in full.
_STATE_DIR_LINE = re.compile(
    r"""^state_dir:[ \t]+(?:([\w./~+@%,=-]*/[\w./~+@%,=-]*)|'([^'\n]+)'|"([^"\\\n]+)")"""
    r"""[ \t]*(?:#.*)?$""",
    re.MULTILINE,
)
DEFAULT_STATE_DIR = "/var/lib/gitopsd"  # core.settings.Config.state_dir (a test holds them equal)


class ReadConfig:
    """The configuration as `status`, `history` and `logs` use it, taken from the daemon's snapshot.

    Repositories and environments carry names, paths and branches; any other setting (e.g.
    sweep_interval) loads and validates the file, once.
    """

    def __init__(self, path: Path, source: str, state_dir: Path, runtime_dir: Path, repositories: list[GateRepository]):
        self._path, self._full = path, None  # type: Path, Config | None
        self.source, self.state_dir, self.runtime_dir, self.repositories = Path(source), state_dir, runtime_dir, repositories

    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def database_url(self) -> str:
        """'' (SQLite): only a SQLite store holds this snapshot (with PostgreSQL the file is loaded in full)."""
        return ""

    @property
    def ci_dir(self) -> Path:
        return self.state_dir / "ci"

    def repository(self, name: str) -> GateRepository | None:
        return by_name(self.repositories, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._full is None:
            from ..config import ConfigError, load

            try:
                self._full = load(self._path)
            except ConfigError as exc:  # a repository gone since: the rest of the file still counts, as in cli
                if exc.config is None:
                    raise
                self._full = exc.config
        return getattr(self._full, name)


_CONFIG_MAX = 10 * 2**20  # characters: config.CONFIG_MAX, which load() refuses past (not imported: it pulls in YAML)


def read_config(path: Path, check: bool = True) -> tuple[ReadConfig, dict[str, str]] | None:
    """The configuration for a read-only command and {repository: problem} for those that cannot be read.

    From the snapshot the daemon (or install-hooks) saved in the state database after validating
    this very version of the file (same device, inode, size and mtime); None when there is none,
    and then the caller loads the file. `check` False: the repositories' folders are not looked at
    (`history` and `logs` read only the store: 2,000 stats at 1,000 repositories, issue 28). The snapshot's row names the file and its stamp, so a state
    folder guessed wrong from the text finds no row: never a wrong answer, only the slow path.
    """
    import sqlite3

    from ..gate import snapshot

    source = os.path.realpath(path)
    stamp = snapshot.file_stamp(source)
    try:  # /dev/zero or a FIFO would never end: config.load, on the slow path, says what is wrong with it
        if not os.path.isfile(source):
            return None
        with open(source, encoding="utf-8") as handle:
            text = handle.read(_CONFIG_MAX + 1)
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) > _CONFIG_MAX:
        return None
    found = _STATE_DIR_LINE.findall(text)
    if len(found) != text.count("state_dir") or len(found) > 1 or not stamp or snapshot.file_stamp(source) != stamp:
        return None
    value = "".join(found[0]) if found else DEFAULT_STATE_DIR
    try:
        state_dir = (Path(path).parent / os.path.expanduser(value)).resolve()  # as config._dir resolves it
        db = snapshot.connect_readonly(str(state_dir / "state.db"))
    except (OSError, RuntimeError, ValueError, sqlite3.Error):
        return None
    if db is None:
        return None
    try:
        row = db.execute("SELECT stamp, runtime_dir FROM gate_config WHERE config = ?", (source,)).fetchone()
        if row is None or row[0] != stamp:
            return None
        runtime_dir = Path(row[1])
        # Inserted in the config's order, repository by repository (snapshot.save): rowid keeps it.
        rows = db.execute(
            "SELECT repo, repo_path, name, branch, promote_from, signoff FROM gate_environments WHERE config = ? ORDER BY rowid",
            (source,),
        ).fetchall()
    except sqlite3.Error:  # an older store without the snapshot
        return None
    finally:
        db.close()
    repos: dict[str, snapshot.GateRepository] = {}
    for repo, repo_path, name, branch, promote_from, signoff in rows:
        need = None
        if signoff:  # `history` shows the sign-offs it names
            from ..gate.approvals import SignoffNeed

            need = SignoffNeed.decode(signoff)
        repos.setdefault(repo, snapshot.GateRepository(repo, repo_path, [])).environments.append(
            snapshot.GateEnvironment(name, branch, promote_from, signoff=need)
        )
    if not repos:
        return None
    unavailable = {r.name: problem for r in repos.values() if check and (problem := repository_problem(Path(r.path)))}
    return ReadConfig(Path(path), source, state_dir, runtime_dir, list(repos.values())), unavailable


def repository_problem(path: Path) -> str | None:
    """Why `path` is not a Git repository this user can read, in config.load's words; None if it is one."""
    try:
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            return None
    except PermissionError:
        import pwd

        return f"{path} cannot be read by {pwd.getpwuid(os.geteuid()).pw_name} (run `gitopsd doctor` as root to see why)"
    return f"no Git repository at {path} (run `gitopsd init {path}` to create one)"
