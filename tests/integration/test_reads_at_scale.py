"""`history` and `status` at 1,000 repositories (issue 28): what each reads, not how long it takes.

Real: a bare repository with gitopsd's hook (install-hooks saved the configuration snapshot), the SQLite store,
the command line run in-process. Faked: nothing; services.status.repository_problem is only watched.
"""
from __future__ import annotations

from pathlib import Path

from gitopsd.services import status
from tests.support import Sandbox, in_process


def test_history_reads_the_store_and_never_looks_at_the_repositories_folders(short_tmp, monkeypatch):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    looked: list[Path] = []
    real = status.repository_problem
    monkeypatch.setattr(status, "repository_problem", lambda path: looked.append(path) or real(path))
    in_process(["history", "--limit", "50", "--config", str(sandbox.config)], env=sandbox.environ())
    assert looked == [], "2,000 stats at 1,000 repositories, for nothing history shows"
    in_process(["status", "--json", "--config", str(sandbox.config)], env=sandbox.environ())
    assert looked == [sandbox.repo.resolve()], "status still says which repository cannot be read"
