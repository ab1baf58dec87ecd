"""The SQL differences between the store's two backends, in one place (docs/install.md, "PostgreSQL").

The store's statements are written once, in SQLite's dialect (the default backend, and the one
the pre-receive hook reads). `PostgreSQL.translate` rewrites the few constructs PostgreSQL spells
otherwise: placeholders (`?`, `?N` become `%s`, the arguments reordered to match), `INSERT OR
REPLACE` and `INSERT OR IGNORE` (ON CONFLICT), two-argument MIN/MAX (LEAST/GREATEST), `instr`,
`BEGIN IMMEDIATE`. What cannot be rewritten by pattern (JSON functions, the id sequence, the
schema's types) is a named method of each dialect. Stdlib only.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .backend import Backend

_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_OR_REPLACE = re.compile(r"^\s*INSERT OR REPLACE INTO (\w+) \(([^)]*)\)", re.I)
_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.I)
_PLACEHOLDER = re.compile(r"\?(\d*)")
_WRITE = re.compile(r"^\s*(?:WITH\b.*?\)\s*)?(INSERT(?: OR \w+)? INTO|UPDATE|DELETE FROM)\s+(\w+)", re.I | re.S)


class Dialect(Protocol):
    """Where SQLite and PostgreSQL differ, by name: a backend's `dialect` (backend.py)."""

    name: str
    SET_PROGRESS: str
    CHECK_TOTALS: str

    def translate(self, sql: str) -> tuple[str, tuple[int, ...] | None]: ...

    def schema(self, script: str) -> str: ...

    def columns(self, db: Backend, table: str) -> list[str]: ...

    def id_floor(self, db: Backend, table: str, n: int) -> bool: ...


def primary_keys(schema: str) -> dict[str, tuple[str, ...]]:
    """table -> its primary key's columns, read from CREATE TABLE statements in SQLite's dialect."""
    keys: dict[str, tuple[str, ...]] = {}
    for table, body in _CREATE_TABLE.findall(schema):
        body = re.sub(r"--[^\n]*", "", body)
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
    """The store's own dialect: statements run as written."""

    name = "sqlite"

    def translate(self, sql: str) -> tuple[str, tuple[int, ...] | None]:
        return sql, None

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


class PostgreSQL(SQLite):
    """PostgreSQL: statements in SQLite's dialect rewritten on the way (cached: each is rewritten once)."""

    name = "postgresql"

    def __init__(self, keys: dict[str, tuple[str, ...]]):
        self.keys = keys
        self.translate = functools.lru_cache(maxsize=1024)(self._translate)  # type: ignore[method-assign]

    def _translate(self, sql: str) -> tuple[str, tuple[int, ...] | None]:
        """(statement for psycopg, the argument index of each %s, or None to pass the arguments as given)."""
        text = sql.strip()
        if text.upper() == "BEGIN IMMEDIATE":
            return "BEGIN", None
        replace = _OR_REPLACE.match(text)
        if replace:
            table, columns = replace.group(1), [c.strip() for c in replace.group(2).split(",")]
            key = self.keys[table]
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
            text = (
                f"INSERT INTO {table} ({', '.join(columns)})"
                + text[replace.end() :]
                + f" ON CONFLICT ({', '.join(key)}) "
                + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
            )
        elif _OR_IGNORE.match(text):
            text = _OR_IGNORE.sub("INSERT INTO", text, count=1) + " ON CONFLICT DO NOTHING"
        text = _two_argument(text, "MIN", "LEAST")
        text = _two_argument(text, "MAX", "GREATEST")
        text = re.sub(r"\binstr\(", "strpos(", text)
        return _placeholders(text)

    def schema(self, script: str) -> str:
        """SQLite's DDL in PostgreSQL's types: ids from an identity column (copies may set them), floats, 64-bit ints."""
        script = re.sub(r"--[^\n]*", "", script)
        script = script.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)
        return re.sub(r"\bINTEGER\b", "BIGINT", script)

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


def _two_argument(sql: str, function: str, replacement: str) -> str:
    """Rename SQLite's scalar MIN(a, b)/MAX(a, b) (two or more arguments); the aggregate MIN(x) stays."""
    out, at = [], 0
    for found in re.finditer(rf"\b{function}\(", sql, re.I):
        start = found.end()
        depth, commas, i = 1, 0, start
        while i < len(sql) and depth:
            ch = sql[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 1:
                commas += 1
            elif ch == "'":
                i = sql.index("'", i + 1)
            i += 1
        if commas:
            out.append(sql[at : found.start()] + replacement + "(")
            at = start
    return "".join(out) + sql[at:]


def _placeholders(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """`?` and `?N` outside string literals as psycopg's `%s` (a literal % doubled); the argument order."""
    parts = re.split(r"('(?:[^']|'')*')", sql)
    order: list[int] = []
    numbered = False
    for i in range(0, len(parts), 2):  # even parts are outside literals

        def mark(found: re.Match[str]) -> str:
            nonlocal numbered
            if found.group(1):
                numbered = True
                order.append(int(found.group(1)) - 1)
            else:
                order.append(len(order))
            return "%s"

        parts[i] = _PLACEHOLDER.sub(mark, parts[i].replace("%", "%%"))
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%")
    return "".join(parts), tuple(order) if numbered else None
