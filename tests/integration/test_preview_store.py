"""A preview's freshness as the daemon's store and the hook's ledger read it from one real SQLite state database."""

from __future__ import annotations

from pathlib import Path

from gitopsd.adapters.store import Store
from gitopsd.gate.approvals import preview_binding
from gitopsd.gate.snapshot import Ledger, connect_readonly

OLD, CANDIDATE = "a" * 40, "b" * 40


def deploy(store: Store, tree: str, at: float) -> int:
    ident = store.begin(
        repo="shop",
        env="production",
        commit=tree,
        tree=tree,
        previous_commit=None,
        kind="deploy",
        trigger="promote",
        actor="root",
        now=at,
    )
    store.finish(ident, "succeeded", now=at + 1, outcome="ok", detail={"hosts": {"web-1": "changed"}})
    return ident


def test_taking_the_candidate_keeps_its_preview_fresh_and_a_rollback_or_reapply_makes_it_stale(tmp_path: Path):
    store = Store(tmp_path / "state.db")
    deploy(store, OLD, 100.0)
    seen = store.target_deployment("shop", "production", CANDIDATE)
    preview = store.add_preview(
        repo="shop",
        source_env="staging",
        target_env="production",
        commit=CANDIDATE,
        tree=CANDIDATE,
        rc="r1",
        target_deployment=seen,
        requested_by="root",
        now=200.0,
    )
    store.update_preview(preview, state="done", now=210.0, reason="web-1: 1 file", digest="d1", result="{}")
    ledger = Ledger(connect_readonly(str(tmp_path / "state.db")))

    def stale() -> tuple[str, str]:
        return (
            preview_binding(*_args(store.preview_marks("shop", "r1", "production")))[1],
            preview_binding(*_args(ledger.preview_marks("shop", "r1", "production")))[1],
        )

    assert stale() == ("", "")
    deploy(store, CANDIDATE, 300.0)  # production takes the candidate: what the preview was for
    assert stale() == ("", "")
    deploy(store, OLD, 400.0)  # then rolls back: the preview no longer describes a promotion
    assert all("it now runs deployment #3" in why for why in stale())


def _args(read: tuple[list[tuple[int, int, float, str]], int, float | None]) -> tuple:
    marks, deployed, drifted_at = read
    return marks, "production", deployed, drifted_at


def test_drift_found_on_the_target_after_the_preview_makes_it_stale(tmp_path: Path):
    from gitopsd.core.types import DriftReport, TaskChange

    store = Store(tmp_path / "state.db")
    deployment = deploy(store, OLD, 100.0)
    preview = store.add_preview(
        repo="shop",
        source_env="staging",
        target_env="production",
        commit=CANDIDATE,
        tree=CANDIDATE,
        rc="r1",
        target_deployment=store.target_deployment("shop", "production", CANDIDATE),
        requested_by="root",
        now=200.0,
    )
    store.update_preview(preview, state="done", now=210.0, reason="web-1: 1 file", digest="d1", result="{}")
    store.add_drift_report(
        DriftReport("shop", "production", deployment, 150.0, "drifted", "before the preview", (TaskChange("web-1", "t", "t|x"),))
    )
    assert preview_binding(*_args(store.preview_marks("shop", "r1", "production")))[1] == ""
    store.add_drift_report(
        DriftReport(
            "shop", "production", deployment, 250.0, "drifted", "someone edited a file", (TaskChange("web-1", "t", "t|x"),)
        )
    )
    assert (
        preview_binding(*_args(store.preview_marks("shop", "r1", "production")))[1]
        == "production's hosts drifted after preview #1"
    )
