"""Commit statuses, keyed by tree, and the required-checks gate (docs/ci.md, "Continuous integration").

A CI job reports a status (GitHub's states and fields) for a commit; gitopsd stores it against
the commit *and its tree*, and the newest report per (tree, context) wins. A commit counts as
tested when its tree was: a promotion commit or a merge whose tree equals a tested tree is
tested too. One implementation of the combined state (GitHub's rules) and of the gate, for the
pre-receive hook, `gitopsd promote`, the daemon and the HTTP API.

Stdlib only and cheap: the hook imports this on every push to an environment that requires checks.
"""

from __future__ import annotations

STATES = ("pending", "success", "failure", "error")

SCHEMA = """
CREATE TABLE IF NOT EXISTS commit_statuses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending | success | failure | error
    target_url TEXT,
    description TEXT,
    reporter TEXT NOT NULL,         -- the API token's name, or `cli:<user>`, or `gitopsd` (built-in CI)
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS commit_statuses_tree ON commit_statuses (repo, tree, context, id);
CREATE INDEX IF NOT EXISTS commit_statuses_commit ON commit_statuses (repo, commit_id);
"""

# The newest status per context of one tree (the index walks (repo, tree, context) in id order).
LATEST_BY_TREE = (
    "SELECT context, state, target_url, description, commit_id, reporter, created_at FROM commit_statuses"
    " WHERE id IN (SELECT MAX(id) FROM commit_statuses WHERE repo = ? AND tree = ? GROUP BY context)"
    " ORDER BY context"
)


class Status:
    """One reported status: the newest for its (tree, context)."""

    __slots__ = ("context", "state", "target_url", "description", "commit", "reporter", "created_at")

    def __init__(
        self,
        context: str,
        state: str,
        target_url: str | None = None,
        description: str | None = None,
        commit: str = "",
        reporter: str = "",
        created_at: float = 0.0,
    ):
        self.context, self.state, self.target_url, self.description = context, state, target_url, description
        self.commit, self.reporter, self.created_at = commit, reporter, created_at

    def __repr__(self) -> str:
        return f"Status({self.context}: {self.state})"

    def as_json(self) -> dict[str, object]:
        return {
            "context": self.context,
            "state": self.state,
            "target_url": self.target_url,
            "description": self.description,
            "commit": self.commit,
            "reporter": self.reporter,
            "created_at": self.created_at,
        }


def rows_to_statuses(rows: list[tuple[object, ...]]) -> list[Status]:
    """Statuses from rows of (context, state, target_url, description, commit_id, reporter, created_at)."""
    return [
        Status(
            str(r[0]),
            str(r[1]),
            None if r[2] is None else str(r[2]),
            None if r[3] is None else str(r[3]),
            str(r[4]),
            str(r[5]),
            float(r[6]),  # type: ignore[arg-type]
        )
        for r in rows
    ]


def combined_state(statuses: list[Status], required: tuple[str, ...] = ()) -> str:
    """GitHub's combined state: failure if any failed (or errored); pending if any is pending or none
    was reported (or a required context is missing); success otherwise."""
    by_context = {s.context: s.state for s in statuses}
    if any(state in ("failure", "error") for state in by_context.values()):
        return "failure"
    if not by_context or "pending" in by_context.values() or any(c not in by_context for c in required):
        return "pending"
    return "success"


def unmet(required: tuple[str, ...], statuses: list[Status]) -> list[str]:
    """The required contexts not `success` on a tree, each as one line with its state and URL; [] when all passed."""
    by_context = {s.context: s for s in statuses}
    lines = []
    for context in required:
        status = by_context.get(context)
        if status is None:
            lines.append(f"{context}: not reported")
        elif status.state != "success":
            where = f" ({status.target_url})" if status.target_url else ""
            said = f": {status.description}" if status.description else ""
            lines.append(f"{context}: {status.state}{said}{where}")
    return lines
