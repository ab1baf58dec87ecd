"""The ledger behind DORA and /metrics: commits first seen and first deployed, and grouped totals over id ranges."""

from __future__ import annotations

from typing import NamedTuple

from ...base.storeerrors import StatementFailure
from ...core.types import Deployment
from .base import StoreBase, bookkeeping

# A deploy or rollback as the DORA figures count it (services/dora.py): (repo, is a rollback, succeeded, commit,
# started_at, finished_at or started_at). Plain tuples, not a NamedTuple: `gitopsd dora` reads 100,000 of them and
# making a NamedTuple of each cost about 80 ms of its 400 (bench/run.py --only dora).
DoraDeployment = tuple[str, int, int, str, float, float]


class DeploymentTotal(NamedTuple):
    """Finished deployments of one group (deployment_totals): how many, how long, the bucket of their duration."""

    repo: str
    env: str
    kind: str
    result: str
    automatic: bool | int  # an automatic rollback's (SQLite says 1 or 0)
    bucket: int
    deployments: int
    seconds: float
    last_success: float | None


class LeadTimeTotal(NamedTuple):
    """The lead times of one environment's changes in one bucket (lead_times)."""

    repo: str
    env: str
    bucket: int
    changes: int
    seconds: float


class CheckTotal(NamedTuple):
    """How many checks of one type passed (or failed) in one environment's deployments (check_totals)."""

    repo: str
    env: str
    type: str
    passed: bool | int
    checks: int


class Ledger(StoreBase):
    """When commits reached the server and each environment (dora.py), and the aggregates for /metrics (none per row)."""

    def seen_tips(self, repo: str) -> list[str] | None:
        """The branch heads at the last walk for new commits; None before the first walk (firstseen.py)."""
        try:
            rows = self._rows("SELECT tips FROM seen_refs WHERE repo = ?", (repo,))
        except StatementFailure:  # a store written by an older daemon
            return None
        return rows[0]["tips"].split() if rows else None

    @bookkeeping
    def record_seen(self, repo: str, commits: list[tuple[str, str]], at: float, tips: list[str]) -> None:
        """Record (commit, via) first seen at `at` (an earlier record wins) and the heads walked to, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO commits_seen (repo, commit_id, first_seen, via) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(repo, c, at, via) for c, via in commits],
            )
            db.execute(
                "INSERT INTO seen_refs (repo, tips) VALUES (?, ?) ON CONFLICT (repo) DO UPDATE SET tips = excluded.tips",
                (repo, "\n".join(tips)),
            )

    @bookkeeping
    def record_deployed_commits(self, d: Deployment, commits: list[str], not_changes: tuple[str, ...]) -> None:
        """Remember that deployment `d` brought `commits` to its environment (the first that did keeps the record),
        with each one's lead time: from when it first reached the server (else, for a commit seen before that was
        recorded, its first deployment's start anywhere) to `d`'s end. None for commits whose `via` is in
        `not_changes` (gitopsd made them)."""
        end = d.finished_at or d.started_at
        marks = ",".join("?" * len(not_changes)) or "NULL"
        # `seen`: when the commit first reached the server (else its first deployment's start); never after d's start.
        sql = (
            "INSERT INTO commits_deployed (repo, env, commit_id, deployment_id, deployed_at, lead)"  # noqa: S608 (placeholders only)
            f" SELECT ?, ?, ?, ?, ?, CASE WHEN k.via IN ({marks}) THEN NULL WHEN k.seen < ? THEN ? - k.seen ELSE ? - ? END"  # noqa: S608 (placeholders only; values are bound)
            " FROM (SELECT s.via AS via, COALESCE(s.first_seen, (SELECT MIN(d.started_at) FROM commits_deployed c"
            " JOIN deployments d ON d.id = c.deployment_id WHERE c.repo = ? AND c.commit_id = ?)) AS seen"
            " FROM (SELECT 1) AS one LEFT JOIN commits_seen s ON s.repo = ? AND s.commit_id = ?) AS k"
            " WHERE true ON CONFLICT DO NOTHING"  # WHERE: SQLite reads an ON after a join as the join's otherwise
        )
        start = d.started_at
        with self._transaction() as db:
            db.executemany(
                sql, [(d.repo, d.env, c, d.id, end, *not_changes, start, end, end, start, d.repo, c, d.repo, c) for c in commits]
            )

    def dora_deployments(self, repo: str | None, env: str, since: float) -> list[DoraDeployment]:
        """(repo, is a rollback, succeeded, commit, started_at, finished_at) of `env`'s deploys and rollbacks that
        succeeded or failed, started since `since`, by repository and id (dora.py computes the figures)."""
        where = "env = ? AND started_at >= ? AND kind IN ('deploy', 'rollback') AND result IN ('succeeded', 'failed')" + (
            " AND repo = ?" if repo else ""
        )
        return self._plain(
            "SELECT repo, kind = 'rollback', result = 'succeeded', commit_id, started_at,"  # noqa: S608 (constant clauses; values are bound)
            f" COALESCE(finished_at, started_at) FROM deployments WHERE {where} ORDER BY repo, id",
            (env, since, *([repo] if repo else [])),
        )

    def dora_first_deployment(self, repo: str | None, env: str) -> float | None:
        """When `env` (in `repo`, or in any repository) was first deployed: a younger history is measured from there."""
        rows = self._plain(
            "SELECT MIN(started_at) FROM deployments WHERE env = ?" + (" AND repo = ?" if repo else ""),  # noqa: S608 (constant clauses)
            (env, *([repo] if repo else [])),
        )
        return rows[0][0] if rows else None

    def dora_lead_times(self, repo: str | None, env: str, since: float) -> list[float]:
        """The lead times (seconds) of the changes that deployments ending since `since` brought to `env` first."""
        return [
            lead
            for (lead,) in self._plain(
                "SELECT lead FROM commits_deployed WHERE env = ? AND deployed_at >= ? AND lead IS NOT NULL"  # noqa: S608 (constant clauses)
                + (" AND repo = ?" if repo else ""),
                (env, since, *([repo] if repo else [])),
            )
        ]

    def deployment_ids(self, after: int) -> tuple[int, list[tuple[int, str, str, str]]]:
        """(highest id, [(id, repo, env, result)] of deployments above `after` still queued or running)."""
        top = self._rows("SELECT COALESCE(MAX(id), 0) FROM deployments")[0][0]
        active = self._rows(
            "SELECT id, repo, env, result FROM deployments WHERE id > ? AND id <= ?"
            " AND result IN ('queued', 'running') ORDER BY id",
            (after, top),
        )
        return int(top), [(int(r[0]), r[1], r[2], r[3]) for r in active]

    def deployment_totals(self, after: int, upto: int, bounds: tuple[float, ...]) -> list[DeploymentTotal]:
        """Finished deployments with ids in (after, upto], grouped: (repo, env, kind, result, automatic, bucket,
        count, seconds, last success), `bucket` the index of the first of `bounds` the duration is within."""
        case = " ".join(f"WHEN finished_at - started_at <= {float(b)!r} THEN {i}" for i, b in enumerate(bounds))
        return [
            DeploymentTotal(*r)
            for r in self._rows(
                f"SELECT repo, env, kind, result, trigger = 'auto-rollback', CASE {case} ELSE {len(bounds)} END AS bucket,"  # noqa: S608 (numbers formatted from floats; values are bound)
                " COUNT(*), SUM(finished_at - started_at),"
                " MAX(CASE WHEN result = 'succeeded' THEN finished_at END) FROM deployments"
                " WHERE id > ? AND id <= ? AND result NOT IN ('queued', 'running')"
                " GROUP BY repo, env, kind, result, trigger = 'auto-rollback', bucket",
                (after, upto),
            )
        ]

    def lead_times(self, after: int, upto: int, bounds: tuple[float, ...]) -> list[LeadTimeTotal]:
        """(repo, env, bucket, count, seconds) of the lead times of the commits that successful deployments with
        ids in (after, upto] brought to an environment first: from when each commit first reached the server to
        that deployment's end (table commits_deployed, as `gitopsd dora` counts them)."""
        case = " ".join(f"WHEN lead <= {float(b)!r} THEN {i}" for i, b in enumerate(bounds))
        try:
            return [
                LeadTimeTotal(*r)
                for r in self._rows(
                    f"SELECT repo, env, CASE {case} ELSE {len(bounds)} END AS bucket, COUNT(*), SUM(lead)"  # noqa: S608 (numbers formatted from floats; values are bound)
                    " FROM commits_deployed WHERE deployment_id > ? AND deployment_id <= ? AND lead IS NOT NULL"
                    " GROUP BY repo, env, bucket",
                    (after, upto),
                )
            ]
        except StatementFailure:  # a store without commits_deployed (older daemon)
            return []

    def check_totals(self, after: int, upto: int) -> list[CheckTotal]:
        """(repo, env, type, passed, count) of the checks recorded by finished deployments with ids in (after, upto];
        `type` is the first word of the check's name (http, prometheus, playbook)."""
        return [CheckTotal(*r) for r in self._rows(self.dialect.CHECK_TOTALS, (after, upto))]
