"""The evidence of a release candidate (issue 25, item 5): everything that allowed it, and what became of it.

`gitopsd rc evidence rc/NAME` prints it as JSON: its changes, the checks reported for its tree, the
artifacts built for it (sha256), sign-offs, approvals, the preview it was approved on (the newest
deployment's), every deployment of its tree per host, the rollbacks away from it, and its tree's rejections.
Reads only, like readmodels.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .changes import changes_since
from .readmodels import deployment_json, preview_view, rc_history, rc_view, release_marks

if TYPE_CHECKING:
    from ..adapters.store import ReleaseCandidate

HISTORY_SCANNED = 5000  # deployments looked through for this tree, newest first


def changes(repo_path: str, base: str | None, commit: str) -> list[dict[str, str]]:
    """(commit, subject) of what `commit` changes against what `base` runs, newest first (services/changes.py)."""
    return [{"commit": c, "subject": s} for c, s in changes_since(repo_path, base, commit)]


def rc_evidence(config: Any, repo: Any, store: Any, rc: ReleaseCandidate) -> dict[str, Any]:
    """The whole chain of a release candidate (`rc`, as the store keeps it), as plain JSON values."""
    tree, target = rc.tree, rc.target_env
    scanned = store.history(repo=repo.name, limit=HISTORY_SCANNED)
    mine = [d for d in scanned if d.tree == tree][::-1]  # oldest first
    ids, before, rollbacks = {d.id for d in mine}, dict[str, int](), list[Any]()
    for d in scanned[::-1]:  # a rollback right after a deployment of this tree, in the same environment
        if d.kind == "rollback" and before.get(d.env) in ids:
            rollbacks.append(d)
        before[d.env] = d.id
    marks = release_marks(config, store, mine + rollbacks)
    first_here = next((d for d in mine if d.env == target), None)
    base = first_here.previous_commit if first_here is not None else getattr(store.deployed(repo.name, target), "commit", None)
    artifacts: dict[str, str] = {}
    for d in mine:
        artifacts.update(d.detail.get("artifacts", {}))
    shown = [marks[d.id]["preview"] for d in mine if d.env == target and marks.get(d.id, {}).get("preview")]
    approved_on = store.previews(repo.name, preview_id=shown[-1], limit=1) if shown else []
    signoffs = [
        {"env": env.name, "actor": actor, "verdict": verdict, "note": note, "at": at}
        for env in repo.environments
        for actor, verdict, note, at in store.signoffs(repo.name, env.name, tree)
    ]
    return {
        "rc": rc_view(repo, store, rc),
        "changes": changes(str(repo.path), base, rc.commit_id),
        "checks": [s.as_json() for s in store.statuses(repo.name, tree)],
        "artifacts": artifacts,
        "signoffs": signoffs,
        "approvals": rc_history(store, repo.name, rc.name),
        # The preview its newest deployment to the target was approved on (history's `preview`); rc.preview: the newest.
        "preview": preview_view(store, approved_on[0]) if approved_on else None,
        "deployments": [deployment_json(d, marks.get(d.id)) for d in mine],
        "rollbacks": [deployment_json(d, marks.get(d.id)) for d in rollbacks],
        "rejections": [
            {"env": env, "kind": kind, "deployment": deployment, "actor": actor, "reason": reason, "at": at}
            for env, kind, deployment, actor, reason, at, _commit in store.rejections(repo.name, tree)
        ],
    }
