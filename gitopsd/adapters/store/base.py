"""What every part of the store shares: the backend, its lock, the one way to write and read, the error wrapper.

The query modules (deployments.py, holds.py, ...) are mixins of `StoreBase`; facade.py's `Store` composes them and
opens the backend (backend.py: SQLite or PostgreSQL). Every public method of the composed `Store` raises gitopsd's
StoreError kinds (`errors_translated`), made of the backends' DatabaseFailure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ...base.storeerrors import DatabaseFailure, StatementFailure, StoreFenced, StoreUnusable, translate
from .backend import Backend, Dialect, Result, Row

T = TypeVar("T")


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Raise a failure of the database (or of the file under it) as the StoreError storeerrors.translate makes of it."""

    @functools.wraps(method)
    def wrapper(self: StoreBase, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (DatabaseFailure, OSError) as exc:
            error = translate(self.location, exc)
            if isinstance(error, StoreFenced):  # another daemon leads: the daemon steps down (daemon.py)
                self.fenced.set()
            raise error from exc

    return wrapper


def bookkeeping(method: Callable[..., Any]) -> Callable[..., Any]:
    """The daemon's own bookkeeping: with the file lost (Store.let_go) there is nowhere to keep it, and nothing to say."""

    @functools.wraps(method)
    def wrapper(self: StoreBase, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            return None
        return method(self, *args, **kwargs)

    return wrapper


def errors_translated(cls: type[T]) -> type[T]:
    """Every method of the store, its mixins' included, raises gitopsd's own error kinds, never a driver's error (issue 11)."""
    methods: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):  # the most derived definition of each name wins, as for attributes
        methods.update(vars(klass))
    for name, attr in methods.items():
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


class StoreBase:
    """The connection and its lock, shared by the store's query mixins (facade.Store opens it)."""

    path: Path
    location: str
    fenced: threading.Event
    dialect: Dialect
    lost: str | None
    _db: Backend
    _lock: threading.Lock
    _reader: bool
    _unrecorded: dict[int, tuple[str, float, str | None]]

    def _open_reader(self) -> None:
        raise NotImplementedError  # facade.Store's: a read-only store opens its connection again

    def _write(self, sql: str, args: tuple[Any, ...] = (), *more: tuple[str, tuple[Any, ...]]) -> Result:
        """Run one statement (and `more`, as (sql, args), in the same transaction: all or none); return its result."""
        with self._lock:
            if self.lost is not None:
                raise StoreUnusable(f"{self.lost}: nothing more is recorded until it is restored")
            with self._db.transaction() as db:
                result = db.execute(sql, args)
                for then in more:
                    db.execute(*then)
                return result

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Backend]:
        """One write transaction under the store's lock, for writes of several statements (Backend.transaction)."""
        with self._lock, self._db.transaction() as db:
            yield db

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except DatabaseFailure:
                if not self._reader:
                    raise
                # A reader that found no write-ahead log reads the file as immutable (snapshot.connect_readonly); a
                # daemon starting meanwhile can change it under that reader. Opened again, it reads the log too.
                self._open_reader()
                return self._db.execute(sql, args).fetchall()

    def _plain(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows as plain tuples (many rows: a Row costs more), [] for a store written by an older daemon."""
        try:
            with self._lock:
                return self._db.plain(sql, args)
        except StatementFailure:
            return []

    def _human(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Rows as plain tuples, [] for a store written by an older daemon (read by a command)."""
        try:
            return [tuple(r) for r in self._rows(sql, args)]
        except StatementFailure:  # a store written by an older daemon, read by a command
            return []
