"""Drift detection's judgement, pure: what a check-mode run of the deployed tree says about its hosts.

The first successful check-mode run after a deployment is its baseline: tasks that report
`changed` on every run (a `command` without `changed_when`, a template with a timestamp) are the
playbook's habit, not drift. Later runs report only the (host, task) pairs outside the baseline.
A run that itself failed is `unknown`: it says nothing about the hosts, so never drift.
"""

from __future__ import annotations

from .types import DriftReport, RunOutcome, TaskChange


def outside(changes: tuple[TaskChange, ...], baseline: tuple[TaskChange, ...]) -> tuple[TaskChange, ...]:
    """The changes whose (host, task) is not in the baseline, each once, in the run's order."""
    known = {(c.host, c.key) for c in baseline}
    seen: set[tuple[str, str]] = set()
    found = []
    for change in changes:
        if (change.host, change.key) in known or (change.host, change.key) in seen:
            continue
        seen.add((change.host, change.key))
        found.append(change)
    return tuple(found)


def judge_drift(
    repo: str, env: str, deployment_id: int, outcome: RunOutcome, baseline: DriftReport | None, now: float
) -> DriftReport:
    """Given a check-mode run's outcome and the deployment's baseline (None: none yet), return the report.

    A failed run is `unknown` with its reason; the first successful run is the `baseline`; after it,
    `drifted` lists the changes outside the baseline, `clean` when there are none.
    """
    if not outcome.ok:
        return DriftReport(repo, env, deployment_id, now, "unknown", f"the check-mode run failed: {outcome.reason}")
    if baseline is None:
        n = len({(c.host, c.key) for c in outcome.changes})
        reason = (
            f"baseline: {n} task result{'s' if n != 1 else ''} that report changed right after the deployment "
            "are not counted as drift"
            if n
            else "baseline: nothing would change"
        )
        return DriftReport(repo, env, deployment_id, now, "baseline", reason, outside(outcome.changes, ()))
    drifted = outside(outcome.changes, baseline.changes)
    if not drifted:
        return DriftReport(repo, env, deployment_id, now, "clean", None)
    hosts = sorted({c.host for c in drifted})
    tasks = len(drifted)
    return DriftReport(
        repo,
        env,
        deployment_id,
        now,
        "drifted",
        f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} drifted ({', '.join(hosts)}): "
        f"{tasks} task{'s' if tasks != 1 else ''} would change",
        drifted,
    )


def heal_delay(interval: float, heals: int) -> float:
    """Seconds to wait after the last heal before healing again, when `heals` heals in a row did not hold.

    None in a row: at once. Then one drift interval, doubling, capped at a day: a host that keeps
    drifting (something else manages it) is not re-applied every few minutes.
    """
    if heals <= 0:
        return 0.0
    return float(min(86400.0, interval * 2 ** (heals - 1)))
