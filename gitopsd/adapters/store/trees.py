"""What is known about trees: failed in an environment, rejected (gate/rejections.py), attested (gate/attested.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...gate import attested, rejections
from .base import StoreBase, bookkeeping

if TYPE_CHECKING:
    from ...gate.attested import Attestation
    from ...gate.rejections import Rejection


class Trees(StoreBase):
    """Bad trees, rejections and recorded provenance."""

    @bookkeeping
    def mark_bad_tree(self, repo: str, env: str, tree: str, reason: str, now: float) -> None:
        self._write(
            "INSERT INTO bad_trees (repo, env, tree, reason, marked_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (repo, env, tree) DO UPDATE SET reason = excluded.reason, marked_at = excluded.marked_at",
            (repo, env, tree, reason, now),
        )

    def bad_tree(self, repo: str, env: str, tree: str) -> str | None:
        rows = self._rows("SELECT reason FROM bad_trees WHERE repo = ? AND env = ? AND tree = ?", (repo, env, tree))
        return rows[0]["reason"] if rows else None

    def clear_bad_trees(self, repo: str, env: str) -> int:
        return self._write("DELETE FROM bad_trees WHERE repo = ? AND env = ?", (repo, env)).rowcount

    def clear_bad_tree(self, repo: str, env: str, tree: str) -> int:
        """Forget that `tree` failed in `env` (an unreject lets it be deployed there again)."""
        return self._write("DELETE FROM bad_trees WHERE repo = ? AND env = ? AND tree = ?", (repo, env, tree)).rowcount

    def attestations(self, repo: str, tree: str) -> list[Attestation]:
        """(artifact, sha256 kept, sha256 signed) of `tree`'s recorded provenance (gate/attested.ATTESTATIONS)."""
        return self._human(attested.ATTESTATIONS, (repo, tree))

    @bookkeeping
    def record_attestation(
        self, *, repo: str, tree: str, name: str, sha256: str, signed_sha256: str, statement: str, now: float
    ) -> None:
        """Record that `tree`'s artifact `name` has a signed statement (the hook's require_provenance reads it)."""
        self._write(attested.RECORD, (repo, tree, name, sha256, signed_sha256, statement, now))

    def rejections(self, repo: str, tree: str) -> list[Rejection]:
        """Every rejection and unrejection of `tree`, oldest first (gate/rejections.REJECTIONS)."""
        return self._human(rejections.REJECTIONS, (repo, tree))

    @bookkeeping
    def add_rejection(
        self,
        *,
        repo: str,
        tree: str,
        env: str,
        kind: str,
        deployment_id: int | None,
        commit: str,
        actor: str,
        reason: str,
        now: float,
    ) -> None:
        """Record that `tree` is rejected (kind reject) or let through again (unreject) from `env` on."""
        assert kind in ("reject", "unreject"), kind
        self._write(
            "INSERT INTO tree_rejections (repo, tree, env, kind, deployment_id, commit_id, actor, reason,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (repo, tree, env, kind, deployment_id, commit, actor, reason, now),
        )
