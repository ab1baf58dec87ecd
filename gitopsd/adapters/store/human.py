"""The human gates' records: sign-offs, release candidates, approvals, previews, pushers (gate/approvals.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ...base.storeerrors import IntegrityFailure, StatementFailure
from ...gate import approvals
from .backend import Row
from .base import StoreBase


@dataclass(frozen=True)
class ReleaseCandidate:
    """A release candidate as the store keeps it: the tag rc/<name> on `commit_id`, made for `target_env`."""

    repo: str
    name: str
    commit_id: str
    tree: str
    source_env: str
    target_env: str
    created_by: str
    created_at: float
    self_identities: tuple[str, ...]  # who may not approve it: its creator and the pushers of its changes

    @classmethod
    def of(cls, row: Row) -> ReleaseCandidate:
        return cls(
            str(row["repo"]),
            str(row["name"]),
            str(row["commit_id"]),
            str(row["tree"]),
            str(row["source_env"]),
            str(row["target_env"]),
            str(row["created_by"]),
            float(row["created_at"]),
            tuple(i for i in str(row["self_identities"]).split("\n") if i),
        )


class ReleaseWord(NamedTuple):
    """A release candidate for (repo, target environment, tree) with one of its approvals (actor None: it has none)."""

    repo: str
    env: str
    tree: str
    name: str
    created_at: float
    actor: str | None
    kind: str | None
    at: float | None


class SignoffWord(NamedTuple):
    """One sign-off (or rejection, or withdrawal) of a tree in an environment."""

    repo: str
    env: str
    tree: str
    actor: str
    verdict: str
    note: str
    at: float


@dataclass(frozen=True)
class Preview:
    """A promotion preview: a candidate tree in check mode against a target's hosts, and what it found (previews.py)."""

    id: int
    repo: str
    source_env: str
    target_env: str
    commit_id: str
    tree: str
    rc: str  # the release candidate it was made for ('' for none)
    target_deployment: int  # the target's deployed deployment when it ran (0: none)
    requested_by: str
    requested_at: float
    finished_at: float | None
    state: str  # queued | running | done | failed
    reason: str | None
    digest: str
    result: str  # JSON: per host, per task

    @classmethod
    def of(cls, row: Row) -> Preview:
        finished = row["finished_at"]
        return cls(
            int(row["id"]),
            str(row["repo"]),
            str(row["source_env"]),
            str(row["target_env"]),
            str(row["commit_id"]),
            str(row["tree"]),
            str(row["rc"] or ""),
            int(row["target_deployment"] or 0),
            str(row["requested_by"]),
            float(row["requested_at"]),
            float(finished) if finished is not None else None,
            str(row["state"]),
            row["reason"],
            str(row["digest"] or ""),
            str(row["result"] or "{}"),
        )


class Human(StoreBase):
    """Sign-offs, release candidates, approvals, promotion previews and who pushed what."""

    def signoffs(self, repo: str, env: str, tree: str) -> list[tuple[str, str, str, float]]:
        return self._human(approvals.SIGNOFFS, (repo, env, tree))

    def rcs_for_tree(self, repo: str, tree: str, target_env: str) -> list[tuple[str, float]]:
        return self._human(approvals.RCS_FOR_TREE, (repo, tree, target_env))

    def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]:
        return self._human(approvals.APPROVALS, (repo, rc))

    def add_signoff(self, *, repo: str, env: str, commit: str, tree: str, actor: str, verdict: str, note: str, now: float) -> int:
        assert verdict in ("signoff", "reject", "withdraw"), verdict
        return int(
            self._write(
                "INSERT INTO signoffs (repo, env, commit_id, tree, actor, verdict, note, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (repo, env, commit, tree, actor, verdict, note, now),
            ).lastrowid
            or 0
        )

    def add_rc(
        self,
        *,
        repo: str,
        name: str,
        commit: str,
        tree: str,
        source_env: str,
        target_env: str,
        created_by: str,
        self_identities: list[str],
        now: float,
    ) -> bool:
        """Record a release candidate; False if the name is taken."""
        try:
            self._write(
                "INSERT INTO release_candidates (repo, name, commit_id, tree, source_env, target_env, created_by,"
                " created_at, self_identities) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (repo, name, commit, tree, source_env, target_env, created_by, now, "\n".join(self_identities)),
            )
        except IntegrityFailure:
            return False
        return True

    def add_preview(
        self,
        *,
        repo: str,
        source_env: str,
        target_env: str,
        commit: str,
        tree: str,
        rc: str,
        target_deployment: int,
        requested_by: str,
        now: float,
    ) -> int:
        return int(
            self._write(
                "INSERT INTO previews (repo, source_env, target_env, commit_id, tree, rc, target_deployment, requested_by,"
                " requested_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (repo, source_env, target_env, commit, tree, rc, target_deployment, requested_by, now),
            ).lastrowid
            or 0
        )

    def update_preview(
        self,
        preview_id: int,
        *,
        state: str,
        now: float | None = None,
        reason: str | None = None,
        digest: str = "",
        result: str = "{}",
        target_deployment: int | None = None,
    ) -> None:
        """A preview starts (running: the target's deployment it runs against) or ends (done | failed)."""
        if state == "running":
            self._write(
                "UPDATE previews SET state = 'running', target_deployment = ? WHERE id = ?", (target_deployment or 0, preview_id)
            )
            return
        self._write(
            "UPDATE previews SET state = ?, finished_at = ?, reason = ?, digest = ?, result = ? WHERE id = ?",
            (state, now, reason, digest, result, preview_id),
        )

    def previews(
        self, repo: str, *, rc: str | None = None, target_env: str | None = None, preview_id: int | None = None, limit: int = 20
    ) -> list[Preview]:
        """Previews newest first, of a release candidate, a target environment or one by id."""
        where, args = ["repo = ?"], [repo]  # type: tuple[list[str], list[Any]]
        for column, value in (("rc", rc), ("target_env", target_env), ("id", preview_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        try:
            rows = self._rows(
                f"SELECT * FROM previews WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",  # noqa: S608 (constant clauses; values are bound)
                (*args, limit),
            )
        except StatementFailure:  # a store written by an older daemon, read by a command
            return []
        return [Preview.of(r) for r in rows]

    def target_deployment(self, repo: str, env: str, tree: str) -> int:
        """What a preview of `tree` runs against: `env`'s newest successful deployment of another tree (0: none)."""
        rows = self._human(approvals.TARGET_DEPLOYED, (repo, env, tree))
        return int(rows[0][0] or 0) if rows else 0

    def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list[tuple[int, int, float, str]], int, float | None]:
        """(finished previews of `rc` for `env` newest first, its deployed deployment now, when it last drifted)."""
        rows = self._human(approvals.PREVIEW_MARKS, (repo, rc, env))
        marks = [(int(a), int(b), float(c), str(d)) for a, b, c, d, _tree in rows]
        deployed = self._human(approvals.TARGET_DEPLOYED, (repo, env, str(rows[0][4]) if rows else ""))
        drifted = self._human(approvals.TARGET_DRIFTED, (repo, env))
        return (
            marks,
            int(deployed[0][0] or 0) if deployed else 0,
            float(drifted[0][0]) if drifted and drifted[0][0] is not None else None,
        )

    def rc(self, repo: str, name: str) -> ReleaseCandidate | None:
        rows = self._rows("SELECT * FROM release_candidates WHERE repo = ? AND name = ?", (repo, name))
        return ReleaseCandidate.of(rows[0]) if rows else None

    def rcs(self, repo: str, limit: int = 50) -> list[ReleaseCandidate]:
        """Release candidates, newest first."""
        try:
            rows = self._rows("SELECT * FROM release_candidates WHERE repo = ? ORDER BY created_at DESC LIMIT ?", (repo, limit))
        except StatementFailure:
            return []
        return [ReleaseCandidate.of(r) for r in rows]

    def add_approval(self, *, repo: str, rc: str, tree: str, actor: str, kind: str, note: str, now: float) -> int:
        assert kind in ("approve", "reject", "withdraw"), kind
        return int(
            self._write(
                "INSERT INTO approvals (repo, rc, tree, actor, kind, note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (repo, rc, tree, actor, kind, note, now),
            ).lastrowid
            or 0
        )

    def record_push(self, repo: str, branch: str, commit: str, pusher: str, now: float) -> None:
        """Remember who pushed a head to a non-environment branch (self-approval looks it up)."""
        self._write(
            "INSERT INTO pushes (repo, commit_id, branch, pusher, pushed_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (repo, commit, branch, pusher, now),
        )

    def pushers(self, repo: str, commits: list[str]) -> set[str]:
        """Who pushed any of `commits` (as heads of non-environment branches)."""
        found: set[str] = set()
        for start in range(0, len(commits), 500):
            chunk = commits[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                r["pusher"]
                for r in self._rows(
                    f"SELECT DISTINCT pusher FROM pushes WHERE repo = ? AND commit_id IN ({marks})",  # noqa: S608 (placeholders only; values are bound)
                    (repo, *chunk),
                )
            }
        return found

    def rcs_with_approvals(self, keys: list[tuple[str, str, str]]) -> list[ReleaseWord]:
        """(repo, target_env, tree, name, created_at, actor, kind, at) of the release candidates for these
        (repo, target environment, tree), each with its approvals oldest first (actor None when it has none)."""
        rows = self._by_keys(
            "SELECT c.repo, c.target_env, c.tree, c.name, c.created_at, a.actor, a.kind, a.created_at"
            " FROM k JOIN release_candidates c ON c.repo = k.repo AND c.tree = k.tree"
            " AND c.target_env = k.env LEFT JOIN approvals a ON a.repo = c.repo AND a.rc = c.name"
            " ORDER BY c.created_at, a.id",
            keys,
        )
        return [ReleaseWord(*r) for r in rows]

    def signoffs_of(self, keys: list[tuple[str, str, str]]) -> list[SignoffWord]:
        """(repo, env, tree, actor, verdict, note, at) of the sign-offs of these (repo, env, tree), oldest first."""
        rows = self._by_keys(
            "SELECT s.repo, s.env, s.tree, s.actor, s.verdict, s.note, s.created_at FROM k"
            " JOIN signoffs s ON s.repo = k.repo AND s.env = k.env AND s.tree = k.tree ORDER BY s.id",
            keys,
        )
        return [SignoffWord(*r) for r in rows]

    def _by_keys(self, select: str, keys: list[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
        """`select` over the table k(repo, env, tree) of `keys`: joined from k, the indexes serve each key
        (a row-value IN scanned the whole table)."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), 300):  # 900 bound values per statement, under SQLite's old 999 limit
            chunk = keys[start : start + 300]
            values = ",".join(["(?, ?, ?)"] * len(chunk))
            rows += self._human(
                f"WITH k(repo, env, tree) AS (VALUES {values}) {select}",  # noqa: S608 (placeholders and constants; values are bound)
                tuple(v for key in chunk for v in key),
            )
        return rows
