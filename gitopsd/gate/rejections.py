"""Rejected trees (docs/human-gates.md): a tree that failed in an environment stays out of it and every later one.

The daemon records a rejection when a deployment fails and is rolled back (a failed batch or a failed
post-deploy watch included), with the deployment that showed it; a person in the environment's
`override_by` may reject a tree by hand or lift a rejection (`gitopsd release reject|unreject`), with a
reason. The newest word per (tree, environment) counts. The rule (gate/policy.py) refuses a rejected tree
in the environment it failed in and in every environment that promotes from it, directly or not;
release candidates holding it are `failed`. Stdlib only: the hook imports this.
"""

from __future__ import annotations

TYPE_CHECKING = False  # true for mypy only: the hook does not import typing
if TYPE_CHECKING:
    from typing import Any

    # A rejection or unrejection as REJECTIONS reads it: (env, kind, deployment_id, actor, reason, created_at, commit_id).
    # A plain tuple, named for mypy only: the hook reads these too and imports no typing.
    Rejection = tuple[str, str, int | None, str, str, float, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tree_rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    tree TEXT NOT NULL,
    env TEXT NOT NULL,                  -- where it failed (or was rejected): it holds there and in every later environment
    kind TEXT NOT NULL,                 -- reject | unreject
    deployment_id BIGINT,              -- the deployment that showed it failing (automatic rejections), else NULL
    commit_id TEXT NOT NULL,
    actor TEXT NOT NULL,                -- gitopsd, or the control socket's caller
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS tree_rejections_tree ON tree_rejections (repo, tree, id);
"""

REJECTIONS = (
    "SELECT env, kind, deployment_id, actor, reason, created_at, commit_id FROM tree_rejections"
    " WHERE repo = ? AND tree = ? ORDER BY id"
)


def standing(rows: list[Rejection]) -> dict[str, Rejection]:
    """The rejections that stand, by the environment they were made in: the newest word per environment is `reject`."""
    newest: dict[str, Rejection] = {}
    for row in rows:
        newest[str(row[0])] = row
    return {env: row for env, row in newest.items() if row[1] == "reject"}


def upstream(repo: Any, env_name: str) -> list[str]:
    """`env_name` and every environment it promotes from, directly or not (the chain a rejection covers)."""
    names: list[str] = []
    env = repo.environment(env_name)
    while env is not None and env.name not in names:
        names.append(env.name)
        env = repo.environment_for_branch(env.promote_from)
    return names


def rejection_for(repo: Any, rows: list[Rejection], env_name: str) -> Rejection | None:
    """The standing rejection that keeps a tree (its `rows`) out of `env_name`, nearest environment first, or None."""
    standing_ = standing(rows)
    for name in upstream(repo, env_name):
        if name in standing_:
            return standing_[name]
    return None


def describe(row: Rejection) -> str:
    """One line on why a tree is rejected, naming the deployment that failed when there is one."""
    env, _kind, deployment, actor, reason = row[0], row[1], row[2], row[3], " ".join(str(row[4]).split())
    if deployment is not None:  # the daemon's own reason names the deployment already, as a rule
        return (
            f"it failed in {env}: {reason}"
            if f"deployment #{deployment} " in reason
            else f"it failed in {env} in deployment #{deployment}: {reason}"
        )
    return f"{actor} rejected it for {env}: {reason}"
