"""Read models the command line, the HTTP API and the dashboard share: one function per view, so all three say the same.

`history --json`, GET .../history and the environment page show `deployment_json` with `release_marks`;
`rc list|show --json`, GET .../rcs and the release candidate page show `rc_view` (and `rc_history`).
Reads only: nothing here decides anything or writes to the store.
"""
from __future__ import annotations

import time
from typing import Any

from ..gate.approvals import Policy, approval_state, newest_by_actor

NO_MARKS: dict[str, Any] = {"rc": None, "approved_by": [], "signed_off_by": []}


def deployment_json(d: Any, marks: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deployment for `history --json`: the record, with its batches, hosts, checks and artifacts (name -> sha256),
    and its human gates (`marks`, from release_marks)."""
    return {**d.as_json(), "hosts": d.detail.get("hosts", {}), "batches": d.detail.get("batches", []),
            "artifacts": d.detail.get("artifacts", {}), **(marks or NO_MARKS)}


def release_marks(config: Any, store: Any, deployments: list[Any]) -> dict[int, dict[str, Any]]:
    """Deployment id -> the release candidate whose tree it deployed and who had approved it when it started
    (`rc`, `approved_by`), and who had signed its tree off where its environment's require_signoff asks
    (`signed_off_by`). Two queries for the whole page, none per row, so `history` stays fast."""
    if not deployments:
        return {}
    signoff_env: dict[tuple[str, str], str] = {}   # (repo, env) -> where its required sign-offs happen
    for d in deployments:
        repo = config.repository(d.repo)
        env = repo.environment(d.env) if repo is not None else None
        rule = getattr(env, "require_signoff", None) or getattr(env, "signoff", None)   # a Config's, or the snapshot's
        if rule is not None:
            signoff_env[(d.repo, d.env)] = rule.env
    rcs: dict[tuple[str, str, str], dict[str, tuple[float, list[tuple[str, str, str, float]]]]] = {}
    for repo, env, tree, name, created, actor, kind, at in store.rcs_with_approvals(
            sorted({(d.repo, d.env, d.tree) for d in deployments})):
        _created, words = rcs.setdefault((repo, env, tree), {}).setdefault(name, (created, []))
        if actor is not None:
            words.append((actor, kind, "", at))
    signoffs: dict[tuple[str, str, str], list[tuple[str, str, str, float]]] = {}
    wanted = sorted({(d.repo, signoff_env[(d.repo, d.env)], d.tree) for d in deployments if (d.repo, d.env) in signoff_env})
    for repo, env, tree, actor, verdict, note, at in store.signoffs_of(wanted) if wanted else []:
        signoffs.setdefault((repo, env, tree), []).append((actor, verdict, note, at))

    def said(words: list[tuple[str, str, str, float]], word: str, by: float) -> list[str]:
        """Who had `word` as their newest word before `by`."""
        return sorted(a for a, (w, _n, _at) in newest_by_actor([x for x in words if x[3] <= by]).items() if w == word)

    marks: dict[int, dict[str, Any]] = {}
    for d in deployments:
        known = [(created, name, words) for name, (created, words) in rcs.get((d.repo, d.env, d.tree), {}).items()
                 if created <= d.started_at]
        _created, rc, words = max(known, default=(0.0, None, []))
        where = signoff_env.get((d.repo, d.env))
        marks[d.id] = {"rc": rc, "approved_by": said(words, "approve", d.started_at) if rc else [],
                       "signed_off_by": said(signoffs.get((d.repo, where, d.tree), []), "signoff", d.started_at)
                       if where else []}
    return marks


def rc_view(repo: Any, store: Any, rc: dict[str, Any]) -> dict[str, Any]:
    """A release candidate as `rc list --json` shows it: where it stands, who approved it, what still stops it."""
    env = repo.environment(rc["target_env"])
    policy = env.approvals if env is not None else None
    valid: list[str] = []
    problems = ["its environment no longer takes approvals"]
    if policy is not None:
        valid, problems = approval_state(Policy.of(policy), store.approval_rows(repo.name, rc["name"]), time.time())
    state = "approved" if not problems else "rejected" if any(p.startswith("rejected") for p in problems) else "waiting"
    return {"name": rc["name"], "repo": repo.name, "commit": rc["commit_id"], "tree": rc["tree"],
            "source_env": rc["source_env"], "target_env": rc["target_env"], "created_by": rc["created_by"],
            "created_at": rc["created_at"], "state": state, "approved_by": valid, "problems": problems}


def rc_history(store: Any, repo_name: str, name: str) -> list[dict[str, Any]]:
    """A release candidate's approvals, rejections and withdrawals, oldest first, as `rc show --json` lists them."""
    return [{"actor": a, "kind": k, "note": n, "at": w} for a, k, n, w in store.approval_rows(repo_name, name)]
