"""Versioned schema migrations of the state store, the same steps for SQLite and PostgreSQL (docs/install.md, "PostgreSQL").

The store's tables are declared once (store.SCHEMA and the gate's), in SQLite's dialect, with
CREATE ... IF NOT EXISTS: every upgrade creates what is missing, so a table added there needs no
step. Anything else (a column, a changed meaning, moved data) is a numbered step below, run once
per database in order, recorded in `schema_version`. Version 1 is the schema as it was when versions
began; a store written before that (no `schema_version`) is brought to it in place.
`gitopsd db upgrade` runs this; so does every writable open of the store (the daemon's start).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ...gate import snapshot
from .dialect import SQLite

VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL,"
                 " description TEXT NOT NULL)")


def _v1(db: Any, dialect: SQLite) -> None:
    """Stores from before versions: the hook snapshot's columns added since (the tables were created above)."""
    if dialect.name == "sqlite":
        snapshot.migrate(db)


# PostgreSQL fences the leader's records (gitopsd/daemon/leadership.py): a daemon that took the lead sets `gitopsd.epoch`
# on its connections; a row it writes (or deletes) in a table below while another daemon holds a newer epoch is
# refused (SQLSTATE GDF01), and each deployment row carries the epoch that wrote it. Row-locking the lease's row
# (FOR SHARE) makes a takeover wait for the old leader's write in flight. Commands (no `gitopsd.epoch`) pass.
FENCED_TABLES = ("deployments", "env_status", "env_heads", "env_blocks", "bad_trees", "watches", "drift_reports",
                 "commits_deployed", "ci_heads")
FENCE = ("""
CREATE OR REPLACE FUNCTION gitopsd_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
    mine text := current_setting('gitopsd.epoch', true);
    current_epoch bigint;
BEGIN
    IF mine IS NOT NULL AND mine <> '' THEN
        SELECT epoch INTO current_epoch FROM leadership WHERE id = 1 FOR SHARE;
        IF current_epoch IS DISTINCT FROM mine::bigint THEN
            RAISE EXCEPTION 'gitopsd fenced: this daemon led epoch %, the leader now leads epoch %', mine, current_epoch
                USING ERRCODE = 'GDF01';
        END IF;
        IF TG_TABLE_NAME = 'deployments' AND TG_OP <> 'DELETE' THEN
            NEW.epoch := mine::bigint;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fence$""",) + tuple(
    statement for table in FENCED_TABLES for statement in (
        f"DROP TRIGGER IF EXISTS gitopsd_fence ON {table}",
        f"CREATE TRIGGER gitopsd_fence BEFORE INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW"
        f" EXECUTE FUNCTION gitopsd_fence()"))


def _v2(db: Any, dialect: SQLite) -> None:
    """The leader's lease and epoch: `deployments.epoch`, the lease's row and, in PostgreSQL, the fence."""
    columns = [r[0] for r in db.execute("SELECT * FROM deployments LIMIT 0").description or []] \
        if dialect.name == "sqlite" else [r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'deployments'"
            " AND table_schema = current_schema()").fetchall()]
    if "epoch" not in columns:
        db.execute(dialect.schema("ALTER TABLE deployments ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))
    db.execute("INSERT OR IGNORE INTO leadership (id, epoch, holder, since) VALUES (1, 0, '', 0)")
    if dialect.name == "postgresql":
        for statement in FENCE:
            db.execute(statement)


def _v3(db: Any, dialect: SQLite) -> None:
    """Signed commits and pushes: the hook snapshot's `gate_environments.signatures` (gate/signatures.py)."""
    columns = [r[0] for r in db.execute("SELECT * FROM gate_environments LIMIT 0").description or []] \
        if dialect.name == "sqlite" else [r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'gate_environments'"
            " AND table_schema = current_schema()").fetchall()]
    if "signatures" not in columns:
        db.execute(dialect.schema("ALTER TABLE gate_environments ADD COLUMN signatures TEXT NOT NULL DEFAULT ''"))


def _v4(db: Any, dialect: SQLite) -> None:
    """Locks, alert freezes and break-glass overrides (gate/locks.py): new tables only, created above."""


def _v5(db: Any, dialect: SQLite) -> None:
    """Provenance at the door: `gate_environments.require_provenance` (table attestations created above)."""
    columns = [r[0] for r in db.execute("SELECT * FROM gate_environments LIMIT 0").description or []] \
        if dialect.name == "sqlite" else [r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'gate_environments'"
            " AND table_schema = current_schema()").fetchall()]
    if "require_provenance" not in columns:
        db.execute(dialect.schema("ALTER TABLE gate_environments ADD COLUMN require_provenance INTEGER NOT NULL DEFAULT 0"))


STEPS: list[tuple[int, str, Callable[[Any, SQLite], None]]] = [
    (1, "the schema when versions began (tables created if missing, the hook snapshot's newer columns added)", _v1),
    (2, "the leader's lease and epoch; PostgreSQL refuses the records of a daemon that lost the lead", _v2),
    (3, "signed commits and pushes: the hook snapshot's signature rule per environment", _v3),
    (4, "locks, freezes raised by alerts and break-glass overrides (tables env_locks, break_glass)", _v4),
    (5, "provenance at the door: recorded attestations and the hook snapshot's require_provenance", _v5),
]
LATEST = STEPS[-1][0]


def current(db: Any) -> int:
    """The database's schema version: 0 before any (a new or an old store)."""
    try:
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except Exception:   # noqa: BLE001 (no such table, on either backend: version 0)
        if getattr(db, "in_transaction", False):
            db.execute("ROLLBACK")
        return 0
    return int(row[0] or 0) if row else 0


def upgrade(db: Any, dialect: SQLite, schema: str) -> tuple[int, int]:
    """Create missing tables, then run every step above the database's version; (version before, version after).

    Raise ValueError when the database was written by a newer gitopsd (its version is above LATEST).
    """
    before = current(db)
    if before > LATEST:
        raise ValueError(f"its schema is version {before}, newer than this gitopsd knows ({LATEST}): "
                         f"upgrade gitopsd, or use the gitopsd that wrote it")
    db.executescript(dialect.schema(schema + ";\n" + VERSION_TABLE + ";"))
    for version, description, step in STEPS:
        if version <= before:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db, dialect)
            db.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                       (version, time.time(), description))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return before, max(before, LATEST)
