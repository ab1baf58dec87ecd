"""What the store needs of a database: one interface, implemented twice (sqlite.py over sqlite3, postgresql.py over psycopg).

The store's queries (base.py and its mixins) and the migrations (schema.py) talk to a `Backend`
only: they see neither sqlite3 nor psycopg. A backend runs a statement and answers with a `Result`,
runs a write transaction, and raises the store's own errors (base/storeerrors.DatabaseFailure),
never its driver's. Where the two databases differ, the backend's `dialect` (dialect.py) has a
named method or statement. Stdlib only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Dialect(Protocol):
    """Where SQLite and PostgreSQL differ, by name: a backend's `dialect` (dialect.py has the two)."""

    name: str
    SET_PROGRESS: str
    CHECK_TOTALS: str

    def schema(self, script: str) -> str: ...

    def columns(self, db: Backend, table: str) -> list[str]: ...

    def id_floor(self, db: Backend, table: str, n: int) -> bool: ...


class Row(Protocol):
    """A row read by position or by column name; `keys()` names its columns (so dict(row) works)."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> list[str]: ...


class Result:
    """What a statement gave: its rows (fetched at once), the rows it changed, and the id of the row it inserted."""

    __slots__ = ("lastrowid", "rowcount", "rows")

    def __init__(self, rows: list[Row], rowcount: int = -1, lastrowid: int | None = None):
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def fetchall(self) -> list[Row]:
        return self.rows

    def fetchone(self) -> Row | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)


class Backend(Protocol):
    """A connection to the store's database, used under the store's lock. Every method raises DatabaseFailure."""

    name: str  # "sqlite" or "postgresql"
    location: str  # the file, or the URL without its password: what messages name
    dialect: Dialect

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Result: ...

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Result: ...

    def plain(self, sql: str, args: Sequence[Any] = (), /) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: cheaper than `Row`s when there are many."""
        ...

    def script(self, statements: str, /) -> None:
        """Run statements separated by `;` (the schema)."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Backend]:
        """One write transaction: committed when the block ends, rolled back (and the error raised) when it fails."""
        ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...
