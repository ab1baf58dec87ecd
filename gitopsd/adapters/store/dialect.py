"""Where the store's two backends differ, in one place (docs/install.md, "PostgreSQL").

The store's statements are written once, in SQL both run: SQLite (>= 3.24; 3.40 here) and PostgreSQL
share `INSERT ... ON CONFLICT (...) DO UPDATE/DO NOTHING`, and the schema's types are spelled so
that both read them alike (BIGINT, DOUBLE PRECISION, TEXT; SQLite's affinity rules map them).
What remains different is named here: PostgreSQL's placeholder style (`PostgreSQL.placeholders`,
one replacement that skips string literals), the generated id column of the schema, the JSON
functions (SET_PROGRESS, CHECK_TOTALS), a table's columns, the id sequence. Stdlib only.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .backend import Backend

# Reading, not rewriting: the keys of the schema's tables (the hook's copy is written by them) and the table a
# statement writes (the PostgreSQL backend mirrors the hook's tables and returns a new row's id).
_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_WRITE = re.compile(r"^\s*(?:WITH\b.*?\)\s*)?(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)", re.I | re.S)
_LITERAL = re.compile(r"('(?:[^']|'')*')")  # a string literal of SQL, quotes doubled inside

# SQLite's id column: an alias of the rowid that AUTOINCREMENT never reuses. PostgreSQL's: an identity (copies may set it).
GENERATED_ID = "INTEGER PRIMARY KEY AUTOINCREMENT"


class Dialect(Protocol):
    """Where SQLite and PostgreSQL differ, by name: a backend's `dialect` (backend.py)."""

    name: str
    SET_PROGRESS: str
    CHECK_TOTALS: str

    def schema(self, script: str) -> str: ...

    def columns(self, db: Backend, table: str) -> list[str]: ...

    def id_floor(self, db: Backend, table: str, n: int) -> bool: ...


def primary_keys(schema: str) -> dict[str, tuple[str, ...]]:
    """table -> its primary key's columns, read from CREATE TABLE statements in SQLite's dialect."""
    keys: dict[str, tuple[str, ...]] = {}
    for table, body in _CREATE_TABLE.findall(schema):
        body = without_comments(body)
        found = re.search(r"PRIMARY KEY \(([^)]*)\)", body)
        if found:
            keys[table] = tuple(c.strip() for c in found.group(1).split(","))
            continue
        column = re.search(r"(\w+) [A-Z]+ PRIMARY KEY", body)
        if column:
            keys[table] = (column.group(1),)
    return keys


def written_table(sql: str) -> tuple[str, str] | None:
    """(verb, table) of an INSERT, UPDATE or DELETE statement; None for anything else."""
    found = _WRITE.match(sql)
    return (found.group(1).split()[0].upper(), found.group(2)) if found else None


class SQLite:
    """SQLite: statements and schema run as written."""

    name = "sqlite"

    def schema(self, script: str) -> str:
        return script

    # Progress of a running deployment, kept inside its `detail` JSON.
    SET_PROGRESS = "UPDATE deployments SET detail = json_set(COALESCE(detail, '{}'), '$.progress', json(?)) WHERE id = ?"

    # (repo, env, check type, passed, count) of the checks in finished deployments' details.
    CHECK_TOTALS = (
        "SELECT d.repo, d.env, substr(json_extract(c.value, '$.name'), 1,"
        " instr(json_extract(c.value, '$.name') || ' ', ' ') - 1) AS check_type, json_extract(c.value, '$.ok') AS check_ok,"
        " COUNT(*) FROM deployments d, json_each(d.detail, '$.batches') b, json_each(b.value, '$.checks') c"
        " WHERE d.id > ? AND d.id <= ? AND d.result NOT IN ('queued', 'running') AND d.detail LIKE '%\"checks\"%'"
        " GROUP BY d.repo, d.env, check_type, check_ok"
    )

    def columns(self, db: Backend, table: str) -> list[str]:
        """The columns `table` has in this database (an older store may lack some)."""
        return [str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")]

    def id_floor(self, db: Backend, table: str, n: int) -> bool:
        """Make `table`'s next generated id exceed `n` (in a transaction); False if it already did."""
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        top = db.execute(f"SELECT MAX(id) FROM {table}").rows[0][0]  # noqa: S608 (a constant table name)
        if max(seq[0] if seq else 0, top or 0) >= n:
            return False
        if seq:
            db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (n, table))
        else:
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, n))
        return True


class PostgreSQL:
    """PostgreSQL: the same statements, with psycopg's placeholders."""

    name = "postgresql"

    @staticmethod
    def placeholders(sql: str) -> str:
        """`sql` with psycopg's placeholders (converted once per statement: cached)."""
        return _placeholders(sql)

    def schema(self, script: str) -> str:
        """The schema without its comments (some hold `;`, where the backend splits statements), its ids generated."""
        return without_comments(script).replace(GENERATED_ID, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")

    SET_PROGRESS = (
        "UPDATE deployments SET detail = jsonb_set(COALESCE(detail, '{}')::jsonb, '{progress}',"
        " CAST(? AS jsonb))::text WHERE id = ?"
    )

    CHECK_TOTALS = (
        "SELECT d.repo, d.env, split_part(c.value->>'name', ' ', 1) AS check_type,"
        " CASE WHEN (c.value->'ok')::text = 'true' THEN 1 ELSE 0 END AS check_ok, COUNT(*)"
        " FROM deployments d, jsonb_array_elements(COALESCE(d.detail::jsonb->'batches', '[]')) AS b(value),"
        " jsonb_array_elements(COALESCE(b.value->'checks', '[]')) AS c(value)"
        " WHERE d.id > ? AND d.id <= ? AND d.result NOT IN ('queued', 'running') AND d.detail LIKE '%\"checks\"%'"
        " GROUP BY d.repo, d.env, check_type, check_ok"
    )

    def columns(self, db: Backend, table: str) -> list[str]:
        return [
            str(r[0])
            for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema()",
                (table,),
            )
        ]

    def id_floor(self, db: Backend, table: str, n: int) -> bool:
        """The identity's sequence moved past `n` (rows copied in with their ids leave it behind too)."""
        last, called = db.execute(f"SELECT last_value, is_called FROM {table}_id_seq").rows[0]  # noqa: S608 (constant names)
        top = db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").rows[0][0]  # noqa: S608 (constant names)
        issued = last if called else last - 1
        if issued < n:
            db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?)", (n,))
        return bool(max(issued, top) < n)


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """`?` outside string literals as `%s`, and every `%` doubled (psycopg would read a single one as a placeholder)."""
    parts = _LITERAL.split(sql)  # odd parts are the literals
    return "".join(p.replace("%", "%%") if i % 2 else p.replace("%", "%%").replace("?", "%s") for i, p in enumerate(parts))


def without_comments(sql: str) -> str:
    """`sql` with each line's `--` comment left out (the schema writes no `--` inside a string)."""
    return "\n".join(line.split("--", 1)[0] for line in sql.split("\n"))
