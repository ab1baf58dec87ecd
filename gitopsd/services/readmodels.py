"""Read models the command line, the HTTP API and the dashboard share: one function per view, so all three say the same.

`history --json`, GET .../history and the environment page show `deployment_json` with `release_marks`;
`rc list|show --json`, GET .../rcs and the release candidate page show `rc_view` (and `rc_history`);
`preview`, `where` and `hosts ENV` show `preview_view`, `where_view` and `host_runs`.
Reads only: nothing here decides anything or writes to the store.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ..core.errors import MISSING, Refused
from ..gate.approvals import Policy, bound_approval_state, newest_by_actor, preview_stale
from ..gate.rejections import describe, rejection_for

if TYPE_CHECKING:
    from ..adapters.store import Preview, ReleaseCandidate

NO_MARKS: dict[str, Any] = {"rc": None, "approved_by": [], "signed_off_by": [], "preview": None}


def deployment_json(d: Any, marks: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deployment for `history --json`: the record, with its batches, hosts, checks and artifacts (name -> sha256),
    and its human gates (`marks`, from release_marks)."""
    return {
        **d.as_json(),
        "hosts": d.detail.get("hosts", {}),
        "batches": d.detail.get("batches", []),
        "artifacts": d.detail.get("artifacts", {}),
        **(marks or NO_MARKS),
    }


def release_marks(config: Any, store: Any, deployments: list[Any]) -> dict[int, dict[str, Any]]:
    """Deployment id -> the release candidate whose tree it deployed and who had approved it when it started
    (`rc`, `approved_by`), and who had signed its tree off where its environment's require_signoff asks
    (`signed_off_by`). Two queries for the whole page, none per row, so `history` stays fast."""
    if not deployments:
        return {}
    signoff_env: dict[tuple[str, str], str] = {}  # (repo, env) -> where its required sign-offs happen
    for d in deployments:
        repo = config.repository(d.repo)
        env = repo.environment(d.env) if repo is not None else None
        rule = getattr(env, "require_signoff", None) or getattr(env, "signoff", None)  # a Config's, or the snapshot's
        if rule is not None:
            signoff_env[(d.repo, d.env)] = rule.env
    rcs: dict[tuple[str, str, str], dict[str, tuple[float, list[tuple[str, str, str, float]]]]] = {}
    for repo, env, tree, name, created, actor, kind, at in store.rcs_with_approvals(
        sorted({(d.repo, d.env, d.tree) for d in deployments})
    ):
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

    finished: dict[tuple[str, str, str], list[tuple[float, int]]] = {}  # (repo, rc, env) -> (finished_at, id)

    def approved_on(repo: str, rc: str, env: str, by: float) -> int | None:
        """The newest finished preview of `rc` for `env` made before `by`: the one its approvals were bound to."""
        if (repo, rc, env) not in finished:  # one query per candidate on the page, not per row
            finished[(repo, rc, env)] = [
                (p.finished_at, p.id)
                for p in store.previews(repo, rc=rc, target_env=env, limit=50)
                if p.state == "done" and p.finished_at is not None
            ]
        return max(((at, i) for at, i in finished[(repo, rc, env)] if at <= by), default=(0.0, None))[1]

    marks: dict[int, dict[str, Any]] = {}
    for d in deployments:
        # The gate takes a tree on any approved candidate of it: name the one with the most approvals when it
        # started (the newest on a tie), not a later `rc create` of the same tree that nobody approved.
        known = [
            (len(approvers), created, name, approvers)
            for name, (created, words) in rcs.get((d.repo, d.env, d.tree), {}).items()
            if created <= d.started_at
            for approvers in [said(words, "approve", d.started_at)]
        ]
        _count, _created, rc, approved_by = max(known, default=(0, 0.0, None, []))
        where = signoff_env.get((d.repo, d.env))
        marks[d.id] = {
            "rc": rc,
            "approved_by": approved_by,
            "signed_off_by": said(signoffs.get((d.repo, where, d.tree), []), "signoff", d.started_at) if where else [],
            "preview": approved_on(d.repo, rc, d.env, d.started_at) if rc else None,
        }
    return marks


def rc_view(repo: Any, store: Any, rc: ReleaseCandidate) -> dict[str, Any]:
    """A release candidate as `rc list --json` shows it: where it stands, who approved it, what still stops it."""
    env = repo.environment(rc.target_env)
    policy = env.approvals if env is not None else None
    valid: list[str] = []
    problems = ["its environment no longer takes approvals"]
    if policy is not None:
        # As the gate judges it (gate/policy.py human_gates): approvals bind to the preview they saw.
        valid, problems = bound_approval_state(Policy.of(policy), store, repo.name, rc.name, rc.target_env, time.time())
    state = "approved" if not problems else "rejected" if any(p.startswith("rejected") for p in problems) else "waiting"
    failed = rejection_for(repo, store.rejections(repo.name, rc.tree), rc.target_env)
    if failed is not None:  # a tree that failed stays out: its approvals count for nothing (gate/rejections.py)
        state, valid = "failed", []
        problems = [f"tree {rc.tree[:7]} is rejected for {rc.target_env}: {describe(failed)} (its approvals are void)"]
    previews = store.previews(repo.name, rc=rc.name, limit=1)
    return {
        "name": rc.name,
        "repo": repo.name,
        "commit": rc.commit_id,
        "tree": rc.tree,
        "source_env": rc.source_env,
        "target_env": rc.target_env,
        "created_by": rc.created_by,
        "created_at": rc.created_at,
        "state": state,
        "approved_by": valid,
        "problems": problems,
        "preview": preview_view(store, previews[0]) if previews else None,
    }


def preview_view(store: Any, row: Preview) -> dict[str, Any]:
    """A promotion preview as `gitopsd preview`, `rc show` and the candidate's page show it, with whether it is stale."""
    import json

    stale = ""
    if row.state == "done":
        drifted_at = store.preview_marks(row.repo, row.rc, row.target_env)[2]
        stale = preview_stale(
            (row.id, row.target_deployment, row.requested_at, row.digest),
            row.target_env,
            store.target_deployment(row.repo, row.target_env, row.tree),
            drifted_at,
        )
    return {
        "id": row.id,
        "repo": row.repo,
        "source_env": row.source_env,
        "target_env": row.target_env,
        "commit": row.commit_id,
        "tree": row.tree,
        "rc": row.rc or None,
        "state": row.state,
        "stale": stale or None,
        "requested_by": row.requested_by,
        "requested_at": row.requested_at,
        "finished_at": row.finished_at,
        "target_deployment": row.target_deployment or None,
        "summary": row.reason,
        "hosts": json.loads(row.result or "{}").get("hosts", {}),
    }


RAN = ("ok", "changed", "check-failed")  # a deployment's host results after which the host runs its tree


def host_runs(store: Any, repo: str, env: str, limit: int = 200) -> list[dict[str, Any]]:
    """Per host of an environment: the tree it runs (its newest deployment that succeeded there), since when (the
    oldest of that run of deployments of the same tree), its newest deployment's result there, and drift."""
    hosts: dict[str, dict[str, Any]] = {}
    settled: set[str] = set()  # hosts whose run of equal trees has ended (an older tree, going back)
    for d in store.history(repo=repo, env=env, limit=limit):
        for host, result in (d.detail.get("hosts") or {}).items():
            mine = hosts.get(host)
            if mine is None:
                hosts[host] = mine = {
                    "host": host,
                    "env": env,
                    "tree": None,
                    "commit": None,
                    "deployment": None,
                    "deployed_at": None,
                    "since": None,
                    "last_result": result,
                    "last_deployment": d.id,
                    "last_check": None,
                    "drift": None,
                }
            if result not in RAN or host in settled:
                continue
            if mine["tree"] is None:
                mine.update(tree=d.tree, commit=d.commit, deployment=d.id, deployed_at=d.finished_at, since=d.finished_at)
            elif d.tree == mine["tree"]:
                mine["since"] = d.finished_at
            else:
                settled.add(host)
    report = store.drift_report(repo, env)
    if report is not None:
        drifted = set(report.hosts) if report.state == "drifted" else set()
        for mine in hosts.values():
            mine["last_check"] = report.checked_at
            mine["drift"] = (
                ("drifted" if mine["host"] in drifted else "clean")
                if report.state in ("drifted", "clean", "baseline")
                else report.state
            )
    return [hosts[h] for h in sorted(hosts)]


def tree_named(store: Any, repo: Any, what: str) -> str | None:
    """The tree a commit id, tree id or rc/NAME names in `repo`, or None."""
    if what.startswith("rc/"):
        rc = store.rc(repo.name, what[3:])
        return str(rc.tree) if rc is not None else None
    if not re.fullmatch(r"[0-9a-fA-F]{4,64}", what):
        return None
    from ..base import gitcli

    return gitcli.rev_parse(repo.path, f"{what}^{{tree}}")


def where_view(store: Any, repo: Any, tree: str) -> list[dict[str, Any]]:
    """Each environment and host of `repo` that runs `tree` now, and since when (host_runs of every environment)."""
    return [row for env in repo.environments for row in host_runs(store, repo.name, env.name) if row["tree"] == tree]


def rc_history(store: Any, repo_name: str, name: str) -> list[dict[str, Any]]:
    """A release candidate's approvals, rejections and withdrawals, and its tree's rejections and unrejections
    (gate/rejections.py), oldest first, as `rc show --json` lists them."""
    words = [{"actor": a, "kind": k, "note": n, "at": w} for a, k, n, w in store.approval_rows(repo_name, name)]
    rc = store.rc(repo_name, name)
    trees = store.rejections(repo_name, rc.tree) if rc is not None else []
    words += [
        {"actor": actor, "kind": f"tree-{kind}ed", "note": f"{env}: {reason}", "at": at}
        for env, kind, _deployment, actor, reason, at, _commit in trees
    ]
    return sorted(words, key=lambda w: float(w["at"]))


def rc_named(store: Any, repo: Any, name: str) -> ReleaseCandidate:
    """The release candidate rc/NAME (or NAME) of `repo`, as the store keeps it. Raise Refused naming `rc list`."""
    name = name.removeprefix("rc/")
    rc: ReleaseCandidate | None = store.rc(repo.name, name)
    if rc is None:
        raise Refused(f"no release candidate rc/{name} in {repo.name} (see gitopsd rc list)", MISSING, "rc_not_found")
    return rc


def rc_shown(repo: Any, store: Any, rc: ReleaseCandidate) -> dict[str, Any]:
    """A release candidate as `rc show --json` prints it (its rc_view and rc_history): the API and the dashboard
    show the same."""
    return {**rc_view(repo, store, rc), "history": rc_history(store, repo.name, rc.name)}
