"""`policy.rollback_trees`: which trees count as a rollback, from an environment's successful deployments; and a
refusal said in one line where a blocked head is shown (status, the dashboard, the API, the log)."""

from __future__ import annotations

from gitopsd.core.looks import blocked_reason
from gitopsd.gate.policy import refuse, rollback_trees


def test_the_target_is_the_tree_that_ran_before_the_current_one():
    assert rollback_trees([]) == (None, None)
    assert rollback_trees([("deploy", "T1")]) == ("T1", None)
    assert rollback_trees([("deploy", "T1"), ("deploy", "T2")]) == ("T2", "T1")
    assert rollback_trees([("deploy", "T1"), ("deploy", "T2"), ("reapply", "T2")]) == ("T2", "T1")


def test_a_rollback_pops_so_going_back_to_the_bad_release_is_not_a_rollback_again():
    history = [("deploy", "T1"), ("deploy", "T2"), ("rollback", "T1")]
    assert rollback_trees(history) == ("T1", None)
    history += [("deploy", "T3")]
    assert rollback_trees(history) == ("T3", "T1")
    assert rollback_trees(history + [("rollback", "T1")]) == ("T1", None)


def test_earlier_rollbacks_are_popped_like_a_stack():
    history = [("deploy", "T1"), ("deploy", "T2"), ("deploy", "T3"), ("rollback", "T2"), ("rollback", "T1")]
    assert rollback_trees(history) == ("T1", None)
    assert rollback_trees(history[:4]) == ("T2", "T1")


def test_a_tree_deployed_again_as_a_promotion_is_pushed_again():
    assert rollback_trees([("deploy", "T1"), ("deploy", "T2"), ("deploy", "T1")]) == ("T1", "T2")


def test_a_rollback_to_a_tree_beyond_the_bounded_history_starts_from_it():
    assert rollback_trees([("deploy", "T5"), ("rollback", "T0")]) == ("T0", "T5")


def test_a_blocked_heads_reason_is_one_line_without_the_refusals_indentation():
    verdict = refuse(
        "approvals",
        "production only takes release candidates with their approvals",
        ["tree b52c793 is release candidate rc/r1, which is not approved:", "  0 of 1 approval; may approve: ben, cat"],
        [],
    )
    assert blocked_reason(verdict) == (
        "production only takes release candidates with their approvals: tree b52c793 is release candidate rc/r1, "
        "which is not approved: 0 of 1 approval; may approve: ben, cat"
    )
