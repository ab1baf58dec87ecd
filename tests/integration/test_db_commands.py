"""`gitopsd db upgrade` and `gitopsd db copy` on real SQLite files and a real PostgreSQL (tests/postgres_fixture.py)."""

from __future__ import annotations

import sqlite3
import subprocess

from gitopsd.adapters import dbcopy
from gitopsd.adapters.store import Store
from gitopsd.adapters.store import schema as migrations
from gitopsd.cli.main import main
from gitopsd.core.types import FailureStatus

T1, T2 = "a" * 40, "b" * 40


def filled_sqlite(path):
    """A SQLite store with rows in several tables, as a daemon leaves it."""
    with Store(path) as store:
        store.continue_ids_after(9)
        for i, (tree, result) in enumerate([(T1, "succeeded"), (T2, "failed")]):
            dep = store.begin(
                repo="shop",
                env="qa",
                commit=f"c{i}",
                tree=tree,
                previous_commit=None,
                kind="deploy",
                trigger="push",
                actor="alice",
                now=100.0 + i,
            )
            store.finish(dep, result, now=110.0 + i, detail={"progress": {"batch": 1}})
        store.record_failure("shop", "qa", FailureStatus("c1", 1, 200.0, False, "boom"))
        store.add_status(repo="shop", commit="c0", tree=T1, context="ci", state="success", reporter="ci", now=1.0)
        store.add_rc(
            repo="shop",
            name="r1",
            commit="c0",
            tree=T1,
            source_env="qa",
            target_env="production",
            created_by="alice",
            self_identities=["alice"],
            now=2.0,
        )
        store.record_seen("shop", [("c0", "push")], 3.0, ["c0"])


def rows(store):
    return {
        t: sorted(tuple(r) for r in store._db.execute(f"SELECT * FROM {t}").fetchall())  # noqa: S608 (schema names)
        for t in dbcopy.tables()
    }


def test_db_copy_moves_every_table_of_a_sqlite_store_to_postgresql(tmp_path, postgres_url, capsys):
    source = tmp_path / "state.db"
    filled_sqlite(source)
    assert main(["db", "copy", "--from", f"sqlite:{source}", "--to", postgres_url]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"copied 7 rows in {len(dbcopy.tables())} tables from {source} to postgresql://")
    assert "  deployments: 2\n" in said and "The source is unchanged" in said
    with Store(source, readonly=True) as old, Store(tmp_path / "hook.db", url=postgres_url) as new:
        assert rows(new) == rows(old)
        next_id = new.begin(
            repo="shop", env="qa", commit="c9", tree=T1, previous_commit=None, kind="deploy", trigger="push", actor="a", now=300.0
        )
        assert next_id == 12  # ids continue above the copied ones
        assert new.deployed("shop", "qa").detail == {"progress": {"batch": 1}}


def test_db_copy_refuses_a_target_with_records_unless_forced(tmp_path, postgres_url, capsys):
    source = tmp_path / "state.db"
    filled_sqlite(source)
    assert main(["db", "copy", "--from", f"sqlite:{source}", "--to", postgres_url]) == 0
    capsys.readouterr()
    assert main(["db", "copy", "--from", f"sqlite:{source}", "--to", postgres_url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds records (deployments," in err and "--force" in err
    assert main(["db", "copy", "--from", f"sqlite:{source}", "--to", postgres_url, "--force"]) == 0
    assert "its records were replaced" in capsys.readouterr().out
    with Store(tmp_path / "hook.db", url=postgres_url, readonly=True) as new:
        assert len(new.history()) == 2


def test_db_copy_goes_back_from_postgresql_to_a_new_sqlite_file(tmp_path, postgres_url, capsys):
    filled_sqlite(tmp_path / "state.db")
    assert main(["db", "copy", "--from", f"sqlite:{tmp_path / 'state.db'}", "--to", postgres_url]) == 0
    assert main(["db", "copy", "--from", postgres_url, "--to", f"sqlite:{tmp_path / 'back.db'}"]) == 0
    with Store(tmp_path / "state.db", readonly=True) as first, Store(tmp_path / "back.db", readonly=True) as back:
        assert rows(back) == rows(first)


def test_db_copy_from_a_missing_file_says_what_to_give(tmp_path, postgres_url, capsys):
    assert main(["db", "copy", "--from", f"sqlite:{tmp_path / 'nope.db'}", "--to", postgres_url]) == 1
    assert "no SQLite store at" in capsys.readouterr().err


def test_db_upgrade_brings_an_old_sqlite_store_to_the_current_version(tmp_path, capsys):
    old = tmp_path / "state.db"
    db = sqlite3.connect(old)
    db.execute(
        "CREATE TABLE gate_environments (config TEXT NOT NULL, repo TEXT NOT NULL, repo_path TEXT NOT NULL,"
        " position INTEGER NOT NULL, name TEXT NOT NULL, branch TEXT NOT NULL, promote_from TEXT NOT NULL,"
        " override_by TEXT NOT NULL, PRIMARY KEY (config, repo, name))"
    )
    db.close()
    assert main(["db", "upgrade", "--database", f"sqlite:{old}"]) == 0
    assert capsys.readouterr().out == (
        f"{old}: the schema went from version 0 to {migrations.LATEST} (a store from before schema versions, upgraded in place)\n"
    )
    assert main(["db", "upgrade", "--database", f"sqlite:{old}"]) == 0
    assert capsys.readouterr().out == f"{old}: the schema is at version {migrations.LATEST}, nothing to do\n"
    tables = {r[0] for r in sqlite3.connect(old).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(dbcopy.tables()) <= tables


def test_db_upgrade_of_the_configured_postgresql(tmp_path, postgres_url, capsys):
    config = tmp_path / "gitopsd.yml"
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nruntime_dir: {tmp_path / 'run'}\ndatabase: {postgres_url}\n"
        f"repositories:\n  - name: shop\n    path: {repo}\n    environments:\n      - name: qa\n"
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert capsys.readouterr().out.endswith(
        f"the schema went from version 0 to {migrations.LATEST} (a store from before schema versions, upgraded in place)\n"
    )
    assert (tmp_path / "state" / "hook-ledger.db").exists()  # the hook's copy, next to where SQLite would be
