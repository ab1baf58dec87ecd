"""Rejected trees (gate/rejections.py): which environments a rejection covers, which word counts, and the
reconciler recording one when it rolls a failed deployment back. Real: the SQLite store; fake: Git and Ansible
(tests/unit/test_reconciler.py's world)."""

from __future__ import annotations

from gitopsd.core.errors import GitError
from gitopsd.gate.rejections import describe, rejection_for
from gitopsd.gate.snapshot import GateEnvironment, GateRepository
from tests.unit.test_reconciler import auto_rollback, head, look, world  # noqa: F401  (fixtures)

REPO = GateRepository(
    "shop",
    "/nonexistent",
    [
        GateEnvironment("qa", "qa", "main"),
        GateEnvironment("staging", "staging", "qa"),
        GateEnvironment("production", "production", "staging"),
    ],
)


def row(
    env: str, kind: str = "reject", deployment: int | None = 7, actor: str = "gitopsd", reason: str = "broke", at: float = 0.0
) -> tuple:
    return (env, kind, deployment, actor, reason, at, "c" * 40)


def test_a_tree_that_failed_in_staging_is_rejected_there_and_in_production_but_not_in_qa():
    rows = [row("staging")]
    assert rejection_for(REPO, rows, "qa") is None
    assert rejection_for(REPO, rows, "staging") == rows[0]
    assert rejection_for(REPO, rows, "production") == rows[0]


def test_the_newest_word_per_environment_counts_and_an_unreject_lifts_only_its_own_environment():
    rows = [row("staging"), row("production", deployment=None, actor="alice"), row("staging", "unreject", None, "ops")]
    assert rejection_for(REPO, rows, "staging") is None
    assert rejection_for(REPO, rows, "production") == rows[1]
    assert rejection_for(REPO, [*rows, row("production", "unreject", None, "ops")], "production") is None


def test_the_reason_names_the_deployment_that_failed_or_the_person_who_rejected_it():
    assert describe(row("production", deployment=12, reason="batch 1/2 failed")) == (
        "it failed in production in deployment #12: batch 1/2 failed"
    )
    assert describe(row("production", deployment=12, reason="deployment #12 of abc1234 failed: batch 1/2 failed")) == (
        "it failed in production: deployment #12 of abc1234 failed: batch 1/2 failed"
    )
    assert describe(row("staging", deployment=None, actor="alice", reason="data loss\nin tests")) == (
        "alice rejected it for staging: data loss in tests"
    )


def test_a_failed_deployment_that_is_rolled_back_rejects_its_tree_with_that_deployment(auto_rollback):  # noqa: F811
    reconciler, store, git, *_ = auto_rollback
    look(reconciler)
    failed = store.last("shop", "qa")
    assert failed.result == "failed" and git.heads["qa"].tree == head(1).tree  # rolled back
    [(env, kind, deployment, actor, reason, _at, commit)] = store.rejections("shop", head(2).tree)
    assert (env, kind, deployment, actor, commit) == ("qa", "reject", failed.id, "gitopsd", head(2).commit)
    assert reason.startswith(f"deployment #{failed.id} of {head(2).commit[:7]} failed: ")
    assert store.rejections("shop", head(1).tree) == []


def test_a_failed_deployment_whose_rollback_failed_is_not_rejected_so_it_stays_failed_for_a_person(
    auto_rollback,  # noqa: F811
    monkeypatch,
):
    reconciler, store, *_ = auto_rollback

    def unwritable(*args, **kwargs):
        raise GitError("git commit-tree: error: insufficient permission")

    monkeypatch.setattr(reconciler.git, "revert", unwritable)
    look(reconciler)
    assert store.rejections("shop", head(2).tree) == []
    repo = reconciler.config.repositories[0]
    decision = reconciler._look_at(repo, repo.environments[0], "t")
    assert decision.action == "failed"
