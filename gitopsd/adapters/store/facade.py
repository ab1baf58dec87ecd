"""The state store: deployments and per-environment retry status in SQLite (WAL), or in PostgreSQL.

Readers (hooks, `gitopsd status`) never block the daemon. Every write is one short transaction,
so a daemon killed at any instant leaves a consistent store; a deployment still `running` when
the daemon starts again was interrupted.

The statements are written once, in SQLite's dialect; with `database: postgresql://...` they run
on PostgreSQL through store/postgresql.py, which rewrites them (store/dialect.py) and keeps the
pre-receive hook's read model in a local SQLite file. The schema is versioned (store/schema.py).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar, cast

from ...gate import approvals, attested, locks, rejections, required, snapshot
from ...gate.locks import ACTIVE_BREAK_GLASS, ACTIVE_LOCKS, BreakGlass, Lock
from .. import ownership
from . import dialect as dialects, schema as migrations
from ...base.storeerrors import StoreFenced, StoreUnusable, postgresql_missing, translate
from ...core.types import (Admission, Block, Deployment, DriftReport, FailureStatus, Hold, HostInfo, Kind, Result,
                          TaskChange, WatchWindow, iso)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    previous_commit TEXT,
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    trigger TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    outcome TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    attempt INTEGER NOT NULL DEFAULT 1,
    workdir TEXT,
    detail TEXT,
    epoch INTEGER NOT NULL DEFAULT 0   -- the leader's epoch that wrote it (gitopsd/daemon/leadership.py); 0 without PostgreSQL
);
CREATE INDEX IF NOT EXISTS deployments_env ON deployments (repo, env, id);
CREATE INDEX IF NOT EXISTS deployments_tree ON deployments (repo, env, tree, result);
CREATE TABLE IF NOT EXISTS env_status (
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    failures INTEGER NOT NULL,
    next_retry_at REAL,
    stalled INTEGER NOT NULL DEFAULT 0,   -- 0 retrying, 1 stalled, 2 failed for good (its automatic rollback failed)
    reason TEXT,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS unwatched_repos (   -- repositories the daemon's ref watcher cannot watch now, and why
    repo TEXT PRIMARY KEY,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS env_heads (    -- each environment branch's head as the daemon last read it
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS env_blocks (   -- a head the daemon's re-judging refused, while it is the head
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    deployed_commit TEXT,                 -- what it was judged against
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS admissions (   -- commits an operator let past the promotion rule, and why
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    kind TEXT NOT NULL,                   -- override (retry --force) | rollback (rollback --to)
    actor TEXT NOT NULL,                  -- the Unix user who ran the command
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS admissions_commit ON admissions (repo, env, commit_id);
CREATE TABLE IF NOT EXISTS env_suspensions (   -- `gitopsd suspend`: no deployments here until `resume`
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    since REAL NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS sync_requests (   -- `gitopsd sync`: re-apply this deployed commit once
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS ci_heads (   -- each CI branch's head as the daemon last saw it (gitopsd/ci/heads.py)
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, branch)
);
CREATE TABLE IF NOT EXISTS bad_trees (
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    tree TEXT NOT NULL,
    reason TEXT NOT NULL,
    marked_at REAL NOT NULL,
    PRIMARY KEY (repo, env, tree)
);
CREATE TABLE IF NOT EXISTS commits_seen (   -- when each commit first reached the server (DORA lead time: dora.py)
    repo TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    via TEXT NOT NULL,                      -- the nudge's trigger that brought it (push, branch-push, promote, ...) or found
    PRIMARY KEY (repo, commit_id)
);
CREATE TABLE IF NOT EXISTS seen_refs (      -- the branch heads at the last walk for new commits (firstseen.py)
    repo TEXT PRIMARY KEY,
    tips TEXT NOT NULL                      -- commit ids, one a line
);
CREATE TABLE IF NOT EXISTS commits_deployed (   -- the commits a successful deploy brought to an environment first
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    deployment_id INTEGER NOT NULL,
    deployed_at REAL NOT NULL,              -- that deployment's end
    lead REAL,                              -- seconds from first seen to deployed_at; NULL: gitopsd made it (no change)
    PRIMARY KEY (repo, env, commit_id)
);
CREATE INDEX IF NOT EXISTS commits_deployed_at ON commits_deployed (env, deployed_at);
CREATE INDEX IF NOT EXISTS commits_deployed_commit ON commits_deployed (repo, commit_id);
CREATE INDEX IF NOT EXISTS commits_deployed_deployment ON commits_deployed (deployment_id);
CREATE TABLE IF NOT EXISTS watches (   -- each environment's post-deploy watch (core/reconcile.py); a restart resumes it
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    deployment_id INTEGER NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    previous_tree TEXT,                    -- what an automatic rollback returns to
    started_at REAL NOT NULL,
    until REAL NOT NULL,
    state TEXT NOT NULL,                   -- watching | passed | breached | ended
    reason TEXT,
    hosts TEXT NOT NULL DEFAULT '[]',      -- [[name, {variable: value}]] for the HTTP checks
    checked_at REAL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS drift_reports (   -- drift detection runs (check mode) against the deployed deployment
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    deployment_id INTEGER NOT NULL,
    checked_at REAL NOT NULL,
    state TEXT NOT NULL,                   -- baseline | clean | drifted | unknown
    reason TEXT,
    hosts INTEGER NOT NULL DEFAULT 0,      -- drifted hosts
    changes TEXT NOT NULL DEFAULT '[]'     -- TaskChange.as_json() of each drifted task (a baseline: its own)
);
CREATE INDEX IF NOT EXISTS drift_reports_env ON drift_reports (repo, env, id);
CREATE TABLE IF NOT EXISTS leadership (   -- the leader's lease (PostgreSQL only: gitopsd/daemon/leadership.py); one row
    id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,                -- raised by each daemon that takes the lead; written with each deployment
    holder TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS daemons (   -- each gitopsd sharing this database: leader or standby, and when last heard of
    name TEXT PRIMARY KEY,                 -- host:state_dir
    role TEXT NOT NULL,                    -- leader | standby
    epoch INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    api TEXT NOT NULL DEFAULT '',          -- where its HTTP API listens, if it has one
    seen_at REAL NOT NULL
);
"""

RESULTS = tuple(Result)
ACTIVE = (Result.QUEUED, Result.RUNNING)   # not finished: waiting for a free worker (max_parallel), or running
KINDS = tuple(Kind)
__all__ = ["ACTIVE", "Admission", "Block", "Deployment", "FailureStatus", "Hold", "Store", "iso"]


T = TypeVar("T")


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Raise a failure of SQLite (or of the file under it) as the StoreError storeerrors.translate makes of it."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            error = translate(self.location, exc)
            if isinstance(error, StoreFenced):   # another daemon leads: the daemon steps down (daemon.py)
                self.fenced.set()
            raise error from exc
    return wrapper


def _bookkeeping(method: Callable[..., Any]) -> Callable[..., Any]:
    """The daemon's own bookkeeping: with the file lost (Store.let_go) there is nowhere to keep it, and nothing to say."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            return None
        return method(self, *args, **kwargs)
    return wrapper


def _errors_translated(cls: type[T]) -> type[T]:
    """Every method of the store raises gitopsd's own error kinds, never sqlite3.Error (issue 11)."""
    for name, attr in list(vars(cls).items()):
        if callable(attr) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, _translated(attr))
    return cls


def file_identity(path: Path) -> tuple[int, int] | None:
    """The file at `path` as (st_dev, st_ino), None if there is none: what stays the same while it is the same file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def write_backup(source: sqlite3.Connection, target: Path) -> Path:
    """Copy the database of `source` into `target` with SQLite's backup API: to a temporary name, then renamed."""
    target = Path(target)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.close(fd)
        os.chmod(temp, 0o640)   # whatever the umask
        copy = sqlite3.connect(temp)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")   # one self-contained file, no -wal beside it
        finally:
            copy.close()
        os.rename(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def full_schema() -> str:
    """Every table of the store, the gate's included, in SQLite's dialect (migrations create them where missing)."""
    return (SCHEMA + snapshot.SCHEMA + required.SCHEMA + approvals.SCHEMA + locks.SCHEMA + rejections.SCHEMA + approvals.PREVIEW_SCHEMA
            + attested.SCHEMA)


# How long the daemon's writes wait for a PostgreSQL that went away (restart, failover) before failing.
PG_WRITE_RETRY = 600.0


@_errors_translated
class Store:
    """The daemon's state. Safe to share between the daemon's threads. Raises StoreError, never sqlite3.Error.

    SQLite at `path` by default; with `url` (postgresql://...), PostgreSQL, and `path` is then the local
    SQLite file the pre-receive hook reads (written by a writable store only).
    """

    def __init__(self, path: Path, *, readonly: bool = False, url: str = "", retry_for: float | None = None,
                 hook_copy: bool = True, epoch: int | None = None):
        self.path = Path(path)
        self.fenced = threading.Event()   # set when PostgreSQL refused a deployment record: another daemon leads
        self.epoch = epoch
        self.url = url
        self.location = str(self.path)
        self._lock = threading.Lock()
        self.versions = (migrations.LATEST, migrations.LATEST)   # the schema's version before and after opening
        self.dialect: dialects.SQLite = dialects.SQLite()
        self.lost: str | None = None   # let_go(): why this store writes nothing more
        self._unrecorded: dict[int, tuple[str, float, str | None]] = {}   # deployments that ended after let_go()
        self.identity: tuple[int, int] | None = None   # (st_dev, st_ino) of the SQLite file a writable store opened
        self._reader = readonly and not url   # a read-only SQLite store: opened again once if a read fails (_rows)
        if url:
            retry = PG_WRITE_RETRY if retry_for is None and not readonly else retry_for or 0.0
            self._open_postgresql(readonly, retry, hook_copy)
            return
        if readonly:
            self._open_reader()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.versions = self._upgrade(self._db, self.dialect)
        self._db.row_factory = sqlite3.Row
        self.identity = file_identity(self.path)   # the file this connection writes: see replaced()
        # Made by root (init, install-hooks, db upgrade) in the service's state folder: the service's, not root's.
        ownership.hand_over([self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")],
                            ownership.daemon_account(self.path.parent))

    def _open_reader(self) -> None:
        """The read-only connection of a command (see snapshot.connect_readonly: readers in the daemon's group)."""
        db = snapshot.connect_readonly(str(self.path), check_same_thread=False)
        if db is not None and db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deployments'").fetchone() is None:
            db.close()   # a state.db without the store's tables (an older tool made it): nothing recorded, as no file
            db = None
        if db is None:
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.executescript(full_schema())
        old: sqlite3.Connection | None = getattr(self, "_db", None)
        if old is not None:
            old.close()
        db.row_factory = sqlite3.Row
        self._db = db

    @classmethod
    def of(cls, config: Any, *, readonly: bool = False, epoch: int | None = None) -> Store:
        """The store a loaded configuration names: `database:` (PostgreSQL) or the SQLite file in state_dir.

        `epoch`: the leader's (gitopsd/daemon/leadership.py), written with each deployment row it records."""
        return cls(config.database, readonly=readonly, url=getattr(config, "database_url", ""), epoch=epoch)

    def _upgrade(self, db: Any, dialect: dialects.SQLite) -> tuple[int, int]:
        try:
            return migrations.upgrade(db, dialect, full_schema())
        except ValueError as exc:   # written by a newer gitopsd
            raise sqlite3.DatabaseError(f"{self.location}: {exc}") from exc

    def _open_postgresql(self, readonly: bool, retry_for: float, hook_copy: bool) -> None:
        """PostgreSQL at self.url; a writable store also keeps the hook's read model at self.path, copied whole now."""
        try:
            from . import postgresql as pgstore
        except ImportError as exc:   # PostgreSQL is an extra (pyproject's `postgresql`): say what to install
            raise StoreUnusable(f"cannot use the PostgreSQL state database: {postgresql_missing(exc)}") from None
        self.location = pgstore.redact(self.url)
        self.dialect = dialects.PostgreSQL(dialects.primary_keys(full_schema()))
        mirror = None
        if not readonly and hook_copy:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mirror = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            mirror.execute("PRAGMA journal_mode=WAL")
            mirror.execute("PRAGMA synchronous=NORMAL")
            migrations.upgrade(mirror, dialects.SQLite(), full_schema())
        try:
            pg = pgstore.Connection(self.url, self.dialect, retry_for=retry_for, mirror=mirror,
                                    max_size=2 if readonly else 4, epoch=self.epoch)
        except BaseException:
            if mirror is not None:
                mirror.close()
            raise
        # postgresql.Connection answers the few sqlite3.Connection methods the store calls, with the same rows.
        self._db = cast(sqlite3.Connection, pg)
        self._mirror = mirror
        if not readonly:
            self.versions = self._upgrade(pg, self.dialect)
            pg.resync_mirror()
        elif migrations.current(pg) == 0:   # no daemon wrote here yet: nothing recorded, as a missing SQLite file
            pg.close()
            self.dialect = dialects.SQLite()
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
            self._db.executescript(full_schema())

    @property
    def backend(self) -> str:
        return self.dialect.name

    def replaced(self) -> str | None:
        """Why the SQLite file at `path` is no longer the one this writable store opened (one os.stat), or None.

        A deleted or replaced state.db would otherwise be recreated empty by the next opener, the history gone."""
        if self.identity is None:   # PostgreSQL, or a reader
            return None
        now = file_identity(self.path)
        if now is None:
            return f"the state database {self.path} was deleted while the daemon had it open"
        if now != self.identity:
            return f"the state database {self.path} was replaced by another file while the daemon had it open"
        return None

    def let_go(self, reason: str) -> None:
        """Write nothing more (the file at `path` is another's now): fold the write-ahead log into the file this store
        still holds and empty it, since a new state.db at `path` would read state.db-wal as its own."""
        with self._lock:
            self.lost = reason
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass   # a reader's snapshot holds the log: the rescue copy has the records all the same

    def backup(self, target: Path) -> Path:
        """Copy this store, as it is now, to `target` (SQLite's online backup; atomic, mode 0640); return `target`."""
        if self.backend != "sqlite":
            raise StoreUnusable("backups are for SQLite state databases; back up PostgreSQL with pg_dump")
        with self._lock:
            return write_backup(self._db, target)

    def refresh_hook_copy(self) -> None:
        """Copy the records the pre-receive hook reads into its SQLite file again (a standby's, now and then)."""
        resync = getattr(self._db, "resync_mirror", None)
        if resync is not None:
            with self._lock:
                resync()

    # -- the daemons sharing a PostgreSQL database (gitopsd/daemon/leadership.py) ------------------------------
    def daemons(self) -> list[dict[str, Any]]:
        """Each daemon that said it was alive here: name, role, epoch, pid, api, seconds since it did (PostgreSQL)."""
        if self.backend != "postgresql":
            return []
        rows = self._rows("SELECT name, role, epoch, pid, api, extract(epoch from now()) - seen_at AS age FROM daemons"
                          " ORDER BY role, name")   # the age by the database's clock: the daemons' may differ
        return [{"name": r["name"], "role": r["role"], "epoch": int(r["epoch"]), "pid": int(r["pid"]),
                 "api": r["api"], "seen_ago": max(0.0, float(r["age"]))} for r in rows]

    def close(self) -> None:
        self._db.close()
        mirror: sqlite3.Connection | None = getattr(self, "_mirror", None)
        if mirror is not None:
            mirror.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def continue_ids_after(self, n: int) -> int | None:
        """Make new deployment ids start above `n`: ids name folders in state_dir/deployments/, which outlive a lost store.

        Return the next id if the ids had to jump, None if they were already past `n`.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                moved = self.dialect.id_floor(self._db, "deployments", n)
                self._db.execute("COMMIT")
                return n + 1 if moved else None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            if self.lost is not None:
                raise StoreUnusable(f"{self.lost}: nothing more is recorded until it is restored")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(sql, args)
                self._db.execute("COMMIT")
                return cur
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError:
                if not self._reader:
                    raise
                # A reader that found no write-ahead log reads the file as immutable (snapshot.connect_readonly); a
                # daemon starting meanwhile can change it under that reader. Opened again, it reads the log too.
                self._open_reader()
                return self._db.execute(sql, args).fetchall()

    # -- deployments ---------------------------------------------------------------------------
    def begin(self, *, repo: str, env: str, commit: str, tree: str, previous_commit: str | None, kind: str,
              trigger: str, actor: str, now: float, attempt: int = 1, reason: str | None = None,
              queued: bool = False) -> int:
        """Record a new deployment, `running` (or `queued` until a worker takes it: see `started`)."""
        assert kind in KINDS, kind
        cur = self._write(
            "INSERT INTO deployments (repo, env, commit_id, tree, previous_commit, kind, result, trigger, actor,"
            " reason, started_at, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (repo, env, commit, tree, previous_commit, kind, "queued" if queued else "running", trigger, actor,
             reason, now, attempt))
        return int(cur.lastrowid or 0)

    def restore_deployment(self, deployment_id: int, *, repo: str, env: str, commit: str, tree: str,
                           previous_commit: str | None, kind: str, result: str, trigger: str, actor: str,
                           outcome: str | None, at: float) -> bool:
        """Record a finished deployment under its own id, as the notes tell it (notes_ledger); False if that id exists."""
        cur = self._write(
            "INSERT OR IGNORE INTO deployments (id, repo, env, commit_id, tree, previous_commit, kind, result, trigger,"
            " actor, outcome, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (deployment_id, repo, env, commit, tree, previous_commit, kind, result, trigger, actor, outcome, at, at))
        return cur.rowcount == 1

    @_bookkeeping
    def started(self, deployment_id: int, now: float) -> None:
        """A queued deployment's worker took it: it runs from now on."""
        self._write("UPDATE deployments SET result = 'running', started_at = ? WHERE id = ? AND result = 'queued'",
                    (now, deployment_id))

    def attribute(self, repo: str, commit: str, actor: str, trigger: str, reason: str | None, since: float) -> int:
        """Name who caused deployments of `commit` that started (since `since`) before the nudge arrived."""
        return self._write("UPDATE deployments SET actor = ?, trigger = ?, reason = COALESCE(?, reason)"
                           " WHERE repo = ? AND commit_id = ? AND actor = 'unknown' AND started_at >= ?",
                           (actor, trigger, reason, repo, commit, since)).rowcount

    @_bookkeeping
    def set_progress(self, deployment_id: int, progress: dict[str, int | None]) -> None:
        """Record where a running deployment is (Progress.as_json(), e.g. batch 2 of 3), for `gitopsd status`."""
        self._write(self.dialect.SET_PROGRESS, (json.dumps(progress), deployment_id))

    @_bookkeeping
    def set_workdir(self, deployment_id: int, workdir: Path) -> None:
        self._write("UPDATE deployments SET workdir = ? WHERE id = ?", (str(workdir), deployment_id))

    def finish(self, deployment_id: int, result: str, *, now: float, outcome: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
        assert result in RESULTS and result not in ACTIVE, result
        if self.lost is not None:   # nowhere to write it: kept for get(), so its audit note tells how it ended
            with self._lock:
                self._unrecorded[deployment_id] = (result, now, outcome)
            return
        self._write(
            "UPDATE deployments SET result = ?, finished_at = ?, outcome = ?, detail = ?"
            " WHERE id = ? AND result IN ('queued', 'running')",
            (result, now, outcome, json.dumps(detail or {}), deployment_id))

    def mark_interrupted(self, now: float) -> list[Deployment]:
        """Mark every deployment a previous daemon left running as interrupted (queued: canceled); return them."""
        left = [self._deployment(r) for r in self._rows("SELECT * FROM deployments WHERE result IN ('queued', 'running')")]
        for dep in left:
            if dep.result == "queued":
                self.finish(dep.id, "canceled", now=now, outcome="the daemon stopped before this deployment started")
            else:
                self.finish(dep.id, "interrupted", now=now, outcome="the daemon stopped during this deployment")
        return [dep for dep in left if dep.result == "running"]

    def get(self, deployment_id: int) -> Deployment | None:
        rows = self._rows("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        ended = self._unrecorded.get(deployment_id)
        if rows and ended is not None:
            return dataclasses.replace(self._deployment(rows[0]), result=ended[0], finished_at=ended[1],
                                       outcome=ended[2])
        return self._deployment(rows[0]) if rows else None

    def history(self, *, repo: str | None = None, env: str | None = None, limit: int = 20,
                before: int | None = None) -> list[Deployment]:
        """Deployments newest first; `before`: only those with a smaller id (the next page, however deep)."""
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if repo:
            where.append("repo = ?")
            args.append(repo)
        if env:
            where.append("env = ?")
            args.append(env)
        sql = "SELECT * FROM deployments" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 (table names and clauses are constants; values are bound)
        sql += " ORDER BY id DESC LIMIT ?"
        return [self._deployment(r) for r in self._rows(sql, (*args, limit))]

    def last(self, repo: str, env: str) -> Deployment | None:
        rows = self._rows("SELECT * FROM deployments WHERE repo = ? AND env = ? ORDER BY id DESC LIMIT 1", (repo, env))
        return self._deployment(rows[0]) if rows else None

    def deployed(self, repo: str, env: str) -> Deployment | None:
        """The last successful deployment of an environment: what its hosts run."""
        rows = self._rows("SELECT * FROM deployments WHERE repo = ? AND env = ? AND result = 'succeeded'"
                          " ORDER BY id DESC LIMIT 1", (repo, env))
        return self._deployment(rows[0]) if rows else None

    def tree_succeeded(self, repo: str, env: str, tree: str) -> bool:
        return bool(self._rows(snapshot.TREE_SUCCEEDED, (repo, env, tree)))

    def tree_tried(self, repo: str, env: str, tree: str) -> bool:
        """Was `tree` ever deployed (or tried) in `env`? Automatic promotion never brings one back."""
        return bool(self._rows("SELECT 1 FROM deployments WHERE repo = ? AND env = ? AND tree = ? LIMIT 1",
                               (repo, env, tree)))

    def successes(self, repo: str, env: str) -> list[tuple[str, str]]:
        """(kind, tree) of the environment's last successful deployments, oldest first (as snapshot.Ledger)."""
        return [(r["kind"], r["tree"]) for r in self._rows(snapshot.SUCCESSES, (repo, env, snapshot.SUCCESSES_LIMIT))][::-1]

    def save_gate(self, gate_config: snapshot.GateConfig) -> None:
        """Save the pre-receive hook's snapshot of the configuration (see gate/snapshot.py)."""
        with self._lock:
            snapshot.save(self._db, gate_config, time.time())

    def old_workdirs(self, keep: int) -> list[tuple[int, str]]:
        """Work folders of finished deployments beyond the newest `keep` per environment."""
        rows = self._rows(
            "SELECT id, workdir FROM (SELECT id, workdir, result, ROW_NUMBER() OVER (PARTITION BY repo, env ORDER BY id DESC)"
            " AS n FROM deployments WHERE workdir IS NOT NULL) AS numbered WHERE n > ? AND result NOT IN ('queued', 'running')", (keep,))
        return [(int(r["id"]), str(r["workdir"])) for r in rows]

    @_bookkeeping
    def clear_workdir(self, deployment_id: int) -> None:
        self._write("UPDATE deployments SET workdir = NULL WHERE id = ?", (deployment_id,))

    @staticmethod
    def _deployment(row: sqlite3.Row) -> Deployment:
        return Deployment(
            id=row["id"], repo=row["repo"], env=row["env"], commit=row["commit_id"], tree=row["tree"],
            previous_commit=row["previous_commit"], kind=row["kind"], result=row["result"], trigger=row["trigger"],
            actor=row["actor"], reason=row["reason"], outcome=row["outcome"], started_at=row["started_at"], finished_at=row["finished_at"],
            attempt=row["attempt"], workdir=row["workdir"], detail=json.loads(row["detail"] or "{}"))

    # -- retries and stalls ---------------------------------------------------------------------
    def failure(self, repo: str, env: str) -> FailureStatus | None:
        rows = self._rows("SELECT * FROM env_status WHERE repo = ? AND env = ?", (repo, env))
        if not rows:
            return None
        r = rows[0]
        return FailureStatus(r["commit_id"], r["failures"], r["next_retry_at"], bool(r["stalled"]), r["reason"],
                             failed=r["stalled"] == 2)

    @_bookkeeping
    def record_failure(self, repo: str, env: str, status: FailureStatus) -> None:
        stalled = 2 if status.failed else int(status.stalled)
        self._write("INSERT OR REPLACE INTO env_status (repo, env, commit_id, failures, next_retry_at, stalled, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (repo, env, status.commit, status.failures, status.next_retry_at, stalled, status.reason))

    @_bookkeeping
    def clear_failure(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM env_status WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    @_bookkeeping
    def mark_bad_tree(self, repo: str, env: str, tree: str, reason: str, now: float) -> None:
        self._write("INSERT OR REPLACE INTO bad_trees (repo, env, tree, reason, marked_at) VALUES (?, ?, ?, ?, ?)",
                    (repo, env, tree, reason, now))

    def bad_tree(self, repo: str, env: str, tree: str) -> str | None:
        rows = self._rows("SELECT reason FROM bad_trees WHERE repo = ? AND env = ? AND tree = ?", (repo, env, tree))
        return rows[0]["reason"] if rows else None

    def clear_bad_trees(self, repo: str, env: str) -> int:
        return self._write("DELETE FROM bad_trees WHERE repo = ? AND env = ?", (repo, env)).rowcount

    def clear_bad_tree(self, repo: str, env: str, tree: str) -> int:
        """Forget that `tree` failed in `env` (an unreject lets it be deployed there again)."""
        return self._write("DELETE FROM bad_trees WHERE repo = ? AND env = ? AND tree = ?", (repo, env, tree)).rowcount

    # -- recorded provenance (gate/attested.py) ----------------------------------------------------------
    def attestations(self, repo: str, tree: str) -> list[tuple[Any, ...]]:
        """(artifact, sha256 kept, sha256 signed) of `tree`'s recorded provenance (gate/attested.ATTESTATIONS)."""
        return self._human(attested.ATTESTATIONS, (repo, tree))

    @_bookkeeping
    def record_attestation(self, *, repo: str, tree: str, name: str, sha256: str, signed_sha256: str, statement: str,
                           now: float) -> None:
        """Record that `tree`'s artifact `name` has a signed statement (the hook's require_provenance reads it)."""
        self._write("INSERT OR REPLACE INTO attestations (repo, tree, name, sha256, signed_sha256, statement, recorded_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", (repo, tree, name, sha256, signed_sha256, statement, now))

    # -- rejected trees (gate/rejections.py) ------------------------------------------------------------
    def rejections(self, repo: str, tree: str) -> list[tuple[Any, ...]]:
        """Every rejection and unrejection of `tree`, oldest first (gate/rejections.REJECTIONS)."""
        return self._human(rejections.REJECTIONS, (repo, tree))

    @_bookkeeping
    def add_rejection(self, *, repo: str, tree: str, env: str, kind: str, deployment_id: int | None, commit: str,
                      actor: str, reason: str, now: float) -> None:
        """Record that `tree` is rejected (kind reject) or let through again (unreject) from `env` on."""
        assert kind in ("reject", "unreject"), kind
        self._write("INSERT INTO tree_rejections (repo, tree, env, kind, deployment_id, commit_id, actor, reason,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (repo, tree, env, kind, deployment_id, commit, actor, reason, now))

    # -- blocked heads and admissions ---------------------------------------------------------------
    @_bookkeeping
    def block(self, repo: str, env: str, block: Block) -> None:
        self._write("INSERT OR REPLACE INTO env_blocks (repo, env, commit_id, deployed_commit, reason, since)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (repo, env, block.commit, block.deployed_commit, block.reason, block.since))

    @_bookkeeping
    def record_head(self, repo: str, env: str, commit: str, tree: str) -> None:
        """Remember an environment branch's head and its tree (status reads the tree here, not from git)."""
        self._write("INSERT OR REPLACE INTO env_heads (repo, env, commit_id, tree) VALUES (?, ?, ?, ?)",
                    (repo, env, commit, tree))

    @_bookkeeping
    def set_unwatched(self, unwatched: dict[str, str]) -> None:
        """Record which repositories the ref watcher cannot watch (inotify limits, a folder gone), and why."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM unwatched_repos")
                self._db.executemany("INSERT INTO unwatched_repos (repo, reason) VALUES (?, ?)", unwatched.items())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def unwatched(self) -> dict[str, str]:
        """Repositories the running daemon cannot watch, with the reason (empty for an older store)."""
        try:
            return {r["repo"]: r["reason"] for r in self._rows("SELECT repo, reason FROM unwatched_repos ORDER BY repo")}
        except sqlite3.OperationalError:
            return {}

    def recorded_heads(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(repo, env) -> (commit, tree) of every head the daemon recorded."""
        try:
            rows = self._rows("SELECT repo, env, commit_id, tree FROM env_heads")
        except sqlite3.OperationalError:   # a store written by an older daemon, read by `status`
            return {}
        return {(r["repo"], r["env"]): (r["commit_id"], r["tree"]) for r in rows}

    def environment_records(self, now: float) -> dict[str, Any] | None:
        """Every environment's records `status` reads, one query per table instead of ten per environment (issue 28).

        last, deployed, drift: {(repo, env): row} for the environments in `covered` (those env_heads holds), found
        through the (repo, env, id) indexes; failure, blocked, suspension, watch: {(repo, env): row}, bad_trees:
        {(repo, env, tree): reason}, locks: every lock in force at `now`. None from a store older than these tables.
        """
        newest = ("SELECT * FROM {0} WHERE id IN (SELECT (SELECT max(id) FROM {0} AS x WHERE x.repo = h.repo"
                  " AND x.env = h.env{1}) FROM env_heads AS h)")
        pair = lambda r: (r["repo"], r["env"])   # noqa: E731
        try:
            return self._environment_records(newest, pair, now)
        except sqlite3.OperationalError:   # a store written by an older daemon, read by `status`
            return None

    def _environment_records(self, newest: str, pair: Callable[[sqlite3.Row], tuple[str, str]], now: float) -> dict[str, Any]:
        last = {d.id: d for d in map(self._deployment, self._rows(newest.format("deployments", "")))}
        return {
            "covered": {pair(r) for r in self._rows("SELECT repo, env FROM env_heads")},
            "last": {(d.repo, d.env): d for d in last.values()},
            "deployed": {pair(r): last.get(r["id"]) or self._deployment(r)   # mostly the last one: parsed once
                         for r in self._rows(newest.format("deployments", " AND x.result = 'succeeded'"))},
            "drift": {pair(r): self._drift_report(r) for r in self._rows(newest.format("drift_reports", ""))},
            "failure": {pair(r): FailureStatus(r["commit_id"], r["failures"], r["next_retry_at"], bool(r["stalled"]),
                                               r["reason"], failed=r["stalled"] == 2)
                        for r in self._rows("SELECT * FROM env_status")},
            "blocked": {pair(r): Block(r["commit_id"], r["deployed_commit"], r["reason"], r["since"])
                        for r in self._rows("SELECT * FROM env_blocks")},
            "suspension": {pair(r): Hold(r["actor"], r["reason"], r["since"]) for r in self._rows("SELECT * FROM env_suspensions")},
            "watch": {pair(r): self._watch(r) for r in self._rows("SELECT * FROM watches")},
            "bad_trees": {(r["repo"], r["env"], r["tree"]): r["reason"]
                          for r in self._rows("SELECT repo, env, tree, reason FROM bad_trees")},
            "locks": self.all_locks(now)}

    def blocked(self, repo: str, env: str) -> Block | None:
        try:
            rows = self._rows("SELECT * FROM env_blocks WHERE repo = ? AND env = ?", (repo, env))
        except sqlite3.OperationalError:   # a store written by an older daemon, read by `status`
            return None
        return Block(rows[0]["commit_id"], rows[0]["deployed_commit"], rows[0]["reason"], rows[0]["since"]) if rows else None

    def clear_block(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM env_blocks WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    def admit(self, *, repo: str, env: str, commit: str, kind: str, actor: str, reason: str, now: float) -> int:
        assert kind in ("override", "rollback"), kind
        cur = self._write("INSERT INTO admissions (repo, env, commit_id, kind, actor, reason, created_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)", (repo, env, commit, kind, actor, reason, now))
        return int(cur.lastrowid or 0)

    def admission(self, repo: str, env: str, commit: str) -> Admission | None:
        """The newest admission of `commit` in one environment, if an operator made one."""
        found = self._admissions("WHERE repo = ? AND env = ? AND commit_id = ?", (repo, env, commit), 1)
        return found[0] if found else None

    def admissions(self, *, repo: str | None = None, env: str | None = None, limit: int = 20) -> list[Admission]:
        """Admissions, newest first."""
        where = " AND ".join(w for w, v in (("repo = ?", repo), ("env = ?", env)) if v)
        return self._admissions(f"WHERE {where}" if where else "", tuple(v for v in (repo, env) if v), limit)

    def _admissions(self, where: str, args: tuple[Any, ...], limit: int) -> list[Admission]:
        try:
            rows = self._rows(f"SELECT * FROM admissions {where} ORDER BY id DESC LIMIT ?", (*args, limit))  # noqa: S608 (table names and clauses are constants; values are bound)
        except sqlite3.OperationalError:   # a store written by an older daemon
            return []
        return [Admission(r["id"], r["repo"], r["env"], r["commit_id"], r["kind"], r["actor"], r["reason"],
                          r["created_at"]) for r in rows]

    # -- locks, alert freezes and break-glass overrides (gate/locks.py) --------------------------------
    def add_lock(self, *, repo: str, env: str, source: str, actor: str, reason: str, now: float,
                 expires_at: float | None = None, alert: str = "") -> int:
        """Record a lock on `env` of `repo` ('*' for every one) by a person or a firing alert."""
        assert source in ("person", "alert"), source
        cur = self._write("INSERT INTO env_locks (repo, env, source, alert, actor, reason, created_at, expires_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (repo, env, source, alert, actor, reason, now, expires_at))
        return int(cur.lastrowid or 0)

    def lift_locks(self, *, repo: str, env: str, by: str, now: float, alert: str | None = None,
                   reason: str | None = None) -> int:
        """Lift the people's locks of exactly this scope (or, with `alert`, that alert's freezes); how many."""
        if alert is None:
            return self._write("UPDATE env_locks SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE lifted_at IS NULL"
                               " AND source = 'person' AND repo = ? AND env = ?", (now, by, reason, repo, env)).rowcount
        return self._write("UPDATE env_locks SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE lifted_at IS NULL"
                           " AND source = 'alert' AND alert = ?", (now, by, reason, alert)).rowcount

    def lock_history(self, limit: int = 20) -> list[dict[str, Any]]:
        """Locks and freezes, in force or lifted, newest first: who set and lifted each, and why."""
        try:
            return [dict(r) for r in self._rows("SELECT * FROM env_locks ORDER BY id DESC LIMIT ?", (limit,))]
        except sqlite3.OperationalError:   # a store written by an older daemon
            return []

    def locks(self, repo: str, env: str, now: float) -> list[Lock]:
        """The locks in force on `env` of `repo` now, oldest first (the promotion rule's question)."""
        try:
            return [Lock.of(tuple(r)) for r in self._rows(ACTIVE_LOCKS, (now, repo, env))]
        except sqlite3.OperationalError:   # a store written by an older daemon
            return []

    def all_locks(self, now: float) -> list[Lock]:
        """Every lock in force now, oldest first (status, the dashboard, /metrics)."""
        try:
            rows = self._rows("SELECT id, repo, env, source, alert, actor, reason, created_at, expires_at FROM env_locks"
                              " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id", (now,))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return []
        return [Lock.of(tuple(r)) for r in rows]

    def alert_locked(self, alert: str, repo: str, env: str) -> bool:
        """Does this alert (name and labels) hold a freeze on `env` of `repo` still?"""
        return bool(self._rows("SELECT 1 FROM env_locks WHERE lifted_at IS NULL AND source = 'alert' AND alert = ?"
                               " AND repo = ? AND env = ?", (alert, repo, env)))

    def break_glass(self, repo: str, env: str, now: float) -> BreakGlass | None:
        """The confirmed break-glass override in force on `env` of `repo` now, if any."""
        try:
            rows = self._rows(ACTIVE_BREAK_GLASS, (repo, env, now))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return None
        return BreakGlass(*tuple(rows[0])) if rows else None

    def ask_break_glass(self, *, repo: str, env: str, asked_by: str, reason: str, now: float, confirm_within: float,
                        lasts: float) -> int:
        cur = self._write("INSERT INTO break_glass (repo, env, asked_by, reason, asked_at, confirm_before, lasts)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)", (repo, env, asked_by, reason, now, now + confirm_within, lasts))
        return int(cur.lastrowid or 0)

    def break_glass_request(self, request_id: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM break_glass WHERE id = ?", (request_id,))
        return dict(rows[0]) if rows else None

    def break_glass_requests(self, now: float) -> list[dict[str, Any]]:
        """Break-glass requests still waiting for their second person, or confirmed and in force, oldest first."""
        try:
            rows = self._rows("SELECT * FROM break_glass WHERE (confirmed_by IS NULL AND confirm_before > ?)"
                              " OR expires_at > ? ORDER BY id", (now, now))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return []
        return [dict(r) for r in rows]

    def confirm_break_glass(self, request_id: int, *, by: str, reason: str | None, now: float) -> bool:
        """Confirm an unconfirmed, unlapsed request; False when someone else did first or it lapsed."""
        return self._write("UPDATE break_glass SET confirmed_by = ?, confirm_reason = ?, confirmed_at = ?,"
                           " expires_at = ? + lasts WHERE id = ? AND confirmed_by IS NULL AND confirm_before > ?",
                           (by, reason, now, now, request_id, now)).rowcount == 1

    # -- suspensions and sync requests (operators' commands) ------------------------------------------
    def suspend(self, repo: str, env: str, *, actor: str, reason: str | None, now: float) -> None:
        self._write("INSERT OR REPLACE INTO env_suspensions (repo, env, actor, reason, since) VALUES (?, ?, ?, ?, ?)",
                    (repo, env, actor, reason, now))

    def resume(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM env_suspensions WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    def suspension(self, repo: str, env: str) -> Hold | None:
        try:
            rows = self._rows("SELECT * FROM env_suspensions WHERE repo = ? AND env = ?", (repo, env))
        except sqlite3.OperationalError:   # a store written by an older daemon, read by `status`
            return None
        return Hold(rows[0]["actor"], rows[0]["reason"], rows[0]["since"]) if rows else None

    def request_sync(self, repo: str, env: str, *, commit: str, actor: str, reason: str | None, now: float) -> None:
        self._write("INSERT OR REPLACE INTO sync_requests (repo, env, commit_id, actor, reason, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (repo, env, commit, actor, reason, now))

    def sync_request(self, repo: str, env: str) -> Hold | None:
        try:
            rows = self._rows("SELECT * FROM sync_requests WHERE repo = ? AND env = ?", (repo, env))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return None
        r = rows[0] if rows else None
        return Hold(r["actor"], r["reason"], r["created_at"], r["commit_id"]) if r else None

    def clear_sync(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM sync_requests WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    # -- commit statuses (CI results, keyed by tree: gate/required.py) ----------------------------------
    def add_status(self, *, repo: str, commit: str, tree: str, context: str, state: str, reporter: str, now: float,
                   target_url: str | None = None, description: str | None = None) -> int:
        """Record a status report; the newest per (tree, context) is the one that counts."""
        assert state in required.STATES, state
        cur = self._write("INSERT INTO commit_statuses (repo, commit_id, tree, context, state, target_url, description,"
                          " reporter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (repo, commit, tree, context, state, target_url, description, reporter, now))
        return int(cur.lastrowid or 0)

    def statuses(self, repo: str, tree: str) -> list[required.Status]:
        """The newest status per context reported for `tree` (by any commit that has it), by context."""
        try:
            return required.rows_to_statuses([tuple(r) for r in self._rows(required.LATEST_BY_TREE, (repo, tree))])
        except sqlite3.OperationalError:   # a store written by an older daemon, read by `status`
            return []

    def status_history(self, repo: str, commit: str, limit: int = 100) -> list[required.Status]:
        """Every status reported for `commit` itself, newest first."""
        rows = self._rows("SELECT context, state, target_url, description, commit_id, reporter, created_at"
                          " FROM commit_statuses WHERE repo = ? AND commit_id = ? ORDER BY id DESC LIMIT ?",
                          (repo, commit, limit))
        return required.rows_to_statuses([tuple(r) for r in rows])

    # -- CI heads seen (gitopsd/ci/heads.py) ------------------------------------------------------------
    def ci_heads(self, repo: str) -> dict[str, str]:
        return {r["branch"]: r["commit_id"] for r in self._rows("SELECT branch, commit_id FROM ci_heads WHERE repo = ?",
                                                                (repo,))}

    @_bookkeeping
    def set_ci_heads(self, repo: str, heads: dict[str, str]) -> None:
        """Replace the CI heads seen in `repo` by `heads` (branch -> commit), in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM ci_heads WHERE repo = ?", (repo,))
                self._db.executemany("INSERT INTO ci_heads (repo, branch, commit_id) VALUES (?, ?, ?)",
                                     [(repo, b, c) for b, c in heads.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- human gates: sign-offs, release candidates, approvals (gate/approvals.py) ------------------------
    def _human(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return [tuple(r) for r in self._rows(sql, args)]
        except sqlite3.OperationalError:   # a store written by an older daemon, read by a command
            return []

    def signoffs(self, repo: str, env: str, tree: str) -> list[tuple[str, str, str, float]]:
        return self._human(approvals.SIGNOFFS, (repo, env, tree))

    def rcs_for_tree(self, repo: str, tree: str, target_env: str) -> list[tuple[str, float]]:
        return self._human(approvals.RCS_FOR_TREE, (repo, tree, target_env))

    def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]:
        return self._human(approvals.APPROVALS, (repo, rc))

    def add_signoff(self, *, repo: str, env: str, commit: str, tree: str, actor: str, verdict: str, note: str,
                    now: float) -> int:
        assert verdict in ("signoff", "reject", "withdraw"), verdict
        return int(self._write("INSERT INTO signoffs (repo, env, commit_id, tree, actor, verdict, note, created_at)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (repo, env, commit, tree, actor, verdict, note, now)).lastrowid or 0)

    def add_rc(self, *, repo: str, name: str, commit: str, tree: str, source_env: str, target_env: str,
               created_by: str, self_identities: list[str], now: float) -> bool:
        """Record a release candidate; False if the name is taken."""
        try:
            self._write("INSERT INTO release_candidates (repo, name, commit_id, tree, source_env, target_env, created_by,"
                        " created_at, self_identities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (repo, name, commit, tree, source_env, target_env, created_by, now, "\n".join(self_identities)))
        except sqlite3.IntegrityError:
            return False
        return True

    # -- promotion previews (gitopsd/services/previews.py; the rule binding approvals to them: gate/approvals.py) ------------
    def add_preview(self, *, repo: str, source_env: str, target_env: str, commit: str, tree: str, rc: str,
                    target_deployment: int, requested_by: str, now: float) -> int:
        return int(self._write(
            "INSERT INTO previews (repo, source_env, target_env, commit_id, tree, rc, target_deployment, requested_by,"
            " requested_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
            (repo, source_env, target_env, commit, tree, rc, target_deployment, requested_by, now)).lastrowid or 0)

    def update_preview(self, preview_id: int, *, state: str, now: float | None = None, reason: str | None = None,
                       digest: str = "", result: str = "{}", target_deployment: int | None = None) -> None:
        """A preview starts (running: the target's deployment it runs against) or ends (done | failed)."""
        if state == "running":
            self._write("UPDATE previews SET state = 'running', target_deployment = ? WHERE id = ?",
                        (target_deployment or 0, preview_id))
            return
        self._write("UPDATE previews SET state = ?, finished_at = ?, reason = ?, digest = ?, result = ? WHERE id = ?",
                    (state, now, reason, digest, result, preview_id))

    def previews(self, repo: str, *, rc: str | None = None, target_env: str | None = None, preview_id: int | None = None,
                 limit: int = 20) -> list[dict[str, Any]]:
        """Previews newest first, of a release candidate, a target environment or one by id."""
        where, args = ["repo = ?"], [repo]   # type: tuple[list[str], list[Any]]
        for column, value in (("rc", rc), ("target_env", target_env), ("id", preview_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        try:
            rows = self._rows(f"SELECT * FROM previews WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",  # noqa: S608 (constant clauses; values are bound)
                              (*args, limit))
        except sqlite3.OperationalError:   # a store written by an older daemon, read by a command
            return []
        return [dict(r) for r in rows]

    def target_deployment(self, repo: str, env: str, tree: str) -> int:
        """What a preview of `tree` runs against: `env`'s newest successful deployment of another tree (0: none)."""
        rows = self._human(approvals.TARGET_DEPLOYED, (repo, env, tree))
        return int(rows[0][0] or 0) if rows else 0

    def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list[tuple[int, int, float, str]], int, float | None]:
        """(finished previews of `rc` for `env` newest first, its deployed deployment now, when it last drifted)."""
        rows = self._human(approvals.PREVIEW_MARKS, (repo, rc, env))
        marks = [(int(a), int(b), float(c), str(d)) for a, b, c, d, _tree in rows]
        deployed = self._human(approvals.TARGET_DEPLOYED, (repo, env, str(rows[0][4]) if rows else ""))
        drifted = self._human(approvals.TARGET_DRIFTED, (repo, env))
        return (marks, int(deployed[0][0] or 0) if deployed else 0,
                float(drifted[0][0]) if drifted and drifted[0][0] is not None else None)

    def rc(self, repo: str, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM release_candidates WHERE repo = ? AND name = ?", (repo, name))
        return dict(rows[0]) if rows else None

    def rcs(self, repo: str, limit: int = 50) -> list[dict[str, Any]]:
        """Release candidates, newest first."""
        try:
            rows = self._rows("SELECT * FROM release_candidates WHERE repo = ? ORDER BY created_at DESC LIMIT ?",
                              (repo, limit))
        except sqlite3.OperationalError:
            return []
        return [dict(r) for r in rows]

    def add_approval(self, *, repo: str, rc: str, tree: str, actor: str, kind: str, note: str, now: float) -> int:
        assert kind in ("approve", "reject", "withdraw"), kind
        return int(self._write("INSERT INTO approvals (repo, rc, tree, actor, kind, note, created_at)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?)", (repo, rc, tree, actor, kind, note, now)).lastrowid or 0)

    def record_push(self, repo: str, branch: str, commit: str, pusher: str, now: float) -> None:
        """Remember who pushed a head to a non-environment branch (self-approval looks it up)."""
        self._write("INSERT OR IGNORE INTO pushes (repo, commit_id, branch, pusher, pushed_at) VALUES (?, ?, ?, ?, ?)",
                    (repo, commit, branch, pusher, now))

    def pushers(self, repo: str, commits: list[str]) -> set[str]:
        """Who pushed any of `commits` (as heads of non-environment branches)."""
        found: set[str] = set()
        for start in range(0, len(commits), 500):
            chunk = commits[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found |= {r["pusher"] for r in self._rows(
                f"SELECT DISTINCT pusher FROM pushes WHERE repo = ? AND commit_id IN ({marks})", (repo, *chunk))}  # noqa: S608 (placeholders only; values are bound)
        return found

    # -- what `history` shows of the human gates: a fixed number of queries per page, none per row -------------
    def rcs_with_approvals(self, keys: list[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
        """(repo, target_env, tree, name, created_at, actor, kind, at) of the release candidates for these
        (repo, target environment, tree), each with its approvals oldest first (actor None when it has none)."""
        return self._by_keys("SELECT c.repo, c.target_env, c.tree, c.name, c.created_at, a.actor, a.kind, a.created_at"
                             " FROM k JOIN release_candidates c ON c.repo = k.repo AND c.tree = k.tree"
                             " AND c.target_env = k.env LEFT JOIN approvals a ON a.repo = c.repo AND a.rc = c.name"
                             " ORDER BY c.created_at, a.id", keys)

    def signoffs_of(self, keys: list[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
        """(repo, env, tree, actor, verdict, note, at) of the sign-offs of these (repo, env, tree), oldest first."""
        return self._by_keys("SELECT s.repo, s.env, s.tree, s.actor, s.verdict, s.note, s.created_at FROM k"
                             " JOIN signoffs s ON s.repo = k.repo AND s.env = k.env AND s.tree = k.tree ORDER BY s.id",
                             keys)

    def _by_keys(self, select: str, keys: list[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
        """`select` over the table k(repo, env, tree) of `keys`: joined from k, the indexes serve each key
        (a row-value IN scanned the whole table)."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), 300):   # 900 bound values per statement, under SQLite's old 999 limit
            chunk = keys[start:start + 300]
            values = ",".join(["(?, ?, ?)"] * len(chunk))
            rows += self._human(f"WITH k(repo, env, tree) AS (VALUES {values}) {select}",  # noqa: S608 (placeholders and constants; values are bound)
                                tuple(v for key in chunk for v in key))
        return rows

    # -- DORA: when commits first reached the server and which deployment brought each to an environment --------
    def seen_tips(self, repo: str) -> list[str] | None:
        """The branch heads at the last walk for new commits; None before the first walk (firstseen.py)."""
        try:
            rows = self._rows("SELECT tips FROM seen_refs WHERE repo = ?", (repo,))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return None
        return rows[0]["tips"].split() if rows else None

    @_bookkeeping
    def record_seen(self, repo: str, commits: list[tuple[str, str]], at: float, tips: list[str]) -> None:
        """Record (commit, via) first seen at `at` (an earlier record wins) and the heads walked to, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO commits_seen (repo, commit_id, first_seen, via)"
                                     " VALUES (?, ?, ?, ?)", [(repo, c, at, via) for c, via in commits])
                self._db.execute("INSERT OR REPLACE INTO seen_refs (repo, tips) VALUES (?, ?)", (repo, "\n".join(tips)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @_bookkeeping
    def record_deployed_commits(self, d: Deployment, commits: list[str], not_changes: tuple[str, ...]) -> None:
        """Remember that deployment `d` brought `commits` to its environment (the first that did keeps the record),
        with each one's lead time: from when it first reached the server (else, for a commit seen before that was
        recorded, its first deployment's start anywhere) to `d`'s end. None for commits whose `via` is in
        `not_changes` (gitopsd made them)."""
        end = d.finished_at or d.started_at
        marks = ",".join(f"?{7 + i}" for i in range(len(not_changes))) or "NULL"   # after ?1 to ?6 below
        sql = ("INSERT OR IGNORE INTO commits_deployed (repo, env, commit_id, deployment_id, deployed_at, lead)"  # noqa: S608 (placeholders only)
               f" SELECT ?1, ?2, ?3, ?4, ?5, CASE WHEN s.via IN ({marks}) THEN NULL ELSE ?5 - MIN(?6, COALESCE("  # noqa: S608 (placeholders only; values are bound)
               " s.first_seen, (SELECT MIN(d.started_at) FROM commits_deployed c JOIN deployments d"
               " ON d.id = c.deployment_id WHERE c.repo = ?1 AND c.commit_id = ?3), ?6)) END"
               " FROM (SELECT 1) AS one LEFT JOIN commits_seen s ON s.repo = ?1 AND s.commit_id = ?3")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, [(d.repo, d.env, c, d.id, end, d.started_at, *not_changes) for c in commits])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def dora_deployments(self, repo: str | None, env: str, since: float) -> list[tuple[Any, ...]]:
        """(repo, is a rollback, succeeded, commit, started_at, finished_at) of `env`'s deploys and rollbacks that
        succeeded or failed, started since `since`, by repository and id (dora.py computes the figures)."""
        where = ("env = ? AND started_at >= ? AND kind IN ('deploy', 'rollback') AND result IN ('succeeded', 'failed')"
                 + (" AND repo = ?" if repo else ""))
        return self._plain("SELECT repo, kind = 'rollback', result = 'succeeded', commit_id, started_at,"  # noqa: S608 (constant clauses; values are bound)
                           f" COALESCE(finished_at, started_at) FROM deployments WHERE {where} ORDER BY repo, id",
                           (env, since, *([repo] if repo else [])))

    def dora_first_deployment(self, repo: str | None, env: str) -> float | None:
        """When `env` (in `repo`, or in any repository) was first deployed: a younger history is measured from there."""
        rows = self._plain("SELECT MIN(started_at) FROM deployments WHERE env = ?" + (" AND repo = ?" if repo else ""),  # noqa: S608 (constant clauses)
                           (env, *([repo] if repo else [])))
        return rows[0][0] if rows else None

    def dora_lead_times(self, repo: str | None, env: str, since: float) -> list[float]:
        """The lead times (seconds) of the changes that deployments ending since `since` brought to `env` first."""
        return [lead for (lead,) in self._plain(
            "SELECT lead FROM commits_deployed WHERE env = ? AND deployed_at >= ? AND lead IS NOT NULL"  # noqa: S608 (constant clauses)
            + (" AND repo = ?" if repo else ""), (env, since, *([repo] if repo else [])))]

    def _plain(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows as plain tuples (many rows: sqlite3.Row costs more), [] for a store written by an older daemon."""
        try:
            with self._lock:
                cur = self._db.cursor()
                cur.row_factory = None
                return cur.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []

    # -- aggregates for /metrics (gitopsd/services/metrics.py): a few grouped reads over id ranges, none per row -----------
    def deployment_ids(self, after: int) -> tuple[int, list[tuple[int, str, str, str]]]:
        """(highest id, [(id, repo, env, result)] of deployments above `after` still queued or running)."""
        top = self._rows("SELECT COALESCE(MAX(id), 0) FROM deployments")[0][0]
        active = self._rows("SELECT id, repo, env, result FROM deployments WHERE id > ? AND id <= ?"
                            " AND result IN ('queued', 'running') ORDER BY id", (after, top))
        return int(top), [(int(r[0]), r[1], r[2], r[3]) for r in active]

    def deployment_totals(self, after: int, upto: int, bounds: tuple[float, ...]) -> list[tuple[Any, ...]]:
        """Finished deployments with ids in (after, upto], grouped: (repo, env, kind, result, automatic, bucket,
        count, seconds, last success), `bucket` the index of the first of `bounds` the duration is within."""
        case = " ".join(f"WHEN finished_at - started_at <= {float(b)!r} THEN {i}" for i, b in enumerate(bounds))
        return [tuple(r) for r in self._rows(
            f"SELECT repo, env, kind, result, trigger = 'auto-rollback', CASE {case} ELSE {len(bounds)} END AS bucket,"  # noqa: S608 (numbers formatted from floats; values are bound)
            " COUNT(*), SUM(finished_at - started_at),"
            " MAX(CASE WHEN result = 'succeeded' THEN finished_at END) FROM deployments"
            " WHERE id > ? AND id <= ? AND result NOT IN ('queued', 'running')"
            " GROUP BY repo, env, kind, result, trigger = 'auto-rollback', bucket", (after, upto))]

    def lead_times(self, after: int, upto: int, bounds: tuple[float, ...]) -> list[tuple[Any, ...]]:
        """(repo, env, bucket, count, seconds) of the lead times of the commits that successful deployments with
        ids in (after, upto] brought to an environment first: from when each commit first reached the server to
        that deployment's end (table commits_deployed, as `gitopsd dora` counts them)."""
        case = " ".join(f"WHEN lead <= {float(b)!r} THEN {i}" for i, b in enumerate(bounds))
        try:
            return [tuple(r) for r in self._rows(
                f"SELECT repo, env, CASE {case} ELSE {len(bounds)} END AS bucket, COUNT(*), SUM(lead)"  # noqa: S608 (numbers formatted from floats; values are bound)
                " FROM commits_deployed WHERE deployment_id > ? AND deployment_id <= ? AND lead IS NOT NULL"
                " GROUP BY repo, env, bucket", (after, upto))]
        except sqlite3.OperationalError:   # a store without commits_deployed (older daemon)
            return []

    def check_totals(self, after: int, upto: int) -> list[tuple[Any, ...]]:
        """(repo, env, type, passed, count) of the checks recorded by finished deployments with ids in (after, upto];
        `type` is the first word of the check's name (http, prometheus, playbook)."""
        return [tuple(r) for r in self._rows(self.dialect.CHECK_TOTALS, (after, upto))]

    # -- post-deploy watches and drift detection (core/reconcile.py) ---------------------------------------------
    @_bookkeeping
    def start_watch(self, watch: WatchWindow) -> None:
        """Record the watch of a deployment, replacing the environment's previous one."""
        self._write("INSERT OR REPLACE INTO watches (repo, env, deployment_id, commit_id, tree, previous_tree, started_at,"
                    " until, state, reason, hosts, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (watch.repo, watch.env, watch.deployment_id, watch.commit, watch.tree, watch.previous_tree,
                     watch.started_at, watch.until, watch.state, watch.reason,
                     json.dumps([[h.name, h.vars] for h in watch.hosts]), watch.checked_at))

    def watch(self, repo: str, env: str) -> WatchWindow | None:
        """The environment's last post-deploy watch (any state), None when it never had one."""
        try:
            rows = self._rows("SELECT * FROM watches WHERE repo = ? AND env = ?", (repo, env))
        except sqlite3.OperationalError:   # a store written by an older daemon
            return None
        return self._watch(rows[0]) if rows else None

    def active_watches(self) -> list[WatchWindow]:
        """Watches still `watching`: a restarted daemon resumes them (or ends those whose time ran out)."""
        return [self._watch(r) for r in self._rows("SELECT * FROM watches WHERE state = 'watching' ORDER BY until")]

    def end_watch(self, repo: str, env: str, deployment_id: int, state: str, reason: str, now: float) -> bool:
        """End a running watch of this deployment as passed, breached or ended; False if it was not running."""
        return self._write("UPDATE watches SET state = ?, reason = ?, checked_at = ? WHERE repo = ? AND env = ?"
                           " AND deployment_id = ? AND state = 'watching'",
                           (state, reason, now, repo, env, deployment_id)).rowcount > 0

    @_bookkeeping
    def watch_checked(self, repo: str, env: str, deployment_id: int, now: float) -> None:
        self._write("UPDATE watches SET checked_at = ? WHERE repo = ? AND env = ? AND deployment_id = ?",
                    (now, repo, env, deployment_id))

    @staticmethod
    def _watch(row: sqlite3.Row) -> WatchWindow:
        hosts = tuple(HostInfo(str(name), {str(k): str(v) for k, v in values.items()})
                      for name, values in json.loads(row["hosts"] or "[]"))
        return WatchWindow(row["repo"], row["env"], row["deployment_id"], row["commit_id"], row["tree"],
                           row["previous_tree"], row["started_at"], row["until"], row["state"], row["reason"], hosts,
                           row["checked_at"])

    def add_drift_report(self, report: DriftReport) -> int:
        cur = self._write("INSERT INTO drift_reports (repo, env, deployment_id, checked_at, state, reason, hosts, changes)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (report.repo, report.env, report.deployment_id, report.checked_at, report.state,
                           report.reason, len(report.hosts) if report.state == "drifted" else 0,
                           json.dumps([c.as_json() for c in report.changes])))
        # The last 50 per environment are plenty for `gitopsd drift`; older reports go.
        self._write("DELETE FROM drift_reports WHERE repo = ? AND env = ? AND state != 'baseline' AND id < (SELECT id"
                    " FROM drift_reports WHERE repo = ? AND env = ? ORDER BY id DESC LIMIT 1 OFFSET 49)",
                    (report.repo, report.env, report.repo, report.env))
        return int(cur.lastrowid or 0)

    def drift_report(self, repo: str, env: str, deployment_id: int | None = None) -> DriftReport | None:
        """The environment's newest drift report (of that deployment, when given)."""
        where, args = "repo = ? AND env = ?", [repo, env]   # type: tuple[str, list[Any]]
        if deployment_id is not None:
            where, args = where + " AND deployment_id = ?", [*args, deployment_id]
        try:
            rows = self._rows(f"SELECT * FROM drift_reports WHERE {where} ORDER BY id DESC LIMIT 1", tuple(args))  # noqa: S608 (constant clauses; values are bound)
        except sqlite3.OperationalError:   # a store written by an older daemon
            return None
        return self._drift_report(rows[0]) if rows else None

    def drift_baseline(self, repo: str, env: str, deployment_id: int) -> DriftReport | None:
        """The baseline run of this deployment: the first successful check-mode run after it."""
        rows = self._rows("SELECT * FROM drift_reports WHERE repo = ? AND env = ? AND deployment_id = ?"
                          " AND state = 'baseline' ORDER BY id LIMIT 1", (repo, env, deployment_id))
        return self._drift_report(rows[0]) if rows else None

    def drifted_hosts(self) -> dict[tuple[str, str], int]:
        """(repo, env) -> how many hosts drifted, from each environment's newest report about what it runs now
        (a report about an older deployment counts 0). For the Prometheus metric."""
        try:
            rows = self._rows(
                "SELECT r.repo, r.env, CASE WHEN r.state = 'drifted' AND r.deployment_id = (SELECT MAX(d.id) FROM"
                " deployments d WHERE d.repo = r.repo AND d.env = r.env AND d.result = 'succeeded') THEN r.hosts"
                " ELSE 0 END FROM drift_reports r"
                " WHERE r.id = (SELECT MAX(id) FROM drift_reports x WHERE x.repo = r.repo AND x.env = r.env)")
        except sqlite3.OperationalError:   # a store written by an older daemon
            return {}
        return {(r[0], r[1]): int(r[2]) for r in rows}

    @staticmethod
    def _drift_report(row: sqlite3.Row) -> DriftReport:
        return DriftReport(row["repo"], row["env"], row["deployment_id"], row["checked_at"], row["state"], row["reason"],
                           tuple(TaskChange.from_json(c) for c in json.loads(row["changes"] or "[]")), row["id"])
