"""Errors worth retrying are raised as TransientError and retried with backoff, without a traceback (issue 11).

What is real: SQLite stores in temp folders, a bare Git repository and `git update-ref`. What is faked:
the Git port of the reconciler (tests/unit/test_reconciler.py's world), to make it fail on purpose.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

from gitopsd.adapters.store import Store
from gitopsd.base import gitcli
from gitopsd.base.storeerrors import StoreBusy, StoreDamaged, StoreUnusable
from gitopsd.core.errors import ConfigurationError, StalledError, StoreError, TransientError
from gitopsd.core.reconcile import TRANSIENT_RETRY
from gitopsd.core.types import FailureStatus, Trigger
from tests.support import git
from tests.unit.test_reconciler import head, look, world  # noqa: F401  (the fixture)


def test_a_busy_store_raises_a_transient_store_error_that_names_the_file(tmp_path):
    store = Store(tmp_path / "state.db")
    # A failure to clear: clear_failure writes only then (an in-sync look with nothing to clear only reads, issue 28).
    store.record_failure("shop", "qa", FailureStatus("a" * 40, 1, None, False, "failed"))
    holder = sqlite3.connect(tmp_path / "state.db")
    holder.execute("BEGIN EXCLUSIVE")
    store._db.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(StoreBusy) as caught:
        store.clear_failure("shop", "qa")
    assert isinstance(caught.value, TransientError) and isinstance(caught.value, StoreError)
    assert not isinstance(caught.value, sqlite3.Error)
    assert str(caught.value) == (
        f"the state database {tmp_path / 'state.db'} is busy (database is locked): "
        "another process holds it. Try again in a moment."
    )
    holder.rollback()
    assert store.clear_failure("shop", "qa") is True
    assert store.clear_failure("shop", "qa") is False


def test_a_damaged_or_forbidden_store_is_raised_as_the_kind_a_person_must_fix(tmp_path):
    (tmp_path / "state.db").write_bytes(b"not a database" * 400)
    with pytest.raises(StoreDamaged) as damaged:
        Store(tmp_path / "state.db")
    assert isinstance(damaged.value, StalledError) and "Move it aside" in str(damaged.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError) as other:  # its folder cannot be made: an OSError under the store, told the same way
        Store(tmp_path / "file" / "state.db")
    assert "the state database" in str(other.value)
    assert issubclass(StoreUnusable, ConfigurationError)


def test_a_transient_error_during_a_look_is_a_warning_and_a_look_again_soon(world, caplog):  # noqa: F811
    reconciler, _store, git, _runner, clock, scheduled = world

    def busy(repo, branch):
        raise TransientError("the state database x is busy")

    git.head = busy
    with caplog.at_level(logging.WARNING):
        look(reconciler)
    [(again, at)] = scheduled
    assert (again.repo, again.env, again.trigger, at) == ("shop", "qa", Trigger.RETRY, clock.now + TRANSIENT_RETRY)
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING and record.exc_info is None and "is busy" in record.getMessage()


def test_a_transient_error_during_a_deployment_is_a_failed_attempt_retried_with_backoff(world, caplog):  # noqa: F811
    reconciler, store, git, _runner, clock, scheduled = world
    git.heads["qa"] = head(1)

    def locked(repo, commit, dest):
        raise TransientError("cannot move qa: another git process holds its lock")

    git.export = locked
    look(reconciler)
    failure = store.failure("shop", "qa")
    assert failure is not None and not failure.stalled and failure.failures == 1
    assert "another git process holds its lock" in failure.reason
    assert any(look.trigger == Trigger.RETRY and at > clock.now for look, at in scheduled)
    assert not [r for r in caplog.records if r.exc_info]  # no "deployment crashed" traceback


def test_a_held_ref_lock_is_retried_then_transient_and_a_moved_branch_is_false(tmp_path, monkeypatch):
    repo = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(repo))
    tree = gitcli.empty_tree(repo)
    first = gitcli.commit_tree(repo, tree, [], "one")
    second = gitcli.commit_tree(repo, tree, [first], "two")
    assert gitcli.create_branch(repo, "qa", first, "test")
    monkeypatch.setattr(gitcli, "LOCK_RETRIES", (0.01, 0.01))
    lock = repo / "refs" / "heads" / "qa.lock"
    lock.write_text("")
    with pytest.raises(TransientError) as caught:
        gitcli.update_branch(repo, "qa", second, first, "test")
    assert f"another git process holds {lock}" in str(caught.value)
    lock.unlink()
    assert gitcli.update_branch(repo, "qa", second, second, "test") is False  # not where we thought: no retry helps
    assert gitcli.update_branch(repo, "qa", second, first, "test") is True
