"""DORA figures (gitopsd/services/dora.py) computed from rows as the store gives them; docs/monitoring.md, "DORA figures", defines each.

Real: dora.compute and parse_span. Rows are written by hand as the store gives them: (repo, is a rollback,
succeeded, commit, started, finished) of deploys and rollbacks that succeeded or failed, and lead times.
"""

from __future__ import annotations

import pytest

from gitopsd.services import dora

H = 3600.0
D = 86_400.0
NOW = 100 * D


def dep(i: int, kind: str, result: str, commit: str, started: float, took: float = 60.0, repo: str = "shop"):
    return (repo, i, kind, result, commit, started, started + took)


def figures(deployments, leads=(), first=None, since=NOW - 90 * D):
    """Rows as dora_deployments gives them: reapplies, canceled and interrupted ones are not selected."""
    rows = [
        (repo, kind == "rollback", result == "succeeded", commit, started, finished)
        for repo, _i, kind, result, commit, started, finished in sorted(deployments, key=lambda r: (r[0], r[1]))
        if kind in ("deploy", "rollback") and result in ("succeeded", "failed")
    ]
    return dora.compute(rows, list(leads), first, repo=None, env="production", since=since, now=NOW)


def test_deployment_frequency_counts_successful_deploys_and_rollbacks_per_day_and_distinct_deploy_days():
    start = NOW - 14 * D
    rows = [
        dep(1, "deploy", "succeeded", "a", start + 1 * H),
        dep(2, "deploy", "succeeded", "b", start + 2 * H),
        dep(3, "deploy", "failed", "c", start + D + H),
        dep(4, "rollback", "succeeded", "b2", start + 8 * D),
        dep(5, "reapply", "succeeded", "b2", start + 9 * D),
        dep(6, "deploy", "canceled", "d", start + 10 * D),
    ]
    f = figures(rows, first=start)
    assert f.days == pytest.approx(14.0)  # measured from the environment's first deployment
    assert f.deployments == 4  # reapply and canceled are not deployments of changes
    assert f.successful == 3
    assert f.per_day == pytest.approx(3 / 14)
    assert f.deploy_days_per_week == pytest.approx(2 / 2)  # 2 distinct days over 2 weeks


def test_change_failure_rate_counts_failed_deployments_and_successful_deploys_rolled_back_afterwards():
    t = NOW - 5 * D
    rows = [
        dep(1, "deploy", "succeeded", "a", t),
        dep(2, "deploy", "succeeded", "b", t + H),
        dep(3, "rollback", "succeeded", "r", t + 2 * H),
        dep(4, "deploy", "failed", "c", t + 3 * H),
        dep(5, "rollback", "succeeded", "r2", t + 4 * H),
    ]
    f = figures(rows)
    assert (f.change_failures, f.deployments) == (2, 5)  # b (rolled back) and c (failed)
    assert f.change_failure_rate == pytest.approx(0.4)
    assert f.rollbacks == 2


def test_recovery_time_runs_from_the_end_of_the_first_failure_to_the_end_of_the_next_success():
    t = NOW - 5 * D
    rows = [
        dep(1, "deploy", "failed", "a", t, took=60),
        dep(2, "deploy", "failed", "a", t + 600, took=60),
        dep(3, "deploy", "succeeded", "b", t + 3000, took=200),
        dep(4, "deploy", "failed", "c", t + D, took=100),
    ]
    f = figures(rows)
    assert f.recoveries == 1 and f.recovery_median == pytest.approx(3200 - 60)
    assert f.unrecovered == 1  # c has no success after it yet


def test_a_fix_is_the_first_deploy_of_another_commit_within_a_day_of_a_change_failure():
    t = NOW - 10 * D
    rows = [
        dep(1, "deploy", "failed", "a", t),
        dep(2, "deploy", "failed", "a", t + 600),  # a retry: no fix
        dep(3, "deploy", "succeeded", "b", t + 2 * H),  # the fix
        dep(4, "deploy", "succeeded", "c", t + 3 * H),  # ordinary
        dep(5, "deploy", "failed", "d", t + 2 * D),
        dep(6, "deploy", "succeeded", "e", t + 4 * D),
    ]  # too late
    f = figures(rows)
    assert (f.rollbacks, f.fixes, f.deployments) == (0, 1, 6)
    assert f.rework_rate == pytest.approx(1 / 6)


def test_lead_time_takes_median_and_nearest_rank_p90():
    f = figures([], [1 * H, 3 * H, 2 * H, 4 * H])
    assert f.changes == 4
    assert f.lead_time_median == pytest.approx(2.5 * H)
    assert f.lead_time_p90 == pytest.approx(4 * H)


def test_repositories_are_followed_separately_when_all_are_counted():
    t = NOW - D
    rows = [
        dep(1, "deploy", "succeeded", "a", t, repo="a"),
        dep(3, "rollback", "succeeded", "r", t + H, repo="a"),
        dep(2, "deploy", "succeeded", "x", t + 0.5 * H, repo="b"),
    ]
    f = figures(rows)
    assert f.change_failures == 1  # only a's deploy was rolled back


def test_an_empty_history_has_no_rates():
    f = figures([])
    assert f.deployments == 0 and f.change_failure_rate is None and f.rework_rate is None
    assert f.lead_time_median is None and f.per_day == 0
    assert "DORA figures of production" in dora.text(f, "90d")[0]


@pytest.mark.parametrize("text,seconds", [("90d", 90 * D), ("12h", 12 * H), ("2w", 14 * D), ("30m", 1800), ("1.5d", 1.5 * D)])
def test_spans_are_a_number_and_a_unit(text, seconds):
    assert dora.parse_span(text) == seconds


@pytest.mark.parametrize("text", ["90", "d", "-3d", "0d", "3 days", ""])
def test_other_spans_are_refused_with_what_is_accepted(text):
    with pytest.raises(ValueError, match="e.g. 90d"):
        dora.parse_span(text)
