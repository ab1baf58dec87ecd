"""The four DORA figures and the rework rate of one environment, from gitopsd's own records.

Pure computation over rows the store gives (docs/monitoring.md, "DORA figures", defines each figure): no git, no
clock but the one passed in. `figures(store, repo, env, since)` is what `gitopsd dora` and a metrics
collector call.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..adapters.store import DoraDeployment

DAY = 86_400.0
FIX_WITHIN = DAY  # a deploy of another commit this soon after a change failure is a fix (rework)
# Commits gitopsd or its commands made on the server (promotion merges, reverts): no change of anyone's, no lead time.
SERVER_MADE = frozenset({"promote", "rollback", "auto-promote", "auto-rollback"})
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}


class DoraStore(Protocol):
    def dora_deployments(self, repo: str | None, env: str, since: float) -> list[DoraDeployment]: ...
    def dora_lead_times(self, repo: str | None, env: str, since: float) -> list[float]: ...
    def dora_first_deployment(self, repo: str | None, env: str) -> float | None: ...


@dataclass(frozen=True)
class Figures:
    """The figures of one environment (of one repository, or of all) over a window; times in seconds."""

    repo: str | None
    env: str
    since: float  # the window's start as asked
    until: float
    days: float  # the window measured: from `since` or the environment's first deployment
    deployments: int  # deploys and rollbacks that succeeded or failed
    successful: int
    per_day: float
    deploy_days_per_week: float
    changes: int  # commits whose lead time is measured
    lead_time_median: float | None
    lead_time_p90: float | None
    change_failures: int  # failed deployments, and successful deploys rolled back afterwards
    change_failure_rate: float | None
    recoveries: int
    recovery_median: float | None
    recovery_p90: float | None
    unrecovered: int  # failures with no successful deployment after them yet
    rollbacks: int
    fixes: int
    rework_rate: float | None

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["since"] = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        doc["until"] = datetime.fromtimestamp(self.until, UTC).isoformat(timespec="seconds")
        return doc


def parse_span(text: str) -> float:
    """Given `90d`, `12h`, `2w`, `30m` or `45s`, return seconds. Raise ValueError with what is accepted."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, e.g. 90d, 12h, 2w (s, m, h, d, w)")
    return float(match.group(1)) * UNITS[match.group(2)]


def figures(
    store: DoraStore, repo: str | None, env: str, since: float, now: float | None = None, fix_within: float = FIX_WITHIN
) -> Figures:
    """The figures of `env` (in `repo`, or in every repository that has it) for deployments started since `since`."""
    now = time.time() if now is None else now
    return compute(
        store.dora_deployments(repo, env, since),
        store.dora_lead_times(repo, env, since),
        store.dora_first_deployment(repo, env),
        repo=repo,
        env=env,
        since=since,
        now=now,
        fix_within=fix_within,
    )


def compute(
    deployments: Iterable[DoraDeployment],
    leads: list[float],
    first: float | None,
    *,
    repo: str | None,
    env: str,
    since: float,
    now: float,
    fix_within: float = FIX_WITHIN,
) -> Figures:
    """Given the deploys and rollbacks that succeeded or failed as (repo, is a rollback, succeeded, commit, started,
    finished) rows by repo and id, and the lead times of the changes they brought, return the Figures."""
    start = max(since, first) if first is not None else since
    days = max(1.0, (now - start) / DAY)
    rows = list(deployments)
    counted, successful, failures, rollbacks, fixes, unrecovered = len(rows), 0, 0, 0, 0, 0
    deploy_days: set[int] = set()
    recoveries: list[float] = []
    down_since: float | None = None  # an unrecovered failure's end
    to_fix: tuple[float, str] | None = None  # (end, commit) of the last change failure not yet fixed
    for i, (repo_, rollback, ok, commit, started, finished) in enumerate(rows):
        if i and rows[i - 1][0] != repo_:  # the next repository: each one's history is its own
            unrecovered += down_since is not None
            down_since = to_fix = None
        if rollback:
            rollbacks += 1
        elif to_fix is not None and commit != to_fix[1]:
            fixes += started - to_fix[0] <= fix_within
            to_fix = None
        # A successful deploy whose environment's next deployment is a rollback was rolled back.
        rolled_back = ok and not rollback and i + 1 < counted and rows[i + 1][1] and rows[i + 1][0] == repo_
        if ok:
            successful += 1
            deploy_days.add(int(finished // DAY))
        if not ok or rolled_back:
            failures += 1
            down_since = finished if down_since is None else down_since
            to_fix = (finished, commit)
        elif down_since is not None:
            recoveries.append(finished - down_since)
            down_since = None
    unrecovered += down_since is not None
    return Figures(
        repo=repo,
        env=env,
        since=since,
        until=now,
        days=days,
        deployments=counted,
        successful=successful,
        per_day=successful / days,
        deploy_days_per_week=len(deploy_days) / max(1.0, days / 7),
        changes=len(leads),
        lead_time_median=_median(leads),
        lead_time_p90=_p90(leads),
        change_failures=failures,
        change_failure_rate=failures / counted if counted else None,
        recoveries=len(recoveries),
        recovery_median=_median(recoveries),
        recovery_p90=_p90(recoveries),
        unrecovered=unrecovered,
        rollbacks=rollbacks,
        fixes=fixes,
        rework_rate=(rollbacks + fixes) / counted if counted else None,
    )


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _p90(values: list[float]) -> float | None:
    """The nearest-rank 90th percentile: the smallest value at least 90% of the values do not exceed."""
    return sorted(values)[math.ceil(0.9 * len(values)) - 1] if values else None


def span(seconds: float | None) -> str:
    """`45s`, `12m`, `2h 13m`, `3d 4h`; `-` for none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f" {s % 60}s" if s < 600 and s % 60 else "")
    if s < DAY:
        return f"{s // 3600}h" + (f" {s % 3600 // 60}m" if s % 3600 // 60 else "")
    return f"{s // 86400}d" + (f" {s % 86400 // 3600}h" if s % 86400 // 3600 else "")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def text(f: Figures, since_label: str) -> list[str]:
    """The lines `gitopsd dora` prints."""
    where = f"{f.repo}/{f.env}" if f.repo else f.env
    rows = [
        (
            "deployment frequency",
            f"{f.per_day:.2f} per day, {f.deploy_days_per_week:.1f} deploy days per week ({f.successful} successful)",
        ),
        (
            "lead time for changes",
            f"median {span(f.lead_time_median)}, p90 {span(f.lead_time_p90)} ({_count(f.changes, 'commit')})",
        ),
        ("change failure rate", f"{_rate(f.change_failure_rate)} ({f.change_failures} failed or rolled back)"),
        (
            "failed deployment recovery",
            f"median {span(f.recovery_median)}, p90 {span(f.recovery_p90)} ({f.recoveries} recovered, {f.unrecovered} not yet)",
        ),
        ("rework rate", f"{_rate(f.rework_rate)} ({_count(f.rollbacks, 'rollback')}, {_count(f.fixes, 'fix')})"),
    ]
    return [
        f"DORA figures of {where}, last {since_label} ({f.days:.1f} days measured, {_count(f.deployments, 'deployment')}):"
    ] + [f"  {label:<28}{value}" for label, value in rows]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("x") else "s")
