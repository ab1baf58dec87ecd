"""The state store: deployments and everything the daemon keeps beside them, in SQLite (WAL) or in PostgreSQL.

Readers (hooks, `gitopsd status`) never block the daemon. Every write is one short transaction,
so a daemon killed at any instant leaves a consistent store; a deployment still `running` when
the daemon starts again was interrupted.

The store runs its statements on a backend (store/backend.py): SQLite (store/sqlite.py) by default, with
`database: postgresql://...` PostgreSQL (store/postgresql.py), which also keeps the pre-receive hook's
read model in a local SQLite file. The schema is versioned (store/schema.py).
`Store` opens the connection and composes the queries, grouped by concern in this package's modules
(deployments, holds, checks, human, ledger, watches, trees); every caller calls them on the one `Store`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ...base.storeerrors import DatabaseFailure, StatementFailure, StoreUnusable, postgresql_missing
from ...core.types import Block, Deployment, DriftReport, FailureStatus, Hold, WatchWindow
from ...gate import snapshot
from ...gate.locks import Lock
from .. import ownership
from . import schema as migrations
from .backend import Backend, Row
from .base import errors_translated, file_identity
from .checks import Checks
from .deployments import Deployments
from .holds import Holds
from .human import Human
from .ledger import Ledger
from .schema import full_schema
from .sqlite import SQLiteBackend
from .trees import Trees
from .watches import Watches

# How long the daemon's writes wait for a PostgreSQL that went away (restart, failover) before failing.
PG_WRITE_RETRY = 600.0


class DaemonSeen(NamedTuple):
    """A daemon that said it was alive in a shared PostgreSQL database, and how long ago by the database's clock."""

    name: str  # host:state_dir
    role: str  # leader | standby
    epoch: int
    pid: int
    api: str  # its HTTP API's address, '' for none
    seen_ago: float


Pair = tuple[str, str]  # (repo, env)


@dataclass(frozen=True)
class EnvironmentRecords:
    """Every environment's records `status` reads, read at once (Store.environment_records): a field per table."""

    covered: set[Pair]  # the environments env_heads holds: last, deployed and drift are complete for these
    last: dict[Pair, Deployment]
    deployed: dict[Pair, Deployment]
    drift: dict[Pair, DriftReport]
    failure: dict[Pair, FailureStatus]
    blocked: dict[Pair, Block]
    suspension: dict[Pair, Hold]
    watch: dict[Pair, WatchWindow]
    bad_trees: dict[tuple[str, str, str], str]  # (repo, env, tree) -> why it failed there
    locks: list[Lock]  # every lock in force


@errors_translated
class Store(Deployments, Holds, Checks, Human, Ledger, Watches, Trees):
    """The daemon's state. Safe to share between the daemon's threads. Raises StoreError, never a driver's error.

    SQLite at `path` by default; with `url` (postgresql://...), PostgreSQL, and `path` is then the local
    SQLite file the pre-receive hook reads (written by a writable store only).
    """

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        url: str = "",
        retry_for: float | None = None,
        hook_copy: bool = True,
        epoch: int | None = None,
    ):
        self.path = Path(path)
        self.fenced = threading.Event()  # set when PostgreSQL refused a deployment record: another daemon leads
        self.epoch = epoch
        self.url = url
        self.location = str(self.path)
        self._lock = threading.Lock()
        self.versions = (migrations.LATEST, migrations.LATEST)  # the schema's version before and after opening
        self.lost: str | None = None  # let_go(): why this store writes nothing more
        self._unrecorded: dict[int, tuple[str, float, str | None]] = {}  # deployments that ended after let_go()
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the SQLite file a writable store opened
        self._reader = readonly and not url  # a read-only SQLite store: opened again once if a read fails (_rows)
        if url:
            retry = PG_WRITE_RETRY if retry_for is None and not readonly else retry_for or 0.0
            self._open_postgresql(readonly, retry, hook_copy)
            return
        if readonly:
            self._open_reader()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._use(SQLiteBackend.open(self.path))
        self.versions = self._upgrade(self._db)
        self.identity = file_identity(self.path)  # the file this connection writes: see replaced()
        # Made by root (init, install-hooks, db upgrade) in the service's state folder: the service's, not root's.
        ownership.hand_over(
            [self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")], ownership.daemon_account(self.path.parent)
        )

    def _open_reader(self) -> None:
        """The read-only connection of a command (see snapshot.connect_readonly: readers in the daemon's group)."""
        db = SQLiteBackend.reader(self.path, full_schema())
        old: Backend | None = getattr(self, "_db", None)
        if old is not None:
            old.close()
        self._use(db)

    def _use(self, db: Backend) -> None:
        self._db, self.dialect = db, db.dialect

    @classmethod
    def of(cls, config: Any, *, readonly: bool = False, epoch: int | None = None) -> Store:
        """The store a loaded configuration names: `database:` (PostgreSQL) or the SQLite file in state_dir.

        `epoch`: the leader's (gitopsd/daemon/leadership.py), written with each deployment row it records."""
        return cls(config.database, readonly=readonly, url=getattr(config, "database_url", ""), epoch=epoch)

    def _upgrade(self, db: Backend) -> tuple[int, int]:
        try:
            return migrations.upgrade(db, full_schema())
        except ValueError as exc:  # written by a newer gitopsd
            raise DatabaseFailure(f"{self.location}: {exc}") from exc

    def _open_postgresql(self, readonly: bool, retry_for: float, hook_copy: bool) -> None:
        """PostgreSQL at self.url; a writable store also keeps the hook's read model at self.path, copied whole now."""
        try:
            from . import postgresql as pgstore
        except ImportError as exc:  # PostgreSQL is an extra (pyproject's `postgresql`): say what to install
            raise StoreUnusable(f"cannot use the PostgreSQL state database: {postgresql_missing(exc)}") from None
        self.location = pgstore.redact(self.url)
        mirror = None
        if not readonly and hook_copy:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mirror = SQLiteBackend.open(self.path)
            migrations.upgrade(mirror, full_schema())
        try:
            pg = pgstore.PostgreSQLBackend(
                self.url, full_schema(), retry_for=retry_for, mirror=mirror, max_size=2 if readonly else 4, epoch=self.epoch
            )
        except BaseException:
            if mirror is not None:
                mirror.close()
            raise
        self._use(pg)
        self._mirror = mirror
        if not readonly:
            self.versions = self._upgrade(pg)
            pg.resync_mirror()
        elif migrations.current(pg) == 0:  # no daemon wrote here yet: nothing recorded, as a missing SQLite file
            pg.close()
            self._use(SQLiteBackend.empty(full_schema()))

    @property
    def backend(self) -> str:
        return self.dialect.name

    def data_version(self) -> int | None:
        """A number that moves whenever another connection commits (SQLite's PRAGMA data_version): /metrics renders
        again only then (services/exposition.py); None where there is none (PostgreSQL)."""
        if self.url:
            return None
        try:
            return int(self._rows("PRAGMA data_version")[0][0])
        except DatabaseFailure:
            return None

    def replaced(self) -> str | None:
        """Why the SQLite file at `path` is no longer the one this writable store opened (one os.stat), or None.

        A deleted or replaced state.db would otherwise be recreated empty by the next opener, the history gone."""
        if self.identity is None:  # PostgreSQL, or a reader
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
            except DatabaseFailure:
                pass  # a reader's snapshot holds the log: the rescue copy has the records all the same

    def backup(self, target: Path) -> Path:
        """Copy this store, as it is now, to `target` (SQLite's online backup; atomic, mode 0640); return `target`."""
        if self.backend != "sqlite":
            raise StoreUnusable("backups are for SQLite state databases; back up PostgreSQL with pg_dump")
        assert isinstance(self._db, SQLiteBackend)
        with self._lock:
            return self._db.backup(target)

    def refresh_hook_copy(self) -> None:
        """Copy the records the pre-receive hook reads into its SQLite file again (a standby's, now and then)."""
        resync = getattr(self._db, "resync_mirror", None)
        if resync is not None:
            with self._lock:
                resync()

    # -- the daemons sharing a PostgreSQL database (gitopsd/daemon/leadership.py) ------------------------------
    def daemons(self) -> list[DaemonSeen]:
        """Each daemon that said it was alive here: name, role, epoch, pid, api, seconds since it did (PostgreSQL)."""
        if self.backend != "postgresql":
            return []
        rows = self._rows(
            "SELECT name, role, epoch, pid, api, extract(epoch from now()) - seen_at AS age FROM daemons ORDER BY role, name"
        )  # the age by the database's clock: the daemons' may differ
        return [
            DaemonSeen(str(r["name"]), str(r["role"]), int(r["epoch"]), int(r["pid"]), str(r["api"]), max(0.0, float(r["age"])))
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:  # after a query another thread is in (the metrics' rendering at the daemon's stop)
            self._db.close()
        mirror: Backend | None = getattr(self, "_mirror", None)
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
        with self._transaction() as db:
            moved = self.dialect.id_floor(db, "deployments", n)
        return n + 1 if moved else None

    def save_gate(self, gate_config: snapshot.GateConfig) -> None:
        """Save the pre-receive hook's snapshot of the configuration (see gate/snapshot.py)."""
        with self._transaction() as db:
            snapshot.write(db, gate_config, time.time())

    def environment_records(self, now: float, repos: list[str] | None = None) -> EnvironmentRecords | None:
        """Every environment's records `status` reads, one query per table instead of ten per environment (issue 28).

        last, deployed, drift: {(repo, env): row} for the environments in `covered` (those env_heads holds), found
        through the (repo, env, id) indexes; failure, blocked, suspension, watch: {(repo, env): row}, bad_trees:
        {(repo, env, tree): reason}, locks: every lock in force at `now`. None from a store older than these tables.
        `repos`: those repositories' records only (a dashboard page of them), each table read as far as its repo.
        """
        only, args = ("", ()) if repos is None else (f" WHERE repo IN ({', '.join('?' * len(repos))})", tuple(repos))
        newest = (
            "SELECT * FROM {0} WHERE id IN (SELECT (SELECT max(id) FROM {0} AS x WHERE x.repo = h.repo"
            " AND x.env = h.env{1}) FROM env_heads AS h{2})"
        )
        pair = lambda r: (r["repo"], r["env"])  # noqa: E731
        try:
            return self._environment_records(newest, pair, now, only, args)
        except StatementFailure:  # a store written by an older daemon, read by `status`
            return None

    def _environment_records(
        self, newest: str, pair: Callable[[Row], Pair], now: float, only: str = "", args: tuple[str, ...] = ()
    ) -> EnvironmentRecords:

        def where(sql: str) -> list[Row]:
            return self._rows(sql + only, args)  # `only`: a WHERE of bound placeholders, or nothing

        last = {d.id: d for d in map(self._deployment, self._rows(newest.format("deployments", "", only), args))}
        return EnvironmentRecords(
            covered={pair(r) for r in where("SELECT repo, env FROM env_heads")},
            last={(d.repo, d.env): d for d in last.values()},
            deployed={
                pair(r): last.get(r["id"]) or self._deployment(r)  # mostly the last one: parsed once
                for r in self._rows(newest.format("deployments", " AND x.result = 'succeeded'", only), args)
            },
            drift={pair(r): self._drift_report(r) for r in self._rows(newest.format("drift_reports", "", only), args)},
            failure={
                pair(r): FailureStatus(
                    r["commit_id"], r["failures"], r["next_retry_at"], bool(r["stalled"]), r["reason"], failed=r["stalled"] == 2
                )
                for r in where("SELECT * FROM env_status")
            },
            blocked={
                pair(r): Block(r["commit_id"], r["deployed_commit"], r["reason"], r["since"])
                for r in where("SELECT * FROM env_blocks")
            },
            suspension={pair(r): Hold(r["actor"], r["reason"], r["since"]) for r in where("SELECT * FROM env_suspensions")},
            watch={pair(r): self._watch(r) for r in where("SELECT * FROM watches")},
            bad_trees={
                (r["repo"], r["env"], r["tree"]): r["reason"] for r in where("SELECT repo, env, tree, reason FROM bad_trees")
            },
            locks=self.all_locks(now),
        )
