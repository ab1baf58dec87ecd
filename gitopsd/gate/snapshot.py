"""What the pre-receive gate knows of the configuration, and the snapshot of it the hook reads.

The hook runs on every push, and parsing the YAML config there costs more than the push itself
(PyYAML's import alone is about 25 ms; a bare push is about 20 ms). So the daemon, at start and
on every reload, and `gitopsd install-hooks` write the gate's part of the configuration into the
state database, stamped with the config file's identity (device, inode, size, mtime) taken
*before* the file was read. The hook uses the snapshot only while that stamp still matches the
file; after any edit it loads the file itself (slower, same answer). A stale snapshot can make
the hook slower, never wrong.

Stdlib only (os, sqlite3): the hook imports this on every push.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta

from ..core.lookup import by_branch, by_name, by_path

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: the hook imports neither typing nor the settings' dataclasses
    from typing import Any

    from ..core.settings import Config, Environment, Repository
    from ..core.windows import Window
    from .approvals import Policy, SignoffNeed
    from .attested import Attestation
    from .locks import BreakGlass, Lock
    from .rejections import Rejection
    from .required import Status
    from .signatures import Rule

SCHEMA = """
CREATE TABLE IF NOT EXISTS gate_config (
    config TEXT PRIMARY KEY,       -- the config file, resolved
    stamp TEXT NOT NULL,           -- file_stamp() of it when it was read
    runtime_dir TEXT NOT NULL,
    identity_env TEXT NOT NULL,    -- variable names, one per line
    written_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS gate_environments (
    config TEXT NOT NULL,
    repo TEXT NOT NULL,
    repo_path TEXT NOT NULL,       -- resolved
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    branch TEXT NOT NULL,
    promote_from TEXT NOT NULL,
    override_by TEXT NOT NULL,     -- identities, one per line
    require_checks TEXT NOT NULL DEFAULT '',   -- commit status contexts, one per line
    signoff TEXT NOT NULL DEFAULT '',          -- approvals.SignoffNeed.encode(), '' for none
    approvals TEXT NOT NULL DEFAULT '',        -- approvals.Policy.encode(), '' for none
    signatures TEXT NOT NULL DEFAULT '',       -- signatures.Rule.encode(), '' for none
    require_provenance BIGINT NOT NULL DEFAULT 0,   -- gate/attested.py
    PRIMARY KEY (config, repo, name)
);
CREATE TABLE IF NOT EXISTS gate_branches (
    config TEXT NOT NULL,
    repo TEXT NOT NULL,
    repo_path TEXT NOT NULL,       -- resolved
    branch TEXT NOT NULL,          -- a branch that is no environment's: main
    signatures TEXT NOT NULL,      -- signatures.Rule.encode()
    PRIMARY KEY (config, repo, branch)
);
CREATE TABLE IF NOT EXISTS gate_windows (
    config TEXT NOT NULL,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    allow BIGINT NOT NULL,
    cron TEXT NOT NULL,
    duration DOUBLE PRECISION NOT NULL, -- seconds
    timezone TEXT NOT NULL,
    PRIMARY KEY (config, repo, env, position)
);
"""

DEFAULT_CONFIG = "/etc/gitopsd/gitopsd.yml"  # the one place it is spelled; stdlib-only for the hook

TREE_SUCCEEDED = "SELECT 1 FROM deployments WHERE repo = ? AND env = ? AND tree = ? AND result = 'succeeded' LIMIT 1"
# The newest successful deployments of an environment, newest first (index deployments_env walks back
# from the newest id); enough history for the rollback stack (policy.rollback_trees) at hook speed.
SUCCESSES_LIMIT = 500
SUCCESSES = "SELECT kind, tree FROM deployments WHERE repo = ? AND env = ? AND result = 'succeeded' ORDER BY id DESC LIMIT ?"


class GateEnvironment:
    """An environment as the promotion rule sees it."""

    __slots__ = (
        "name",
        "branch",
        "promote_from",
        "override_by",
        "windows",
        "require_checks",
        "signoff",
        "approvals",
        "signatures",
        "require_provenance",
    )

    def __init__(
        self,
        name: str,
        branch: str,
        promote_from: str,
        override_by: tuple[str, ...] = (),
        windows: tuple[Window, ...] = (),
        require_checks: tuple[str, ...] = (),
        signoff: SignoffNeed | None = None,
        approvals: Policy | None = None,
        signatures: Rule | None = None,
        require_provenance: bool = False,
    ):
        self.name, self.branch, self.promote_from = name, branch, promote_from
        self.override_by, self.windows, self.require_checks = tuple(override_by), tuple(windows), tuple(require_checks)
        self.signoff, self.approvals, self.signatures = signoff, approvals, signatures
        self.require_provenance = require_provenance


class GateRepository:
    __slots__ = ("name", "path", "environments", "branch_rules")

    def __init__(self, name: str, path: str, environments: list[GateEnvironment], branch_rules: dict[str, Rule] | None = None):
        self.name, self.path, self.environments = name, path, environments
        self.branch_rules = branch_rules or {}  # signature rules of branches that are no environment's (main)

    def environment(self, name: str) -> GateEnvironment | None:
        return by_name(self.environments, name)

    def environment_for_branch(self, branch: str) -> GateEnvironment | None:
        return by_branch(self.environments, branch)


class GateConfig:
    """The gate's part of the whole configuration: repositories, who pushed, where the daemon listens."""

    __slots__ = ("source", "stamp", "runtime_dir", "identity_env", "repositories")

    def __init__(
        self, source: str, stamp: str, runtime_dir: str, identity_env: tuple[str, ...], repositories: list[GateRepository]
    ):
        self.source, self.stamp, self.runtime_dir = source, stamp, runtime_dir
        self.identity_env, self.repositories = tuple(identity_env), repositories

    @property
    def nudge_socket(self) -> str:
        return os.path.join(self.runtime_dir, "nudge.sock")

    def repository(self, name: str) -> GateRepository | None:
        return by_name(self.repositories, name)

    def repository_at(self, path: str) -> GateRepository | None:
        return by_path(self.repositories, path)


def file_stamp(path: str) -> str:
    """Identify one version of a file: device, inode, size and mtime (ns). '' if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def from_config(config: Config) -> GateConfig:
    """The gate's view of a loaded `config.Config` (taken as given: this module never imports YAML)."""
    return GateConfig(
        str(config.source),
        config.stamp,
        str(config.runtime_dir),
        config.identity_env,
        [
            GateRepository(
                r.name,
                os.path.realpath(r.path),
                [
                    GateEnvironment(
                        e.name,
                        e.branch,
                        e.promote_from,
                        e.override_by,
                        e.windows,
                        e.require_checks,
                        _signoff_need(r, e),
                        _policy(e),
                        _signature_rule(e),
                        e.require_provenance,
                    )
                    for e in r.environments
                ],
                _branch_rules(r),
            )
            for r in config.repositories
        ],
    )


def _signoff_need(repo: Repository, env: Environment) -> SignoffNeed | None:
    from .approvals import SignoffNeed

    rule = env.require_signoff
    source = repo.environment(rule.env) if rule is not None else None
    return SignoffNeed(rule.env, rule.count, source.signoff_by) if rule is not None and source is not None else None


def _policy(env: Environment) -> Policy | None:
    from .approvals import Policy

    a = env.approvals
    return Policy.of(a) if a else None


def _signature_rule(env: Environment) -> Rule | None:
    from .signatures import Rule

    s = env.signatures
    if s is None and not env.signed_push:
        return None
    return Rule(
        str(s.allowed_signers or "") if s else "", str(s.gpg_home or "") if s else "", s.paths if s else (), env.signed_push
    )


def _branch_rules(repo: Repository) -> dict[str, Rule]:
    """The repository's own `signatures:`, for main."""
    from .signatures import Rule

    s = repo.signatures
    return {"main": Rule(str(s.allowed_signers or ""), str(s.gpg_home or ""), s.paths)} if s is not None else {}


def save(db: sqlite3.Connection, gate: GateConfig, now: float) -> None:
    """Replace the snapshot for `gate.source` in one transaction (a writable connection in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        write(db, gate, now)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def write(db: Any, gate: GateConfig, now: float) -> None:
    """Replace the snapshot for `gate.source`, inside the caller's transaction (sqlite3's, or the store's backend)."""
    for table in ("gate_config", "gate_environments", "gate_windows", "gate_branches"):
        db.execute(f"DELETE FROM {table} WHERE config = ?", (gate.source,))  # noqa: S608 (table names and clauses are constants; values are bound)
    db.execute(
        "INSERT INTO gate_config VALUES (?, ?, ?, ?, ?)",
        (gate.source, gate.stamp, gate.runtime_dir, "\n".join(gate.identity_env), now),
    )
    for repo in gate.repositories:
        for branch, rule in repo.branch_rules.items():
            db.execute(
                "INSERT INTO gate_branches VALUES (?, ?, ?, ?, ?)", (gate.source, repo.name, repo.path, branch, rule.encode())
            )
        for position, env in enumerate(repo.environments):
            db.execute(
                "INSERT INTO gate_environments (config, repo, repo_path, position, name, branch, promote_from,"
                " override_by, require_checks, signoff, approvals, signatures, require_provenance)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    gate.source,
                    repo.name,
                    repo.path,
                    position,
                    env.name,
                    env.branch,
                    env.promote_from,
                    "\n".join(env.override_by),
                    "\n".join(env.require_checks),
                    env.signoff.encode() if env.signoff else "",
                    env.approvals.encode() if env.approvals else "",
                    env.signatures.encode() if env.signatures else "",
                    int(env.require_provenance),
                ),
            )
            for i, w in enumerate(env.windows):
                db.execute(
                    "INSERT INTO gate_windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        gate.source,
                        repo.name,
                        env.name,
                        i,
                        w.name,
                        int(w.allow),
                        w.cron.text,
                        w.duration.total_seconds(),
                        w.timezone,
                    ),
                )


def migrate(db: Any) -> None:
    """Bring a snapshot written by an older gitopsd up to this schema (the daemon rewrites it at start).

    `db`: sqlite3's connection, or the store's SQLite backend (adapters/store/sqlite.py)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(gate_environments)")}
    for column in ("require_checks", "signoff", "approvals", "signatures"):
        if column not in columns:
            db.execute(f"ALTER TABLE gate_environments ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    if "require_provenance" not in columns:
        db.execute("ALTER TABLE gate_environments ADD COLUMN require_provenance INTEGER NOT NULL DEFAULT 0")


def connect_readonly(database: str, **options: Any) -> sqlite3.Connection | None:
    """A read-only connection to the state database; None if there is none yet.

    Raises sqlite3.Error when the database exists but cannot be read. Readers such as the hook
    (git users in the daemon's group) may read the state folder but not write it. While the
    daemon runs, its write-ahead log files exist and such readers share them. After a clean stop
    SQLite has removed them, and a reader that cannot create them cannot open the database the
    usual way; with no write-ahead log left, the database file alone is complete, so it is then
    opened as immutable. Should the daemon start meanwhile, its writes go to a new log this reader
    does not see: it may miss the newest deployments, which can only make the gate refuse more.
    """
    try:
        os.stat(database)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise sqlite3.OperationalError(f"{exc.strerror}: {database}") from exc
    uri = "file:" + database.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    options.setdefault("timeout", 5)
    db: sqlite3.Connection = sqlite3.connect(uri, uri=True, **options)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        db.close()
        if os.path.exists(database + "-wal"):
            raise
    immutable: sqlite3.Connection = sqlite3.connect(uri + "&immutable=1", uri=True, **options)
    return immutable


def load(db: sqlite3.Connection, config_path: str, repo_path: str) -> GateConfig | None:
    """The snapshot for `config_path`, holding just the repository at `repo_path`; None if stale or absent."""
    source = os.path.realpath(config_path)
    try:
        row = db.execute("SELECT stamp, runtime_dir, identity_env FROM gate_config WHERE config = ?", (source,)).fetchone()
        if row is None or not row[0] or row[0] != file_stamp(source):
            return None
        envs = db.execute(
            "SELECT repo, name, branch, promote_from, override_by, require_checks, signoff, approvals,"
            " signatures, require_provenance FROM gate_environments"
            " WHERE config = ? AND repo_path = ? ORDER BY position",
            (source, os.path.realpath(repo_path)),
        ).fetchall()
        rules = db.execute(
            "SELECT repo, branch, signatures FROM gate_branches WHERE config = ? AND repo_path = ?",
            (source, os.path.realpath(repo_path)),
        ).fetchall()
        windows = db.execute(
            "SELECT env, name, allow, cron, duration, timezone FROM gate_windows"
            " WHERE config = ? AND repo = ? ORDER BY env, position",
            (source, envs[0][0] if envs else ""),
        ).fetchall()
    except sqlite3.Error:
        return None  # an older store without these tables: read the config file instead
    by_env: dict[str, list[Window]] = {}
    if windows:
        from ..core.windows import Cron, Window

        for env, name, allow, cron, duration, tz in windows:
            by_env.setdefault(env, []).append(Window(name, bool(allow), Cron.parse(cron), timedelta(seconds=duration), tz))
    repos = []
    if any(signoff or approvals for *_rest, signoff, approvals, _signatures, _provenance in envs):
        from .approvals import Policy, SignoffNeed
    if rules or any(row[-2] for row in envs):
        from .signatures import Rule
    if envs:
        repos.append(
            GateRepository(
                envs[0][0],
                os.path.realpath(repo_path),
                [
                    GateEnvironment(
                        name,
                        branch,
                        promote_from,
                        tuple(filter(None, override_by.split("\n"))),
                        tuple(by_env.get(name, ())),
                        tuple(filter(None, checks.split("\n"))),
                        SignoffNeed.decode(signoff) if signoff else None,
                        Policy.decode(approvals) if approvals else None,
                        Rule.decode(signatures) if signatures else None,
                        bool(provenance),
                    )
                    for _repo, name, branch, promote_from, override_by, checks, signoff, approvals, signatures, provenance in envs
                ],
                {branch: rule for _repo, branch, text in rules for rule in [Rule.decode(text)] if rule is not None},
            )
        )
    return GateConfig(source, row[0], row[1], tuple(filter(None, row[2].split("\n"))), repos)


def branches(db: sqlite3.Connection, config_path: str, repo_path: str) -> set[str] | None:
    """The environment branches the snapshot for `config_path` lists for `repo_path`, even when it is stale (the
    file changed since); None when it lists none, so nothing can be told apart."""
    try:
        rows = db.execute(
            "SELECT branch FROM gate_environments WHERE config = ? AND repo_path = ?",
            (os.path.realpath(config_path), os.path.realpath(repo_path)),
        ).fetchall()
    except sqlite3.Error:
        return None
    return {str(r[0]) for r in rows} or None


class Ledger:
    """Read-only answers from the state store the rule needs: was this tree deployed successfully there?

    `adapters.store.Store` answers the same two questions with the same queries (the daemon and the CLI judge with it).
    """

    def __init__(self, db: sqlite3.Connection | None):
        self.db = db

    def tree_succeeded(self, repo: str, env: str, tree: str) -> bool:
        if self.db is None:
            return False  # no store yet: nothing was ever deployed
        return self.db.execute(TREE_SUCCEEDED, (repo, env, tree)).fetchone() is not None

    def successes(self, repo: str, env: str) -> list[tuple[str, str]]:
        """(kind, tree) of the environment's last successful deployments, oldest first."""
        if self.db is None:
            return []
        return [(kind, tree) for kind, tree in self.db.execute(SUCCESSES, (repo, env, SUCCESSES_LIMIT)).fetchall()][::-1]

    def signoffs(self, repo: str, env: str, tree: str) -> list[tuple[str, str, str, float]]:
        """(actor, verdict, note, when) of the sign-offs of `tree` in `env`, oldest first (gate/approvals.py)."""
        from .approvals import SIGNOFFS

        return self._human(SIGNOFFS, (repo, env, tree))

    def rcs_for_tree(self, repo: str, tree: str, target_env: str) -> list[tuple[str, float]]:
        """(name, created_at) of the release candidates for `target_env` with `tree`, newest first."""
        from .approvals import RCS_FOR_TREE

        return [(str(r[0]), float(r[1])) for r in self._human(RCS_FOR_TREE, (repo, tree, target_env))]

    def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]:
        """(actor, kind, note, when) of a release candidate's approvals, rejections and withdrawals, oldest first."""
        from .approvals import APPROVALS

        return self._human(APPROVALS, (repo, rc))

    def locks(self, repo: str, env: str, now: float) -> list[Lock]:
        """The locks and alert freezes in force on `env` of `repo` now (gate/locks.py), oldest first."""
        from .locks import ACTIVE_LOCKS, Lock

        return [Lock.of(row) for row in self._human(ACTIVE_LOCKS, (now, repo, env))]

    def break_glass(self, repo: str, env: str, now: float) -> BreakGlass | None:
        """The confirmed break-glass override in force on `env` of `repo` now, if any."""
        from .locks import ACTIVE_BREAK_GLASS, BreakGlass

        rows = self._human(ACTIVE_BREAK_GLASS, (repo, env, now))
        return BreakGlass(*rows[0]) if rows else None

    def rejections(self, repo: str, tree: str) -> list[Rejection]:
        """Every rejection and unrejection of `tree`, oldest first (gate/rejections.py)."""
        from .rejections import REJECTIONS

        return [tuple(r) for r in self._human(REJECTIONS, (repo, tree))]

    def attestations(self, repo: str, tree: str) -> list[Attestation]:
        """(artifact, sha256 kept, sha256 signed) of `tree`'s recorded provenance (gate/attested.py)."""
        from .attested import ATTESTATIONS

        return [tuple(r) for r in self._human(ATTESTATIONS, (repo, tree))]

    def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list[tuple[int, int, float, str]], int, float | None]:
        """(finished previews of `rc` for `env` newest first, its deployed deployment now, when it last drifted)."""
        from .approvals import PREVIEW_MARKS, TARGET_DEPLOYED, TARGET_DRIFTED

        rows = self._human(PREVIEW_MARKS, (repo, rc, env))
        marks = [(int(a), int(b), float(c), str(d)) for a, b, c, d, _tree in rows]
        if not marks:  # the rule needs the rest only for a candidate with a preview
            return [], 0, None
        deployed = self._human(TARGET_DEPLOYED, (repo, env, str(rows[0][4]) if rows else ""))
        drifted = self._human(TARGET_DRIFTED, (repo, env))
        return (
            marks,
            int(deployed[0][0] or 0) if deployed else 0,
            float(drifted[0][0]) if drifted and drifted[0][0] is not None else None,
        )

    def _human(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        if self.db is None:
            return []
        try:
            return list(self.db.execute(sql, args).fetchall())
        except sqlite3.OperationalError:  # a store from before human gates: nothing was recorded
            return []

    def statuses(self, repo: str, tree: str) -> list[Status]:
        """The newest commit status per context reported for `tree` (gate/required.py)."""
        if self.db is None:
            return []
        from .required import LATEST_BY_TREE, rows_to_statuses

        try:
            return rows_to_statuses(self.db.execute(LATEST_BY_TREE, (repo, tree)).fetchall())
        except sqlite3.OperationalError:  # a store from before commit statuses: nothing was reported
            return []
