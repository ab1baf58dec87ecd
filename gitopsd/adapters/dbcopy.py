"""`gitopsd db copy`: move the state store between SQLite and PostgreSQL, every table, ids kept (docs/install.md, "PostgreSQL").

The source is read only (an older SQLite store is read as it is: columns it lacks take their
defaults); the target is opened as the daemon opens it (its schema upgraded) and must be empty
unless forced. One transaction on the target: a failed copy leaves it as it was.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..base.storeerrors import StatementFailure
from ..core.errors import UserError
from .store import Store, full_schema

# Who leads and which daemons are alive belong to the database the daemons share now, not to the records moved.
NOT_COPIED = ("leadership", "daemons")


def tables() -> list[str]:
    """Every table of the store the copy moves, in the order the schema declares them."""
    return [t for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", full_schema()) if t not in NOT_COPIED]


def open_spec(spec: str, *, readonly: bool) -> Store:
    """A store from `sqlite:PATH` (or a plain path) or `postgresql://...`; a PostgreSQL target keeps no hook copy."""
    if spec.startswith(("postgresql://", "postgres://")):
        return Store(Path("/nonexistent"), readonly=readonly, url=spec, hook_copy=False, retry_for=0.0)
    path = Path(re.sub(r"^sqlite:(//)?", "", spec)).expanduser()
    if readonly and not path.exists():
        raise UserError(f"no SQLite store at {path}: give the state database's path, e.g. sqlite:/var/lib/gitopsd/state.db")
    return Store(path, readonly=readonly)


def copy(source: Store, target: Store, *, force: bool = False) -> dict[str, int]:
    """Copy every table's rows from `source` to `target`; {table: rows copied}. Raise UserError if target has rows."""
    # The store's backends, on purpose: a copy moves rows as they are, below the store's own methods.
    src, dst = source._db, target._db
    names = tables()
    if not force:
        full = [t for t in names if dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None]  # noqa: S608 (schema names)
        if full:
            raise UserError(
                f"the target {target.location} already holds records ({', '.join(full)}): copy into an "
                f"empty database, or add --force to replace them"
            )
    copied: dict[str, int] = {}
    with target._lock, dst.transaction():
        for table in names:
            dst.execute(f"DELETE FROM {table}")  # noqa: S608 (schema names)
            try:
                fetched = src.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 (schema names)
            except StatementFailure:  # an older source without this table
                copied[table] = 0
                continue
            columns = list(fetched[0].keys()) if fetched else []
            rows = [tuple(r) for r in fetched]
            if rows:
                marks = ", ".join("?" * len(columns))
                dst.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608
            copied[table] = len(rows)
            if "id" in columns and rows:
                dst.dialect.id_floor(dst, table, max(int(r[columns.index("id")]) for r in rows))
    return copied
