"""Post-deploy watches and drift reports (the reconciler's watch and drift engines)."""

from __future__ import annotations

import json
from typing import Any

from ...base.storeerrors import StatementFailure
from ...core.types import DriftReport, HostInfo, TaskChange, WatchWindow
from .backend import Row
from .base import StoreBase, bookkeeping


class Watches(StoreBase):
    """Each environment's post-deploy watch (a restart resumes it) and its drift detection runs."""

    @bookkeeping
    def start_watch(self, watch: WatchWindow) -> None:
        """Record the watch of a deployment, replacing the environment's previous one."""
        self._write(
            "INSERT INTO watches (repo, env, deployment_id, commit_id, tree, previous_tree, started_at,"
            " until, state, reason, hosts, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (repo, env) DO UPDATE SET deployment_id = excluded.deployment_id, commit_id = excluded.commit_id,"
            " tree = excluded.tree, previous_tree = excluded.previous_tree, started_at = excluded.started_at,"
            " until = excluded.until, state = excluded.state, reason = excluded.reason, hosts = excluded.hosts,"
            " checked_at = excluded.checked_at",
            (
                watch.repo,
                watch.env,
                watch.deployment_id,
                watch.commit,
                watch.tree,
                watch.previous_tree,
                watch.started_at,
                watch.until,
                watch.state,
                watch.reason,
                json.dumps([[h.name, h.vars] for h in watch.hosts]),
                watch.checked_at,
            ),
        )

    def watch(self, repo: str, env: str) -> WatchWindow | None:
        """The environment's last post-deploy watch (any state), None when it never had one."""
        try:
            rows = self._rows("SELECT * FROM watches WHERE repo = ? AND env = ?", (repo, env))
        except StatementFailure:  # a store written by an older daemon
            return None
        return self._watch(rows[0]) if rows else None

    def active_watches(self) -> list[WatchWindow]:
        """Watches still `watching`: a restarted daemon resumes them (or ends those whose time ran out)."""
        return [self._watch(r) for r in self._rows("SELECT * FROM watches WHERE state = 'watching' ORDER BY until")]

    def end_watch(self, repo: str, env: str, deployment_id: int, state: str, reason: str, now: float) -> bool:
        """End a running watch of this deployment as passed, breached or ended; False if it was not running."""
        return (
            self._write(
                "UPDATE watches SET state = ?, reason = ?, checked_at = ? WHERE repo = ? AND env = ?"
                " AND deployment_id = ? AND state = 'watching'",
                (state, reason, now, repo, env, deployment_id),
            ).rowcount
            > 0
        )

    @bookkeeping
    def watch_checked(self, repo: str, env: str, deployment_id: int, now: float) -> None:
        self._write(
            "UPDATE watches SET checked_at = ? WHERE repo = ? AND env = ? AND deployment_id = ?", (now, repo, env, deployment_id)
        )

    @staticmethod
    def _watch(row: Row) -> WatchWindow:
        hosts = tuple(
            HostInfo(str(name), {str(k): str(v) for k, v in values.items()}) for name, values in json.loads(row["hosts"] or "[]")
        )
        return WatchWindow(
            row["repo"],
            row["env"],
            row["deployment_id"],
            row["commit_id"],
            row["tree"],
            row["previous_tree"],
            row["started_at"],
            row["until"],
            row["state"],
            row["reason"],
            hosts,
            row["checked_at"],
        )

    def add_drift_report(self, report: DriftReport) -> int:
        cur = self._write(
            "INSERT INTO drift_reports (repo, env, deployment_id, checked_at, state, reason, hosts, changes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                report.repo,
                report.env,
                report.deployment_id,
                report.checked_at,
                report.state,
                report.reason,
                len(report.hosts) if report.state == "drifted" else 0,
                json.dumps([c.as_json() for c in report.changes]),
            ),
        )
        # The last 50 per environment are plenty for `gitopsd drift`; older reports go.
        self._write(
            "DELETE FROM drift_reports WHERE repo = ? AND env = ? AND state != 'baseline' AND id < (SELECT id"
            " FROM drift_reports WHERE repo = ? AND env = ? ORDER BY id DESC LIMIT 1 OFFSET 49)",
            (report.repo, report.env, report.repo, report.env),
        )
        return int(cur.lastrowid or 0)

    def drift_report(self, repo: str, env: str, deployment_id: int | None = None) -> DriftReport | None:
        """The environment's newest drift report (of that deployment, when given)."""
        args: list[Any] = [repo, env]
        where = "repo = ? AND env = ?"
        if deployment_id is not None:
            where, args = where + " AND deployment_id = ?", [*args, deployment_id]
        try:
            rows = self._rows(f"SELECT * FROM drift_reports WHERE {where} ORDER BY id DESC LIMIT 1", tuple(args))  # noqa: S608 (constant clauses; values are bound)
        except StatementFailure:  # a store written by an older daemon
            return None
        return self._drift_report(rows[0]) if rows else None

    def drift_baseline(self, repo: str, env: str, deployment_id: int) -> DriftReport | None:
        """The baseline run of this deployment: the first successful check-mode run after it."""
        rows = self._rows(
            "SELECT * FROM drift_reports WHERE repo = ? AND env = ? AND deployment_id = ?"
            " AND state = 'baseline' ORDER BY id LIMIT 1",
            (repo, env, deployment_id),
        )
        return self._drift_report(rows[0]) if rows else None

    def drifted_hosts(self) -> dict[tuple[str, str], int]:
        """(repo, env) -> how many hosts drifted, from each environment's newest report about what it runs now
        (a report about an older deployment counts 0). For the Prometheus metric."""
        try:
            rows = self._rows(
                "SELECT r.repo, r.env, CASE WHEN r.state = 'drifted' AND r.deployment_id = (SELECT MAX(d.id) FROM"
                " deployments d WHERE d.repo = r.repo AND d.env = r.env AND d.result = 'succeeded') THEN r.hosts"
                " ELSE 0 END FROM drift_reports r"
                " WHERE r.id = (SELECT MAX(id) FROM drift_reports x WHERE x.repo = r.repo AND x.env = r.env)"
            )
        except StatementFailure:  # a store written by an older daemon
            return {}
        return {(r[0], r[1]): int(r[2]) for r in rows}

    @staticmethod
    def _drift_report(row: Row) -> DriftReport:
        return DriftReport(
            row["repo"],
            row["env"],
            row["deployment_id"],
            row["checked_at"],
            row["state"],
            row["reason"],
            tuple(TaskChange.from_json(c) for c in json.loads(row["changes"] or "[]")),
            row["id"],
        )
