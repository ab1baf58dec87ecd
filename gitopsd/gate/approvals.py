"""Human gates: sign-offs after manual testing and approvals of release candidates (docs/human-gates.md).

What the rule needs to know, one implementation for the pre-receive hook, `gitopsd promote`, the
daemon's re-judging and `gitopsd rc show`: the tables the daemon records them in, the policy of
an environment as the hook's config snapshot carries it, and whether a tree meets it now.

Sign-offs and approvals bind to a *tree*: a new commit with another tree needs them again. Only
the daemon writes them, with the identity the kernel gives for its control socket's caller.
The newest word of each identity counts: a sign-off after a rejection replaces it, `withdraw`
takes back one's approval or rejection. Stdlib only: the hook imports this.
"""

from __future__ import annotations

TYPE_CHECKING = False  # true for mypy only: the hook imports neither typing nor the settings
if TYPE_CHECKING:
    from typing import Protocol

    from ..core.settings import Approvals

    class Records(Protocol):
        """What bound_approval_state reads (policy.Records has it: the hook's Ledger, the daemon's Store)."""

        def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]: ...
        def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list[tuple[int, int, float, str]], int, float | None]: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS signoffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,                  -- where the manual testing happened
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    actor TEXT NOT NULL,                -- from the control socket's peer credentials
    verdict TEXT NOT NULL,              -- signoff | reject
    note TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS signoffs_tree ON signoffs (repo, env, tree, id);
CREATE TABLE IF NOT EXISTS release_candidates (
    repo TEXT NOT NULL,
    name TEXT NOT NULL,                 -- the tag is refs/tags/rc/<name>
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    source_env TEXT NOT NULL,
    target_env TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    self_identities TEXT NOT NULL,      -- who may not approve it (its creator, the pushers of its changes), one per line
    PRIMARY KEY (repo, name)
);
CREATE INDEX IF NOT EXISTS release_candidates_tree ON release_candidates (repo, tree);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    rc TEXT NOT NULL,
    tree TEXT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- approve | reject | withdraw
    note TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_rc ON approvals (repo, rc, id);
CREATE TABLE IF NOT EXISTS pushes (     -- who pushed which head to a non-environment branch (self-approval)
    repo TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    branch TEXT NOT NULL,
    pusher TEXT NOT NULL,
    pushed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, commit_id, pusher)
);
"""

SIGNOFFS = "SELECT actor, verdict, note, created_at FROM signoffs WHERE repo = ? AND env = ? AND tree = ? ORDER BY id"
RCS_FOR_TREE = (
    "SELECT name, created_at FROM release_candidates WHERE repo = ? AND tree = ? AND target_env = ? ORDER BY created_at DESC"
)
APPROVALS = "SELECT actor, kind, note, created_at FROM approvals WHERE repo = ? AND rc = ? ORDER BY id"


class Policy:
    """An environment's approvals as the gate sees them (settings.Approvals, groups resolved)."""

    __slots__ = ("required", "approvers", "groups", "forbid_self", "expire_after")

    def __init__(
        self,
        required: int,
        approvers: tuple[str, ...],
        groups: tuple[tuple[str, tuple[str, ...]], ...] = (),
        forbid_self: bool = True,
        expire_after: float | None = None,
    ):
        self.required, self.approvers, self.groups = required, tuple(approvers), tuple(groups)
        self.forbid_self, self.expire_after = forbid_self, expire_after

    @classmethod
    def of(cls, approvals: Approvals) -> Policy:
        """The gate's view of an environment's `approvals:` setting (core.settings.Approvals)."""
        a = approvals
        return cls(a.required, a.approvers, a.required_groups, a.forbid_self_approval, a.expire_after)

    def encode(self) -> str:
        """One line per field, for the hook's snapshot table (no JSON: the hook stays light)."""
        lines = [
            f"required={self.required}",
            f"self={int(self.forbid_self)}",
            f"expire={'' if self.expire_after is None else self.expire_after}",
            "approvers=" + ",".join(self.approvers),
        ]
        lines += [f"group:{name}=" + ",".join(members) for name, members in self.groups]
        return "\n".join(lines)

    @classmethod
    def decode(cls, text: str) -> Policy | None:
        if not text:
            return None
        fields: dict[str, str] = {}
        groups = []
        for line in text.split("\n"):
            key, _, value = line.partition("=")
            if key.startswith("group:"):
                groups.append((key[6:], tuple(filter(None, value.split(",")))))
            else:
                fields[key] = value
        return cls(
            int(fields.get("required", "1")),
            tuple(filter(None, fields.get("approvers", "").split(","))),
            tuple(groups),
            fields.get("self", "1") == "1",
            float(fields["expire"]) if fields.get("expire") else None,
        )


class SignoffNeed:
    """`require_signoff` as the gate sees it: `count` sign-offs in `env` by identities of `signers`."""

    __slots__ = ("env", "count", "signers")

    def __init__(self, env: str, count: int, signers: tuple[str, ...]):
        self.env, self.count, self.signers = env, count, tuple(signers)

    def encode(self) -> str:
        return f"{self.env}\n{self.count}\n" + ",".join(self.signers)

    @classmethod
    def decode(cls, text: str) -> SignoffNeed | None:
        if not text:
            return None
        env, count, signers = (text.split("\n") + ["", "", ""])[:3]
        return cls(env, int(count or 1), tuple(filter(None, signers.split(","))))


def newest_by_actor(rows: list[tuple[str, str, str, float]]) -> dict[str, tuple[str, str, float]]:
    """actor -> (verdict or kind, note, when) of each identity's newest word, from rows oldest first."""
    newest: dict[str, tuple[str, str, float]] = {}
    for actor, kind, note, when in rows:
        if kind == "withdraw":
            newest.pop(actor, None)
        else:
            newest[actor] = (kind, note, when)
    return newest


def signoff_unmet(need: SignoffNeed, rows: list[tuple[str, str, str, float]]) -> list[str]:
    """Why a tree lacks its sign-offs (rows: SIGNOFFS of need.env and the tree); [] when it has them."""
    newest = newest_by_actor(rows)
    rejected = [
        f"rejected by {actor}: {note}"
        for actor, (verdict, note, _w) in sorted(newest.items())
        if verdict == "reject" and actor in need.signers
    ]
    if rejected:
        return rejected
    signed = sorted(a for a, (verdict, _n, _w) in newest.items() if verdict == "signoff" and a in need.signers)
    if len(signed) >= need.count:
        return []
    by = f" (by {', '.join(signed)})" if signed else ""
    return [
        f"{len(signed)} of {need.count} sign-off{'s' if need.count != 1 else ''} in {need.env}{by}; "
        f"may sign off: {', '.join(need.signers)}"
    ]


def approval_state(policy: Policy, rows: list[tuple[str, str, str, float]], now: float) -> tuple[list[str], list[str]]:
    """(valid approvers, problems) of one release candidate; no problems means it is approved."""
    newest = newest_by_actor(rows)
    rejections = [f"rejected by {actor}: {note}" for actor, (kind, note, _w) in sorted(newest.items()) if kind == "reject"]
    valid, expired = [], []
    for actor, (kind, _note, when) in sorted(newest.items()):
        if kind != "approve" or actor not in policy.approvers:
            continue
        if policy.expire_after is not None and when + policy.expire_after < now:
            expired.append(actor)
        else:
            valid.append(actor)
    problems = list(rejections)
    if len(valid) < policy.required:
        problems.append(
            f"{len(valid)} of {policy.required} approval{'s' if policy.required != 1 else ''}"
            + (f" (by {', '.join(valid)})" if valid else "")
            + (f"; expired: {', '.join(expired)}" if expired else "")
            + f"; may approve: {', '.join(policy.approvers)}"
        )
    for name, members in policy.groups:
        if not set(valid) & set(members):
            problems.append(f"no approval from group {name} yet ({', '.join(members)})")
    return valid, problems


# Promotion previews (gitopsd/services/previews.py): an approval binds to the preview it saw. A preview ran the candidate's
# playbook in check mode against the target's hosts as they were then; once the target deploys, rolls back or drifts,
# it is stale, and the target takes the candidate only after a fresh one. A fresh preview showing the same changes
# (the same digest) keeps the approvals given since the first of that run of equal previews; other changes need them
# again. A candidate with no finished preview (none made yet, or a store from before previews) is judged without.
PREVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS previews (   -- promotion previews: a candidate tree in check mode against a target's hosts
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    source_env TEXT NOT NULL,
    target_env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    rc TEXT NOT NULL DEFAULT '',          -- the release candidate it was made for ('' for none)
    target_deployment BIGINT NOT NULL DEFAULT 0,   -- the target's deployed deployment when it ran (0: none)
    requested_by TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    state TEXT NOT NULL,                  -- queued | running | done | failed
    reason TEXT,
    digest TEXT NOT NULL DEFAULT '',      -- of its changes per host and task: equal previews show the same
    result TEXT NOT NULL DEFAULT '{}'     -- per host, per task (previews.py)
);
CREATE INDEX IF NOT EXISTS previews_rc ON previews (repo, rc, id);
CREATE INDEX IF NOT EXISTS previews_target ON previews (repo, target_env, id);
"""
PREVIEW_MARKS = (
    "SELECT id, target_deployment, requested_at, digest, tree FROM previews WHERE repo = ? AND rc = ?"
    " AND target_env = ? AND state = 'done' ORDER BY id DESC LIMIT 50"
)
# What a preview ran against: the target's newest successful deployment of another tree than the candidate's (so the
# target taking the candidate itself does not make the candidate's preview stale; a re-apply or rollback does).
TARGET_DEPLOYED = "SELECT MAX(id) FROM deployments WHERE repo = ? AND env = ? AND result = 'succeeded' AND tree != ?"
TARGET_DRIFTED = "SELECT MAX(checked_at) FROM drift_reports WHERE repo = ? AND env = ? AND state = 'drifted'"


def preview_stale(mark: tuple[int, int, float, str], env: str, deployed: int, drifted_at: float | None) -> str:
    """Why a finished preview (id, target deployment, requested at, digest) no longer holds; '' when it does."""
    ident, seen, at, _digest = mark
    if deployed != seen:
        return (
            f"{env} changed after preview #{ident}: it now runs deployment #{deployed}, the preview saw "
            f"{'#' + str(seen) if seen else 'nothing deployed'}"
        )
    if drifted_at is not None and drifted_at > at:
        return f"{env}'s hosts drifted after preview #{ident}"
    return ""


def preview_binding(
    marks: list[tuple[int, int, float, str]], env: str, deployed: int, drifted_at: float | None
) -> tuple[float, str]:
    """(approvals count from, why the candidate's preview is stale or '') given its finished previews newest first."""
    if not marks:
        return 0.0, ""
    stale = preview_stale(marks[0], env, deployed, drifted_at)
    since = marks[0][2]
    for mark in marks[1:]:
        if mark[3] != marks[0][3]:
            break
        since = mark[2]
    return since, stale


def bound_approval_state(policy: Policy, store: Records, repo: str, rc: str, env: str, now: float) -> tuple[list[str], list[str]]:
    """approval_state of a release candidate counting only approvals bound to its preview; a stale preview is a
    problem. `store` reads like the hook's Ledger or the daemon's Store (approval_rows, preview_marks)."""
    marks, deployed, drifted_at = store.preview_marks(repo, rc, env)
    since, stale = preview_binding(marks, env, deployed, drifted_at)
    rows = [r for r in store.approval_rows(repo, rc) if r[3] >= since]
    valid, problems = approval_state(policy, rows, now)
    if stale:
        problems = [f"its preview is stale: {stale}; make a fresh one: gitopsd preview --rc {rc} --repo {repo}", *problems]
    return valid, problems
