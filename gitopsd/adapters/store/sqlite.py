"""SQLite under the store (the default backend): the `Backend` of backend.py over one sqlite3 connection.

The store's one importer of sqlite3, but for the hook's snapshot (gate/), which the store writes
through this backend too. sqlite3's errors become the store's own here (`failure`), classified by
base/storeerrors as the hook classifies them. Also used for the pre-receive hook's SQLite file a
PostgreSQL store keeps (postgresql.py), and for backups (adapters/backups.py: read_only, backup).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...base.storeerrors import DatabaseFailure, IntegrityFailure, StatementFailure, classify
from ...gate import snapshot
from .backend import Backend, Dialect, Result, Row
from .dialect import SQLite

T = TypeVar("T")


def failure(exc: sqlite3.Error) -> DatabaseFailure:
    """sqlite3's error as the store's own, its words and kind kept."""
    cls = (
        IntegrityFailure
        if isinstance(exc, sqlite3.IntegrityError)
        else StatementFailure
        if isinstance(exc, sqlite3.OperationalError)
        else DatabaseFailure
    )
    return cls(str(exc), classify(exc))


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise failure(exc) from exc

    return wrapper


class SQLiteBackend:
    """One sqlite3 connection in autocommit mode (isolation_level None): transactions are BEGIN IMMEDIATE ... COMMIT."""

    name = "sqlite"

    def __init__(self, db: sqlite3.Connection, location: str):
        self.connection, self.location = db, location
        self.dialect: Dialect = SQLite()
        db.row_factory = sqlite3.Row

    @classmethod
    @_translated
    def open(cls, path: Path) -> SQLiteBackend:
        """The writable database at `path` (made if missing), in WAL mode: readers never block the daemon."""
        db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return cls(db, str(path))

    @classmethod
    @_translated
    def reader(cls, path: Path, schema: str) -> SQLiteBackend:
        """A command's read-only connection to `path` (snapshot.connect_readonly); with no store there, an empty one."""
        db = snapshot.connect_readonly(str(path), check_same_thread=False)
        if (
            db is not None
            and db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deployments'").fetchone() is None
        ):
            db.close()  # a state.db without the store's tables (an older tool made it): nothing recorded, as no file
            db = None
        if db is None:
            return cls.empty(schema)
        return cls(db, str(path))

    @classmethod
    @_translated
    def read_only(cls, path: Path, timeout: float = 5.0) -> SQLiteBackend:
        """The SQLite file at `path`, read-only (a backup to check or copy from, the store while the daemon writes it)."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False, isolation_level=None)
        return cls(db, str(path))

    @classmethod
    @_translated
    def empty(cls, schema: str) -> SQLiteBackend:
        """A database in memory with `schema`'s tables and no rows: what a reader sees where nothing was recorded yet."""
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.executescript(schema)
        return cls(db, ":memory:")

    @_translated
    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Result:
        cur = self.connection.execute(sql, args)
        rows: list[Row] = cur.fetchall()
        return Result(rows, cur.rowcount, cur.lastrowid)

    @_translated
    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Result:
        cur = self.connection.executemany(sql, seq)
        return Result([], cur.rowcount)

    @_translated
    def plain(self, sql: str, args: Sequence[Any] = (), /) -> list[tuple[Any, ...]]:
        cur = self.connection.cursor()
        cur.row_factory = None
        return cur.execute(sql, args).fetchall()

    @_translated
    def script(self, statements: str, /) -> None:
        self.connection.executescript(statements)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Backend]:
        self.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:  # SQLite ends it itself on some errors (a full disk): its error is the news
                self.execute("ROLLBACK")
            raise

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    @_translated
    def close(self) -> None:
        self.connection.close()

    def data_version(self) -> int:
        """A number that moves whenever another connection commits (PRAGMA data_version)."""
        return int(self.execute("PRAGMA data_version").rows[0][0])

    @_translated
    def backup(self, target: Path) -> Path:
        return write_backup(self.connection, target)


def write_backup(source: sqlite3.Connection, target: Path) -> Path:
    """Copy the database of `source` into `target` with SQLite's backup API: to a temporary name, then renamed."""
    target = Path(target)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.close(fd)
        os.chmod(temp, 0o640)  # whatever the umask
        copy = sqlite3.connect(temp)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            copy.close()
        os.rename(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
