"""The store's deployments: each run recorded, found and finished; retries, blocked heads, admissions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ...base.storeerrors import StatementFailure
from ...core.types import Admission, Block, Deployment, FailureStatus, Kind, Result
from ...gate import snapshot
from .backend import Row
from .base import StoreBase, bookkeeping

RESULTS = tuple(Result)
ACTIVE = (Result.QUEUED, Result.RUNNING)  # not finished: waiting for a free worker (max_parallel), or running
KINDS = tuple(Kind)
# Work folders beyond the newest `keep` per environment; `workdir IS NOT NULL` is the partial index deployments_workdir.
OLD_WORKDIRS = (
    "SELECT id, workdir FROM (SELECT id, workdir, result, ROW_NUMBER() OVER (PARTITION BY repo, env ORDER BY id DESC)"
    " AS n FROM deployments WHERE workdir IS NOT NULL) AS numbered WHERE n > ? AND result NOT IN ('queued', 'running')"
)


class Deployments(StoreBase):
    """Deployments and what the daemon keeps beside them per environment (retries, heads, blocks, admissions)."""

    def begin(
        self,
        *,
        repo: str,
        env: str,
        commit: str,
        tree: str,
        previous_commit: str | None,
        kind: str,
        trigger: str,
        actor: str,
        now: float,
        attempt: int = 1,
        reason: str | None = None,
        queued: bool = False,
    ) -> int:
        """Record a new deployment, `running` (or `queued` until a worker takes it: see `started`)."""
        assert kind in KINDS, kind
        cur = self._write(
            "INSERT INTO deployments (repo, env, commit_id, tree, previous_commit, kind, result, trigger, actor,"
            " reason, started_at, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                repo,
                env,
                commit,
                tree,
                previous_commit,
                kind,
                "queued" if queued else "running",
                trigger,
                actor,
                reason,
                now,
                attempt,
            ),
        )
        return int(cur.lastrowid or 0)

    def restore_deployment(
        self,
        deployment_id: int,
        *,
        repo: str,
        env: str,
        commit: str,
        tree: str,
        previous_commit: str | None,
        kind: str,
        result: str,
        trigger: str,
        actor: str,
        outcome: str | None,
        at: float,
    ) -> bool:
        """Record a finished deployment under its own id, as the notes tell it (notes_ledger); False if that id exists."""
        cur = self._write(
            "INSERT INTO deployments (id, repo, env, commit_id, tree, previous_commit, kind, result, trigger,"
            " actor, outcome, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (deployment_id, repo, env, commit, tree, previous_commit, kind, result, trigger, actor, outcome, at, at),
        )
        return cur.rowcount == 1

    @bookkeeping
    def started(self, deployment_id: int, now: float) -> None:
        """A queued deployment's worker took it: it runs from now on."""
        self._write(
            "UPDATE deployments SET result = 'running', started_at = ? WHERE id = ? AND result = 'queued'", (now, deployment_id)
        )

    def attribute(self, repo: str, commit: str, actor: str, trigger: str, reason: str | None, since: float) -> int:
        """Name who caused deployments of `commit` that started (since `since`) before the nudge arrived (a push
        while the daemon started is the push's, not the start's)."""
        return self._write(
            "UPDATE deployments SET actor = ?, trigger = ?, reason = COALESCE(?, reason)"
            " WHERE repo = ? AND commit_id = ? AND (actor = 'unknown' OR (actor = 'gitopsd' AND trigger = 'startup'))"
            " AND started_at >= ?",
            (actor, trigger, reason, repo, commit, since),
        ).rowcount

    @bookkeeping
    def set_progress(self, deployment_id: int, progress: dict[str, int | None]) -> None:
        """Record where a running deployment is (Progress.as_json(), e.g. batch 2 of 3), for `gitopsd status`."""
        self._write(self.dialect.SET_PROGRESS, (json.dumps(progress), deployment_id))

    @bookkeeping
    def set_workdir(self, deployment_id: int, workdir: Path) -> None:
        self._write("UPDATE deployments SET workdir = ? WHERE id = ?", (str(workdir), deployment_id))

    def finish(
        self, deployment_id: int, result: str, *, now: float, outcome: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        assert result in RESULTS and result not in ACTIVE, result
        if self.lost is not None:  # nowhere to write it: kept for get(), so its audit note tells how it ended
            with self._lock:
                self._unrecorded[deployment_id] = (result, now, outcome)
            return
        self._write(
            "UPDATE deployments SET result = ?, finished_at = ?, outcome = ?, detail = ?"
            " WHERE id = ? AND result IN ('queued', 'running')",
            (result, now, outcome, json.dumps(detail or {}), deployment_id),
        )

    def mark_interrupted(self, now: float) -> list[Deployment]:
        """Mark every deployment a previous daemon left running as interrupted (queued: canceled); return them."""
        left = [self._deployment(r) for r in self._rows("SELECT * FROM deployments WHERE result IN ('queued', 'running')")]
        for dep in left:
            if dep.result == "queued":
                self.finish(dep.id, "canceled", now=now, outcome="the daemon stopped before this deployment started")
            else:
                self.finish(dep.id, "interrupted", now=now, outcome="the daemon stopped during this deployment")
        return [dep for dep in left if dep.result == "running"]

    def get(self, deployment_id: int) -> Deployment | None:
        rows = self._rows("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        ended = self._unrecorded.get(deployment_id)
        if rows and ended is not None:
            return dataclasses.replace(self._deployment(rows[0]), result=ended[0], finished_at=ended[1], outcome=ended[2])
        return self._deployment(rows[0]) if rows else None

    def history(
        self, *, repo: str | None = None, env: str | None = None, limit: int = 20, before: int | None = None
    ) -> list[Deployment]:
        """Deployments newest first; `before`: only those with a smaller id (the next page, however deep)."""
        where: list[str] = []
        args: list[object] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if repo:
            where.append("repo = ?")
            args.append(repo)
        if env:
            where.append("env = ?")
            args.append(env)
        sql = "SELECT * FROM deployments" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 (table names and clauses are constants; values are bound)
        sql += " ORDER BY id DESC LIMIT ?"
        return [self._deployment(r) for r in self._rows(sql, (*args, limit))]

    def last(self, repo: str, env: str) -> Deployment | None:
        rows = self._rows("SELECT * FROM deployments WHERE repo = ? AND env = ? ORDER BY id DESC LIMIT 1", (repo, env))
        return self._deployment(rows[0]) if rows else None

    def deployed(self, repo: str, env: str) -> Deployment | None:
        """The last successful deployment of an environment: what its hosts run."""
        rows = self._rows(
            "SELECT * FROM deployments WHERE repo = ? AND env = ? AND result = 'succeeded' ORDER BY id DESC LIMIT 1", (repo, env)
        )
        return self._deployment(rows[0]) if rows else None

    def tree_succeeded(self, repo: str, env: str, tree: str) -> bool:
        return bool(self._rows(snapshot.TREE_SUCCEEDED, (repo, env, tree)))

    def tree_tried(self, repo: str, env: str, tree: str) -> bool:
        """Was `tree` ever deployed (or tried) in `env`? Automatic promotion never brings one back."""
        return bool(self._rows("SELECT 1 FROM deployments WHERE repo = ? AND env = ? AND tree = ? LIMIT 1", (repo, env, tree)))

    def successes(self, repo: str, env: str) -> list[tuple[str, str]]:
        """(kind, tree) of the environment's last successful deployments, oldest first (as snapshot.Ledger)."""
        return [(r["kind"], r["tree"]) for r in self._rows(snapshot.SUCCESSES, (repo, env, snapshot.SUCCESSES_LIMIT))][::-1]

    def old_workdirs(self, keep: int) -> list[tuple[int, str]]:
        """Work folders of finished deployments beyond the newest `keep` per environment."""
        rows = self._rows(OLD_WORKDIRS, (keep,))
        return [(int(r["id"]), str(r["workdir"])) for r in rows]

    @bookkeeping
    def clear_workdir(self, deployment_id: int) -> None:
        self._write("UPDATE deployments SET workdir = NULL WHERE id = ?", (deployment_id,))

    @staticmethod
    def _deployment(row: Row) -> Deployment:
        return Deployment(
            id=row["id"],
            repo=row["repo"],
            env=row["env"],
            commit=row["commit_id"],
            tree=row["tree"],
            previous_commit=row["previous_commit"],
            kind=row["kind"],
            result=row["result"],
            trigger=row["trigger"],
            actor=row["actor"],
            reason=row["reason"],
            outcome=row["outcome"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            attempt=row["attempt"],
            workdir=row["workdir"],
            detail=json.loads(row["detail"] or "{}"),
        )

    def failure(self, repo: str, env: str) -> FailureStatus | None:
        rows = self._rows("SELECT * FROM env_status WHERE repo = ? AND env = ?", (repo, env))
        if not rows:
            return None
        r = rows[0]
        return FailureStatus(
            r["commit_id"], r["failures"], r["next_retry_at"], bool(r["stalled"]), r["reason"], failed=r["stalled"] == 2
        )

    @bookkeeping
    def record_failure(self, repo: str, env: str, status: FailureStatus) -> None:
        stalled = 2 if status.failed else int(status.stalled)
        self._write(
            "INSERT INTO env_status (repo, env, commit_id, failures, next_retry_at, stalled, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo, env) DO UPDATE SET commit_id = excluded.commit_id,"
            " failures = excluded.failures, next_retry_at = excluded.next_retry_at, stalled = excluded.stalled,"
            " reason = excluded.reason",
            (repo, env, status.commit, status.failures, status.next_retry_at, stalled, status.reason),
        )

    @bookkeeping
    def clear_failure(self, repo: str, env: str) -> bool:
        # Each look at an environment in sync asks: a read, not a write transaction, when there is nothing to clear.
        if not self._rows("SELECT 1 FROM env_status WHERE repo = ? AND env = ?", (repo, env)):
            return False
        return self._write("DELETE FROM env_status WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    @bookkeeping
    def block(self, repo: str, env: str, block: Block) -> None:
        self._write(
            "INSERT INTO env_blocks (repo, env, commit_id, deployed_commit, reason, since) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (repo, env) DO UPDATE SET commit_id = excluded.commit_id,"
            " deployed_commit = excluded.deployed_commit, reason = excluded.reason, since = excluded.since",
            (repo, env, block.commit, block.deployed_commit, block.reason, block.since),
        )

    @bookkeeping
    def record_head(self, repo: str, env: str, commit: str, tree: str) -> None:
        """Remember an environment branch's head and its tree (status reads the tree here, not from git)."""
        self._write(
            "INSERT INTO env_heads (repo, env, commit_id, tree) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (repo, env) DO UPDATE SET commit_id = excluded.commit_id, tree = excluded.tree",
            (repo, env, commit, tree),
        )

    @bookkeeping
    def set_unwatched(self, unwatched: dict[str, str]) -> None:
        """Record which repositories the ref watcher cannot watch (inotify limits, a folder gone), and why."""
        with self._transaction() as db:
            db.execute("DELETE FROM unwatched_repos")
            db.executemany("INSERT INTO unwatched_repos (repo, reason) VALUES (?, ?)", unwatched.items())

    def unwatched(self) -> dict[str, str]:
        """Repositories the running daemon cannot watch, with the reason (empty for an older store)."""
        try:
            return {r["repo"]: r["reason"] for r in self._rows("SELECT repo, reason FROM unwatched_repos ORDER BY repo")}
        except StatementFailure:
            return {}

    def recorded_heads(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(repo, env) -> (commit, tree) of every head the daemon recorded."""
        try:
            rows = self._rows("SELECT repo, env, commit_id, tree FROM env_heads")
        except StatementFailure:  # a store written by an older daemon, read by `status`
            return {}
        return {(r["repo"], r["env"]): (r["commit_id"], r["tree"]) for r in rows}

    def blocked(self, repo: str, env: str) -> Block | None:
        try:
            rows = self._rows("SELECT * FROM env_blocks WHERE repo = ? AND env = ?", (repo, env))
        except StatementFailure:  # a store written by an older daemon, read by `status`
            return None
        return Block(rows[0]["commit_id"], rows[0]["deployed_commit"], rows[0]["reason"], rows[0]["since"]) if rows else None

    def clear_block(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM env_blocks WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    def admit(self, *, repo: str, env: str, commit: str, kind: str, actor: str, reason: str, now: float) -> int:
        assert kind in ("override", "rollback"), kind
        cur = self._write(
            "INSERT INTO admissions (repo, env, commit_id, kind, actor, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (repo, env, commit, kind, actor, reason, now),
        )
        return int(cur.lastrowid or 0)

    def admission(self, repo: str, env: str, commit: str) -> Admission | None:
        """The newest admission of `commit` in one environment, if an operator made one."""
        found = self._admissions("WHERE repo = ? AND env = ? AND commit_id = ?", (repo, env, commit), 1)
        return found[0] if found else None

    def admissions(self, *, repo: str | None = None, env: str | None = None, limit: int = 20) -> list[Admission]:
        """Admissions, newest first."""
        where = " AND ".join(w for w, v in (("repo = ?", repo), ("env = ?", env)) if v)
        return self._admissions(f"WHERE {where}" if where else "", tuple(v for v in (repo, env) if v), limit)

    def _admissions(self, where: str, args: tuple[Any, ...], limit: int) -> list[Admission]:
        try:
            rows = self._rows(f"SELECT * FROM admissions {where} ORDER BY id DESC LIMIT ?", (*args, limit))  # noqa: S608 (table names and clauses are constants; values are bound)
        except StatementFailure:  # a store written by an older daemon
            return []
        return [
            Admission(r["id"], r["repo"], r["env"], r["commit_id"], r["kind"], r["actor"], r["reason"], r["created_at"])
            for r in rows
        ]
