"""Approvals bound to the preview they saw (gate/approvals.py): pure functions, no store."""

from __future__ import annotations

from gitopsd.gate.approvals import Policy, approval_state, preview_binding, preview_stale

POLICY = Policy(1, ("ann", "bob"), forbid_self=False)


def test_a_preview_goes_stale_when_the_target_deploys_again_or_drifts_after_it():
    mark = (3, 10, 1000.0, "d1")  # preview #3 saw deployment #10
    assert preview_stale(mark, "production", 10, None) == ""
    assert preview_stale(mark, "production", 10, 900.0) == ""  # drift found before the preview
    assert "it now runs deployment #11, the preview saw #10" in preview_stale(mark, "production", 11, None)
    assert preview_stale(mark, "production", 10, 1001.0) == "production's hosts drifted after preview #3"
    assert "saw nothing deployed" in preview_stale((1, 0, 5.0, "d"), "production", 4, None)


def test_approvals_carry_over_to_a_fresh_preview_only_when_it_shows_the_same_changes():
    rows = [("ann", "approve", "ok", 1500.0)]
    stale_first = (1, 10, 1000.0, "same")
    same = (2, 11, 2000.0, "same")
    since, stale = preview_binding([same, stale_first], "production", 11, None)
    assert stale == "" and since == 1000.0
    assert approval_state(POLICY, [r for r in rows if r[3] >= since], 3000.0)[1] == []
    other = (2, 11, 2000.0, "other")
    since, stale = preview_binding([other, stale_first], "production", 11, None)
    assert stale == "" and since == 2000.0
    assert approval_state(POLICY, [r for r in rows if r[3] >= since], 3000.0)[1] == ["0 of 1 approval; may approve: ann, bob"]


def test_a_candidate_without_a_finished_preview_is_judged_on_its_approvals_alone():
    assert preview_binding([], "production", 7, 99.0) == (0.0, "")
