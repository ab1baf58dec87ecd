"""PostgreSQL under the store: the `Backend` of backend.py over a pool of psycopg connections (docs/install.md, "PostgreSQL").

The one importer of psycopg and psycopg_pool. `Store` runs the same statements on both backends:
this module gives each psycopg's placeholders (`dialect.PostgreSQL.placeholders`), raises psycopg's errors as the
store's own (base/storeerrors.DatabaseFailure, of which storeerrors makes StoreError kinds), and
waits for a database that went away (a restart, a failover) before it gives up on a statement.

The pre-receive hook never connects here: every row written to a table the hook reads (`MIRRORED`)
comes back from PostgreSQL (RETURNING *) and is written, once PostgreSQL committed it, into a local
SQLite file the hook reads as it reads the SQLite store (gate/snapshot.py connect_readonly).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool

from ...base.storeerrors import FENCED, PERMISSION, UNREACHABLE, DatabaseFailure, IntegrityFailure, StatementFailure
from .backend import Backend, Dialect, Result
from .dialect import PostgreSQL, primary_keys, written_table

log = logging.getLogger("gitopsd.store")

# The tables the pre-receive hook reads (gate/snapshot.py Ledger and load): mirrored into its SQLite file.
LEDGER = ("deployments", "commit_statuses", "signoffs", "release_candidates", "approvals", "env_locks", "break_glass")
# The config snapshot is mirrored as written but never copied whole: `gitopsd install-hooks` writes it into the
# hook's file directly, and the daemon saves its own at every start.
MIRRORED = LEDGER + ("gate_config", "gate_environments", "gate_windows", "gate_branches")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Unreachable(StatementFailure):
    """PostgreSQL cannot be reached (down, wrong address, refusing connections)."""

    store_kind = UNREACHABLE


class Refused(StatementFailure):
    """PostgreSQL refused this user (password, role, permissions)."""

    store_kind = PERMISSION


class Fenced(StatementFailure):
    """A deployment record from a daemon that lost the lead: the database refused it (migrations.FENCE)."""

    store_kind = FENCED


FENCED_STATE = "GDF01"  # the SQLSTATE migrations.FENCE raises


class Row(tuple):  # type: ignore[type-arg]
    """A row readable by index and by column name (backend.Row; dict(row) works too)."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


_ROW_CLASSES: dict[tuple[str, ...], type[Row]] = {}


def _row_class(names: tuple[str, ...]) -> type[Row]:
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        cls = _ROW_CLASSES[names] = type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}})
    return cls


def translate_error(url: str, exc: BaseException) -> DatabaseFailure:
    """psycopg's error as the store's own, its words kept and the URL's password left out."""
    words = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = f"{redact(url)}: {words}"
    if (
        isinstance(
            exc,
            psycopg.errors.InsufficientPrivilege
            | psycopg.errors.InvalidAuthorizationSpecification
            | psycopg.errors.InvalidPassword,
        )
        or "authentication failed" in words
        or ("role" in words and "does not exist" in words)
    ):
        return Refused(text)
    if getattr(exc, "sqlstate", None) == FENCED_STATE:
        return Fenced(text)
    if _lost(exc):
        return Unreachable(text)
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityFailure(text)
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return StatementFailure(text)  # a store an older daemon wrote, read by a command
    return DatabaseFailure(text)


def _lost(exc: BaseException) -> bool:
    """Could the database not be reached, or did the connection go away (not a statement's own error)?"""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(("08", "57P")))


class PostgreSQLBackend:
    """A pool of connections to one PostgreSQL database: the store's `Backend` (backend.py).

    Statements outside `transaction()` run in autocommit; a lost connection is retried for up to
    `retry_for` seconds (the daemon writes through a database restart; a command gives up at once).
    Callers serialise their use (the store's lock). `schema`: the store's tables, whose keys the
    hook's SQLite copy (`mirror`) is written by.
    """

    name = "postgresql"

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        retry_for: float = 0.0,
        connect_timeout: float = 5.0,
        mirror: Backend | None = None,
        max_size: int = 4,
        epoch: int | None = None,
    ):
        self.url, self.location, self.retry_for = url, redact(url), retry_for
        self.keys = primary_keys(schema)
        self.dialect: Dialect = PostgreSQL()
        self.mirror = mirror
        self._tx: psycopg.Connection[Any] | None = None
        self._pending: list[tuple[str, str, list[str], list[tuple[Any, ...]]]] = []
        # TCP keepalives and a user timeout: a statement on a connection whose network went away fails within
        # seconds (and is retried, above) instead of waiting for the system's two-hour keepalive.
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, int(connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 15000,
        }
        if epoch is not None:  # the leader's: each deployment row it writes carries it, or is refused (fencing)
            kwargs["options"] = f"-c gitopsd.epoch={int(epoch)}"
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=connect_timeout,
            name="gitopsd",
            kwargs=kwargs,
            check=psycopg_pool.ConnectionPool.check_connection,
        )
        try:
            # One plain connection first: its error says what is wrong (the pool's says only that it timed out).
            psycopg.connect(url, connect_timeout=max(1, int(connect_timeout))).close()
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:  # noqa: B902 (psycopg's and the pool's errors alike)
            self._pool.close()
            raise translate_error(url, exc) from exc

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def close(self) -> None:
        self._pool.close()

    def script(self, statements: str, /) -> None:
        for statement in (s.strip() for s in statements.split(";")):
            if statement:
                self.execute(statement)

    def plain(self, sql: str, args: Sequence[Any] = (), /) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(sql, args).rows]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Backend]:
        self._begin()
        try:
            yield self
            self._end("COMMIT")
        except BaseException:
            self._end("ROLLBACK")
            raise

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Result:
        write = written_table(sql)
        if self._tx is not None and write is not None and not (write[1] in MIRRORED and self.mirror is not None):
            # Nothing to mirror: one pipelined executemany (db copy moves many rows this way).
            try:
                with self._tx.cursor() as cur:
                    cur.executemany(PostgreSQL.placeholders(sql), [tuple(a) for a in seq])
                    return Result([], cur.rowcount, None)
            except Exception as exc:  # noqa: B902
                raise translate_error(self.url, exc) from exc
        total = 0
        for args in seq:
            total += self.execute(sql, args).rowcount
        return Result([], total, None)

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Result:
        text, params = PostgreSQL.placeholders(sql), tuple(args)
        write = written_table(sql)
        mirrored = write is not None and write[1] in MIRRORED and self.mirror is not None
        if write is not None and " RETURNING " not in text.upper():
            if mirrored:
                text += " RETURNING *"
            elif write[0] == "INSERT" and self.keys.get(write[1]) == ("id",):
                text += " RETURNING id"
        if self._tx is not None:
            try:
                result = self._run(self._tx, text, params)
            except Exception as exc:  # noqa: B902
                raise translate_error(self.url, exc) from exc
        else:
            result = self._autocommit(text, params)
        if write is not None:
            if mirrored:
                self._pending.append((write[0], write[1], result[0], result[1]))
                if self._tx is None:
                    self._flush_mirror()
            rows = result[1]
            lastrowid = rows[0][result[0].index("id")] if rows and "id" in result[0] else None
            return Result([], result[2], lastrowid)
        cls = _row_class(tuple(result[0]))
        return Result([cls(r) for r in result[1]], result[2])

    @staticmethod
    def _run(conn: psycopg.Connection[Any], text: str, params: tuple[Any, ...]) -> tuple[list[str], list[tuple[Any, ...]], int]:
        with conn.cursor() as cur:
            cur.execute(text, params)
            names = [d.name for d in cur.description] if cur.description else []
            rows = cur.fetchall() if cur.description else []
            return names, rows, cur.rowcount

    def _autocommit(self, text: str, params: tuple[Any, ...]) -> tuple[list[str], list[tuple[Any, ...]], int]:
        """Run one statement on a pooled connection, waiting up to retry_for for a database that went away."""
        deadline, delay, said = time.monotonic() + self.retry_for, 0.5, False
        while True:
            try:
                with self._pool.connection() as conn:
                    return self._run(conn, text, params)
            except Exception as exc:  # noqa: B902
                if not _lost(exc) or time.monotonic() >= deadline:
                    raise translate_error(self.url, exc) from exc
                if not said:
                    log.warning(
                        "the database %s went away (%s); retrying for up to %.0f s",
                        redact(self.url),
                        str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                        self.retry_for,
                    )
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _begin(self) -> None:
        try:
            conn = self._pool.getconn()
        except Exception as exc:  # noqa: B902
            raise translate_error(self.url, exc) from exc
        try:
            conn.execute("BEGIN")
        except Exception as exc:  # noqa: B902
            self._pool.putconn(conn)
            raise translate_error(self.url, exc) from exc
        self._tx, self._pending = conn, []

    def _end(self, word: str) -> None:
        conn, self._tx = self._tx, None
        if conn is None:
            return
        try:
            conn.execute(word)
        except Exception as exc:  # noqa: B902
            self._pending = []
            raise translate_error(self.url, exc) from exc
        finally:
            self._pool.putconn(conn)
        if word == "COMMIT":
            self._flush_mirror()
        self._pending = []

    # -- the hook's read model ---------------------------------------------------------------------------
    def _flush_mirror(self) -> None:
        """Write what PostgreSQL committed into the hook's SQLite file; on failure, copy it whole next time."""
        pending, self._pending = self._pending, []
        if self.mirror is None or not pending:
            return
        try:
            with self.mirror.transaction() as mirror:
                for verb, table, names, rows in pending:
                    apply_rows(mirror, verb, table, names, rows, self.keys[table])
        except DatabaseFailure as exc:
            log.warning(
                "the pre-receive hook's copy of the deployment records could not be written (%s); it is copied again whole", exc
            )
            self.resync_mirror()

    def resync_mirror(self) -> None:
        """Copy the ledger tables whole from PostgreSQL into the hook's SQLite file (at start, after a failure)."""
        if self.mirror is None:
            return
        tables = []
        for table in LEDGER:
            names, rows, _n = self._autocommit(f"SELECT * FROM {table}", ())  # noqa: S608 (constant table names)
            tables.append((table, names, rows))
        try:
            with self.mirror.transaction() as mirror:
                for table, names, rows in tables:
                    mirror.execute(f"DELETE FROM {table}")  # noqa: S608 (constant table names)
                    apply_rows(mirror, "INSERT", table, names, rows, self.keys[table])
        except DatabaseFailure as exc:
            log.error(
                "the pre-receive hook's copy of the deployment records could not be written (%s): pushes to "
                "environment branches may be refused until it can",
                exc,
            )


LEASE_KEY = 0x6769746F707364  # the advisory lock of the leader's lease ("gitopsd"), one per database
# A daemon whose machine vanished (no FIN) is noticed by the server's TCP keepalives on the lease's connection:
# about 4 + 2 x 1 seconds after its last packet, well after a cut-off leader stopped its runs (leadership.SELF_FENCE).
LEASE_OPTIONS = (
    "-c tcp_keepalives_idle=4 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2"
    " -c statement_timeout=3000 -c idle_in_transaction_session_timeout=5000"
)


class Lease:
    """The leader's lease: a session advisory lock on a connection of its own, and the epoch in `leadership`.

    Whoever holds the lock is the leader; taking it raises the epoch, which the leader's deployment
    rows carry (migrations.FENCE). The lock lives as long as this connection: a daemon killed or cut
    off loses it (at once, or when the server's keepalives give up on its connection).
    Every method raises the store's own errors, as `PostgreSQLBackend` does (translate_error).
    """

    def __init__(self, url: str, holder: str, connect_timeout: float = 2.0):
        self.url, self.holder, self.connect_timeout = url, holder, connect_timeout
        self.epoch: int | None = None  # ours, while we lead
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.drop()
            try:
                self._conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=max(1, int(self.connect_timeout)),
                    application_name=f"gitopsd lease {self.holder}"[:63],
                    options=LEASE_OPTIONS,
                    keepalives=1,
                    keepalives_idle=2,
                    keepalives_interval=1,
                    keepalives_count=2,
                    tcp_user_timeout=1500,
                )  # a cut network fails a statement here in 1.5 s
            except Exception as exc:  # noqa: B902 (psycopg's errors)
                raise translate_error(self.url, exc) from exc
        return self._conn

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except Exception as exc:  # noqa: B902
            if conn.broken or _lost(exc):
                self.drop()
            raise translate_error(self.url, exc) from exc

    def take(self) -> int | None:
        """Try to take the lead once: our epoch if we lead now, None while another daemon holds the lease.

        Taken anew, the epoch is raised. Taken again after our own connection was lost (a database restart),
        and nobody led in between, our epoch is kept: deployments in flight go on recording.
        """
        if not self._run("SELECT pg_try_advisory_lock(%s)", (LEASE_KEY,))[0][0]:
            return None
        conn = self._connection()
        try:
            with conn.transaction():
                row = conn.execute("SELECT epoch FROM leadership WHERE id = 1 FOR UPDATE").fetchone()
                current = int(row[0]) if row else 0
                if self.epoch is not None and current != self.epoch:  # another daemon led meanwhile
                    raise LeaseLost(f"another gitopsd led meanwhile (epoch {current}; this one led {self.epoch})")
                if self.epoch is None:
                    current += 1
                conn.execute(
                    "UPDATE leadership SET epoch = %s, holder = %s,"
                    " since = CASE WHEN epoch = %s THEN since ELSE extract(epoch from now()) END WHERE id = 1",
                    (current, self.holder, current),
                )
        except LeaseLost:
            self._run("SELECT pg_advisory_unlock(%s)", (LEASE_KEY,))
            raise
        except Exception as exc:  # noqa: B902
            if conn.broken or _lost(exc):
                self.drop()
            raise translate_error(self.url, exc) from exc
        self.epoch = current
        return current

    def confirm(self) -> None:
        """Check that we still lead: return quietly, raise LeaseLost, or an Unreachable when the database cannot say."""
        if self.epoch is None:
            raise LeaseLost("this gitopsd does not lead")
        if self._conn is None or self._conn.closed or self._conn.broken:  # the connection (and the lock) went away
            if self.take() is None:
                raise LeaseLost("another gitopsd holds the lease")
            log.info("the leader's lease is held again (epoch %d) after its connection was lost", self.epoch)
            return
        row = self._run("SELECT epoch, holder FROM leadership WHERE id = 1")
        if not row or int(row[0][0]) != self.epoch:
            raise LeaseLost(f"the lease is at epoch {row[0][0] if row else '?'} now, held by {row[0][1] if row else '?'}")

    def leader(self) -> tuple[int, str, float] | None:
        """(epoch, holder, since) of the lease as recorded; None before any daemon led."""
        rows = self._run("SELECT epoch, holder, since FROM leadership WHERE id = 1")
        return (int(rows[0][0]), str(rows[0][1]), float(rows[0][2])) if rows and rows[0][1] else None

    def heartbeat(self, name: str, role: str, pid: int, api: str) -> list[tuple[str, str, int, int, str, float]]:
        """Say this daemon is alive (and as what); every daemon of this database: (name, role, epoch, pid, api, age s)."""
        if role == "leader":  # only we lead: a leader row of another is from one that died; an hour's silence too
            self._run(
                "DELETE FROM daemons WHERE name <> %s AND (role = 'leader' OR seen_at < extract(epoch from now()) - 3600)",
                (name,),
            )
        self._run(
            "INSERT INTO daemons (name, role, epoch, pid, api, seen_at) VALUES (%s, %s, %s, %s, %s,"
            " extract(epoch from now())) ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
            " epoch = EXCLUDED.epoch, pid = EXCLUDED.pid, api = EXCLUDED.api, seen_at = EXCLUDED.seen_at",
            (name, role, self.epoch or 0, pid, api),
        )
        return [
            (str(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4]), float(r[5]))
            for r in self._run(
                "SELECT name, role, epoch, pid, api, extract(epoch from now()) - seen_at FROM daemons ORDER BY name"
            )
        ]

    def forget(self, name: str) -> None:
        """This daemon stops: its row goes (a standby stopping is not a standby lost)."""
        self._run("DELETE FROM daemons WHERE name = %s", (name,))

    def drop(self) -> None:
        """Close the lease's connection (and so let go of the lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 (closing a broken connection)
                log.debug("closing the lease's connection: %s", exc)


class LeaseLost(StatementFailure):
    """Another daemon leads now (or took the lead while this one could not reach the database)."""

    store_kind = FENCED


def apply_rows(db: Backend, verb: str, table: str, names: list[str], rows: list[tuple[Any, ...]], key: tuple[str, ...]) -> None:
    """Apply rows PostgreSQL returned for a write to the same table in a SQLite file: upserted, or deleted by key."""
    if not rows:
        return
    if verb == "DELETE":
        where = " AND ".join(f"{k} = ?" for k in key)
        db.executemany(
            f"DELETE FROM {table} WHERE {where}",  # noqa: S608 (names from the schema)
            [tuple(r[names.index(k)] for k in key) for r in rows],
        )
    else:
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in key)
        db.executemany(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608 (names from the schema)
            f" ON CONFLICT ({', '.join(key)}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING"),
            rows,
        )


def is_url(database: str) -> bool:
    return bool(re.match(r"postgres(ql)?://", database))
