"""Commit statuses (CI results, keyed by tree: gate/required.py) and the CI heads seen (gitopsd/ci/heads.py)."""

from __future__ import annotations

from ...base.storeerrors import StatementFailure
from ...gate import attested, required
from .base import StoreBase, bookkeeping


class Checks(StoreBase):
    """Commit statuses and CI heads."""

    def add_status(
        self,
        *,
        repo: str,
        commit: str,
        tree: str,
        context: str,
        state: str,
        reporter: str,
        now: float,
        target_url: str | None = None,
        description: str | None = None,
        attestations: tuple[tuple[str, str, str, str], ...] = (),
    ) -> int:
        """Record a status report; the newest per (tree, context) is the one that counts. `attestations` (name, sha256,
        signed sha256, statement) of a statement uploaded with it are recorded in the same transaction: both or neither."""
        assert state in required.STATES, state
        cur = self._write(
            "INSERT INTO commit_statuses (repo, commit_id, tree, context, state, target_url, description,"
            " reporter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (repo, commit, tree, context, state, target_url, description, reporter, now),
            *((attested.RECORD, (repo, tree, *attestation, now)) for attestation in attestations),
        )
        return int(cur.lastrowid or 0)

    def statuses(self, repo: str, tree: str) -> list[required.Status]:
        """The newest status per context reported for `tree` (by any commit that has it), by context."""
        try:
            return required.rows_to_statuses([tuple(r) for r in self._rows(required.LATEST_BY_TREE, (repo, tree))])
        except StatementFailure:  # a store written by an older daemon, read by `status`
            return []

    def status_history(self, repo: str, commit: str, limit: int = 100) -> list[required.Status]:
        """Every status reported for `commit` itself, newest first."""
        rows = self._rows(
            "SELECT context, state, target_url, description, commit_id, reporter, created_at"
            " FROM commit_statuses WHERE repo = ? AND commit_id = ? ORDER BY id DESC LIMIT ?",
            (repo, commit, limit),
        )
        return required.rows_to_statuses([tuple(r) for r in rows])

    def ci_heads(self, repo: str) -> dict[str, str]:
        return {r["branch"]: r["commit_id"] for r in self._rows("SELECT branch, commit_id FROM ci_heads WHERE repo = ?", (repo,))}

    @bookkeeping
    def set_ci_heads(self, repo: str, heads: dict[str, str]) -> None:
        """Replace the CI heads seen in `repo` by `heads` (branch -> commit), in one transaction."""
        with self._transaction() as db:
            db.execute("DELETE FROM ci_heads WHERE repo = ?", (repo,))
            db.executemany(
                "INSERT INTO ci_heads (repo, branch, commit_id) VALUES (?, ?, ?)", [(repo, b, c) for b, c in heads.items()]
            )
