"""services/failures.py: which failures of the server's own files a client may retry (503) and which need an operator (500).

Real: the errors the system raises for real calls (a name too long, a folder opened for writing, a file in the way of a
folder, a socket with nothing to read yet) and SQLite's for a locked, a full (max_page_count), a read-only and an
unopenable database, made the store's errors as its backend does. Faked: nothing.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
from pathlib import Path

import pytest

from gitopsd.adapters.store import sqlite
from gitopsd.base.storeerrors import translate
from gitopsd.core.errors import StoreError
from gitopsd.services.failures import server_failure


def raised(action) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def store_error(tmp_path: Path, trouble: str) -> BaseException:
    """The store's error (as its SQLite backend and the store's wrapper raise it) for a real SQLite failure."""
    db = tmp_path / f"{trouble}.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    if trouble == "busy":
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        cause = raised(lambda: sqlite3.connect(db, timeout=0).execute("SELECT * FROM t").fetchall())
        holder.close()
    elif trouble == "full":
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        cause = raised(lambda: conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,)))
    elif trouble == "read-only":
        cause = raised(lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)"))
    else:  # no folder to open it in
        cause = raised(lambda: sqlite3.connect(tmp_path / "no-folder" / "state.db"))
    failure = sqlite.failure(cause)
    try:
        raise translate(str(db), failure) from failure
    except StoreError as exc:
        return exc


def test_what_passes_by_itself_is_a_503_and_what_needs_an_operator_is_a_500_with_the_systems_words(tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    failures = {
        "name too long": raised(lambda: (tmp_path / ("x" * 300)).write_text("x")),
        "is a directory": raised(lambda: tmp_path.open("w")),
        "not a directory": raised(lambda: (tmp_path / "file" / "x").mkdir()),
        "nothing to read yet": raised(lambda: reader.recv(1)),
        "store busy": store_error(tmp_path, "busy"),
        "store full": store_error(tmp_path, "full"),
    }
    reader.close()
    writer.close()
    with caplog.at_level(logging.INFO):
        answers = {what: server_failure(exc, logging.getLogger("gitopsd.api"), f"API {what}") for what, exc in failures.items()}
    assert {what: (a.status, a.reason) for what, a in answers.items()} == {
        "name too long": (500, "server_files"),
        "is a directory": (500, "server_files"),
        "not a directory": (500, "server_files"),
        "nothing to read yet": (503, "store_unavailable"),
        "store busy": (503, "store_unavailable"),
        "store full": (500, "server_disk_full"),
    }
    assert "(File name too long)" in str(answers["name too long"]) and str(tmp_path) not in str(answers["name too long"])
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "ERROR", "WARNING", "WARNING", "ERROR"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("trouble", ["read-only", "no folder"])
def test_a_store_this_user_may_not_write_or_open_is_the_operators_permission_problem(tmp_path, trouble):
    answer = server_failure(store_error(tmp_path, trouble), logging.getLogger("gitopsd.api"), "API test")
    assert (answer.status, answer.reason) == (500, "server_permission")
