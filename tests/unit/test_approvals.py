"""The human gates' pure rules: newest word per identity, expiry, required groups, sign-off counts."""

from __future__ import annotations

from gitopsd.gate.approvals import Policy, SignoffNeed, approval_state, signoff_unmet

DAY = 86400.0


def test_approvals_count_each_allowed_identity_once_by_its_newest_word():
    policy = Policy(2, ("bob", "carol", "dave"))
    rows = [("bob", "approve", "ok", 1.0), ("mallory", "approve", "me too", 2.0), ("bob", "approve", "again", 3.0)]
    assert approval_state(policy, rows, 10.0) == (["bob"], ["1 of 2 approvals (by bob); may approve: bob, carol, dave"])
    rows.append(("carol", "approve", "ok", 4.0))
    assert approval_state(policy, rows, 10.0) == (["bob", "carol"], [])
    rows.append(("bob", "withdraw", "", 5.0))  # withdrawn: no longer counts
    assert approval_state(policy, rows, 10.0)[0] == ["carol"]


def test_a_rejection_blocks_until_withdrawn():
    policy = Policy(1, ("bob", "carol"))
    rows = [("bob", "approve", "ok", 1.0), ("carol", "reject", "not yet", 2.0)]
    assert approval_state(policy, rows, 3.0)[1] == ["rejected by carol: not yet"]
    rows.append(("carol", "withdraw", "", 4.0))
    assert approval_state(policy, rows, 5.0)[1] == []


def test_approvals_expire_and_required_groups_need_one_of_theirs():
    policy = Policy(1, ("bob", "carol"), groups=(("product", ("carol",)),), expire_after=3 * DAY)
    rows = [("bob", "approve", "ok", 0.0)]
    assert approval_state(policy, rows, DAY)[1] == ["no approval from group product yet (carol)"]
    rows.append(("carol", "approve", "ok", DAY))
    assert approval_state(policy, rows, 2 * DAY)[1] == []
    valid, problems = approval_state(policy, rows, 3.5 * DAY)  # bob's approval is older than 3 days
    assert valid == ["carol"] and problems == []
    valid, problems = approval_state(policy, rows, 5 * DAY)
    assert valid == [] and problems[0].startswith("0 of 1 approval; expired: bob, carol")


def test_the_policy_survives_the_hooks_snapshot_encoding():
    policy = Policy(2, ("bob", "carol"), (("product", ("carol", "erin")),), False, 259200.0)
    back = Policy.decode(policy.encode())
    assert back is not None
    assert (back.required, back.approvers, back.groups, back.forbid_self, back.expire_after) == (
        2,
        ("bob", "carol"),
        (("product", ("carol", "erin")),),
        False,
        259200.0,
    )
    need = SignoffNeed.decode(SignoffNeed("staging", 2, ("alice", "ann")).encode())
    assert need is not None and (need.env, need.count, need.signers) == ("staging", 2, ("alice", "ann"))


def test_signoffs_need_their_count_and_a_rejection_wins():
    need = SignoffNeed("staging", 2, ("alice", "ann"))
    assert signoff_unmet(need, [("alice", "signoff", "ok", 1.0)]) == [
        "1 of 2 sign-offs in staging (by alice); may sign off: alice, ann"
    ]
    assert signoff_unmet(need, [("alice", "signoff", "ok", 1.0), ("ann", "signoff", "ok", 2.0)]) == []
    assert signoff_unmet(need, [("alice", "signoff", "ok", 1.0), ("ann", "reject", "bug 12", 2.0)]) == ["rejected by ann: bug 12"]
    assert signoff_unmet(need, [("eve", "signoff", "ok", 1.0), ("alice", "signoff", "ok", 1.0)])[0].startswith("1 of 2")
