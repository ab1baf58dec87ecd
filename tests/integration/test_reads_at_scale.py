"""`history`, `status` and the start at 1,000 repositories (issue 28): what each reads, not how long it takes.

Real: a bare repository with gitopsd's hook (install-hooks saved the configuration snapshot), the SQLite store,
the command line run in-process. Faked: nothing; services.readconfig.repository_problem is only watched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gitopsd.adapters.store import Store, deployments
from gitopsd.services import readconfig
from tests.support import Sandbox, in_process


def test_history_reads_the_store_and_never_looks_at_the_repositories_folders(short_tmp, monkeypatch):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    looked: list[Path] = []
    real = readconfig.repository_problem
    monkeypatch.setattr(readconfig, "repository_problem", lambda path: looked.append(path) or real(path))
    in_process(["history", "--limit", "50", "--config", str(sandbox.config)], env=sandbox.environ())
    assert looked == [], "2,000 stats at 1,000 repositories, for nothing history shows"
    in_process(["status", "--json", "--config", str(sandbox.config)], env=sandbox.environ())
    assert looked == [sandbox.repo.resolve()], "status still says which repository cannot be read"


def _begin(store: Store, n: int) -> int:
    """The n-th deployment of shop/qa, begun at 1000 + n."""
    return store.begin(
        repo="shop",
        env="qa",
        commit=f"{n:040x}",
        tree=f"{n:040x}",
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="test",
        now=1000.0 + n,
    )


def test_the_deployments_still_active_are_found_through_an_index_not_by_reading_the_history(tmp_path):
    with Store(tmp_path / "state.db") as store:
        for n in range(3):
            dep = _begin(store, n)
            if n < 2:
                store.finish(dep, "succeeded", now=1001.0 + n)
        assert [d.id for d in store.mark_interrupted(2000.0)] == [3]
    db = sqlite3.connect(tmp_path / "state.db")
    plans = [
        db.execute("EXPLAIN QUERY PLAN " + query).fetchall()
        for query in (
            "SELECT * FROM deployments WHERE result IN ('queued', 'running')",  # Store.mark_interrupted, at each start
            "SELECT id, repo, env, result FROM deployments WHERE id > 5 AND id <= 9 AND result IN ('queued', 'running')",
        )
    ]
    db.close()
    assert all(
        "USING INDEX deployments_active" in str(plan) or "USING COVERING INDEX deployments_active" in str(plan) for plan in plans
    ), plans


def test_the_work_folders_to_prune_after_each_deployment_are_found_through_an_index_not_by_reading_the_history(tmp_path):
    with Store(tmp_path / "state.db") as store:
        ids = []
        for n in range(4):
            dep = _begin(store, n)
            store.set_workdir(dep, f"/w/{n}")
            store.finish(dep, "succeeded", now=1001.0 + n)
            ids.append(dep)
        assert store.old_workdirs(2) == [(ids[1], "/w/1"), (ids[0], "/w/0")]
    db = sqlite3.connect(tmp_path / "state.db")
    plan = db.execute("EXPLAIN QUERY PLAN " + deployments.OLD_WORKDIRS, (2,)).fetchall()
    db.close()
    assert "INDEX deployments_workdir" in str(plan), plan
