"""Human gates in the daemon: sign-offs, release candidates, approvals, and the audit trail in git notes.

The daemon runs these for callers of its control socket (adapters/control.py), whose identity the
kernel gives; each answer is {"ok": bool, "message": one line or a few}. The rule that holds
environments to them is gate/approvals.py, judged by the hook, `gitopsd promote` and the daemon.

Every sign-off, release candidate, approval, rejection, withdrawal and deployment is recorded in
the store and as a git note under refs/notes/gitopsd on its commit, so `git log --notes=gitopsd`
in any clone shows who tested, approved and deployed what, and when.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..adapters.store import Store
from ..base import gitcli
from ..core.errors import CONFLICT, FORBIDDEN, INVALID, MISSING, Refused, refusal_answer
from ..core.settings import Config, Environment, Notify, Repository
from ..core.types import Deployment
from ..core.words import plural
from ..gate.approvals import Policy, SignoffNeed, bound_approval_state, newest_by_actor, preview_binding, signoff_unmet
from ..gate.rejections import describe, rejection_for, standing, upstream
from .changes import changes_since
from .named import NOTE_MAX, environment, repository, said

log = logging.getLogger("gitopsd.releases")

NOTES_REF = "refs/notes/gitopsd"
RC_PREFIX = "refs/tags/rc/"
RC_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CHANGES_SHOWN = 50
_notes_lock = threading.Lock()  # git notes moves one ref: writers (control thread, deploy threads) take turns


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def add_note(repo_path: str, commit: str, line: str) -> None:
    """Append one line to the commit's gitopsd note (the audit trail that travels with the repository)."""
    ident = gitcli.GITOPSD_IDENTITY
    env = {
        "GIT_AUTHOR_NAME": ident.name,
        "GIT_AUTHOR_EMAIL": ident.email,
        "GIT_COMMITTER_NAME": ident.name,
        "GIT_COMMITTER_EMAIL": ident.email,
    }
    with _notes_lock:
        code, _out, err = gitcli.run(
            ["git", "-C", repo_path, "notes", f"--ref={NOTES_REF}", "append", "-m", line, "--end-of-options", commit],
            env={**os.environ, **env},
        )
    if code != 0:
        log.warning("could not write the audit note on %s: %s", commit[:7], err.strip())


def self_name(pusher: str) -> str:
    """The identity in a recorded pusher ('alice (via git)' -> 'alice')."""
    return pusher.split(" (via ", 1)[0]


class HumanGates:
    """Sign-offs, release candidates and approvals, asked for over the control socket."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        notify: Callable[[Notify, dict[str, Any]], None],
        on_change: Callable[[str], None] = lambda _repo: None,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.store, self.notify, self.on_change, self.clock = config, store, notify, on_change, clock
        self._expired_told: set[tuple[str, str, str]] = set()
        # (repo, rc name, identity): a new release candidate, previewed against its target (previews.py).
        self.on_rc_created: Callable[[str, str, str], None] = lambda _repo, _name, _identity: None
        # One request at a time, from the control socket and the HTTP API alike: two approvals racing
        # must be counted once each, in order, and an idempotence check must see the other's write.
        self._lock = threading.Lock()

    # -- the entry of the control socket and of the HTTP API -------------------------------------------
    def handle(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """Do one request as `identity` (the kernel's or the API token owner's word); serialised with every other."""
        with self._lock:
            return self._handle(identity, request)

    def _handle(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        actions: dict[str, Callable[[str, dict[str, Any]], str]] = {
            "signoff": self.signoff,
            "rc-create": self.rc_create,
            "approve": self.approve,
            "reject": self.approve,
            "withdraw": self.approve,
            "tree-reject": self.tree_word,
            "tree-unreject": self.tree_word,
        }
        action = actions.get(str(op))
        if action is None:
            return refusal_answer(Refused(f"unknown request {str(op)[:60]!r}", INVALID, "unknown_request"))
        try:
            message = action(identity, request)
        except Refused as exc:
            return refusal_answer(exc)
        return {"ok": True, "message": message, "identity": identity}

    # -- helpers ---------------------------------------------------------------------------------------
    def _rc_target(self, repo: Repository, to: Any) -> Environment:
        if to is not None:
            env = environment(repo, to)
            if env.approvals is None:
                raise Refused(
                    f"{env.name} takes no release candidates (it has no approvals: in the config)", CONFLICT, "no_approvals"
                )
            return env
        gated = [e for e in repo.environments if e.approvals is not None]
        if not gated:
            raise Refused(
                f"no environment of {repo.name} has approvals: configured, so release candidates have no use",
                CONFLICT,
                "no_approvals",
            )
        return gated[0]

    # -- sign-off ----------------------------------------------------------------------------------------
    def signoff(self, identity: str, request: dict[str, Any]) -> str:
        """Record that `identity` tested (or rejects) what an environment runs: bound to its tree."""
        repo = repository(self.config(), request.get("repo"))
        env = environment(repo, request.get("env"))
        verdict = "reject" if request.get("reject") else "signoff"
        note = said(request, "note")
        if identity not in env.signoff_by:
            who = ", ".join(env.signoff_by) or "nobody (no signoff_by: in the config)"
            raise Refused(f"{identity} may not sign off in {env.name}; who may: {who}", FORBIDDEN, "signoff_not_allowed")
        deployed = self.store.deployed(repo.name, env.name)
        if deployed is None:
            raise Refused(f"nothing was deployed to {env.name} yet: there is nothing to sign off", CONFLICT, "nothing_deployed")
        commit = str(request.get("commit") or deployed.commit)
        full = gitcli.rev_parse(repo.path, f"{commit}^{{commit}}")
        if full is None:
            raise Refused(f"no commit {commit!r} in {repo.name}", MISSING, "commit_not_found")
        tree = gitcli.tree_of(repo.path, full) or ""
        if tree != deployed.tree:
            raise Refused(
                f"{full[:7]} (tree {tree[:7]}) is not what {env.name} runs (tree {deployed.tree[:7]}, "
                f"commit {deployed.commit[:7]}): sign off what you tested there",
                CONFLICT,
                "tree_not_running",
            )
        newest = newest_by_actor(self.store.signoffs(repo.name, env.name, tree)).get(identity)
        if newest is not None and newest[0] == verdict:
            raise Refused(
                f"{identity} already {'rejected' if verdict == 'reject' else 'signed off'} tree {tree[:7]} "
                f"in {env.name} ({when(newest[2])}); nothing changed",
                CONFLICT,
                "nothing_changed",
            )
        self.store.add_signoff(
            repo=repo.name, env=env.name, commit=full, tree=tree, actor=identity, verdict=verdict, note=note, now=self.clock()
        )
        word = "rejected" if verdict == "reject" else "signed off"
        add_note(str(repo.path), full, f"gitopsd: {word} in {env.name} by {identity} at {when(self.clock())}: {note}")
        self.on_change(repo.name)
        log.info("%s %s tree %s: %s", identity, word, tree[:7], note, extra={"repo": repo.name, "env": env.name})
        return f"{identity} {word} {env.name}'s tree {tree[:7]} (commit {full[:7]}): {note}"

    # -- release candidates -----------------------------------------------------------------------------
    def rc_create(self, identity: str, request: dict[str, Any]) -> str:
        repo = repository(self.config(), request.get("repo"))
        target = self._rc_target(repo, request.get("to"))
        source = environment(repo, request["from"]) if request.get("from") else repo.environment_for_branch(target.promote_from)
        if source is None:
            raise Refused(
                f"{target.name} promotes from {target.promote_from}, which is no environment: "
                "name the tested environment with --from",
                INVALID,
                "bad_source",
            )
        deployed = self.store.deployed(repo.name, source.name)
        if deployed is None or not self.store.tree_succeeded(repo.name, source.name, deployed.tree):
            raise Refused(
                f"{source.name} runs nothing deployed and verified yet: nothing to make a candidate of",
                CONFLICT,
                "nothing_deployed",
            )
        rejected = rejection_for(repo, self.store.rejections(repo.name, deployed.tree), target.name)
        if rejected is not None:
            raise Refused(
                f"tree {deployed.tree[:7]} is rejected for {target.name}: {describe(rejected)}; promote a fix "
                f"(or, if it is safe after all: gitopsd release unreject {deployed.tree[:7]} --env {rejected[0]} "
                "--reason '...')",
                CONFLICT,
                "tree_rejected",
            )
        need = target.require_signoff
        if need is not None:
            source_of_need = repo.environment(need.env)
            signers = source_of_need.signoff_by if source_of_need else ()
            missing = signoff_unmet(
                SignoffNeed(need.env, need.count, signers), self.store.signoffs(repo.name, need.env, deployed.tree)
            )
            if missing:
                raise Refused(
                    f"tree {deployed.tree[:7]} lacks its sign-offs for {target.name}: {'; '.join(missing)}",
                    CONFLICT,
                    "signoffs_missing",
                )
        name = str(request.get("name") or self._next_name(repo))
        if not RC_NAME_RE.match(name) or name.endswith((".lock", ".")) or ".." in name:
            raise Refused(
                f"{name!r} is not a valid release candidate name (letters, digits, '.', '_', '-')", INVALID, "bad_rc_name"
            )
        if self.store.rc(repo.name, name) is not None or gitcli.rev_parse(repo.path, RC_PREFIX + name) is not None:
            raise Refused(f"rc/{name} exists already: choose another --name (see gitopsd rc list)", CONFLICT, "rc_exists")
        base = self.store.deployed(repo.name, target.name)
        changes = self._changes(repo, base.commit if base else None, deployed.commit)
        pushers = self.store.pushers(repo.name, [c for c, _s in changes]) if changes else set()
        self_ids = sorted({identity, *(self_name(p) for p in pushers)})
        message = self._tag_message(repo, name, source, target, deployed, base, changes, identity)
        ident = gitcli.GITOPSD_IDENTITY
        code, _out, err = gitcli.run(
            ["git", "-C", str(repo.path), "tag", "-a", "-F", "-", "--end-of-options", f"rc/{name}", deployed.commit],
            input=message,
            env={**os.environ, "GIT_COMMITTER_NAME": ident.name, "GIT_COMMITTER_EMAIL": ident.email},
        )
        if code != 0:
            raise Refused(f"could not create the tag rc/{name}: {err.strip()}", CONFLICT, "rc_tag_failed")
        try:
            added = self.store.add_rc(
                repo=repo.name,
                name=name,
                commit=deployed.commit,
                tree=deployed.tree,
                source_env=source.name,
                target_env=target.name,
                created_by=identity,
                self_identities=self_ids,
                now=self.clock(),
            )
        except BaseException:  # not recorded (a full disk): the tag goes too, or the name stays taken by nothing
            gitcli.run(["git", "-C", str(repo.path), "tag", "--delete", f"rc/{name}"])
            raise
        if not added:
            raise Refused(f"rc/{name} was created meanwhile by someone else", CONFLICT, "rc_exists")
        add_note(
            str(repo.path),
            deployed.commit,
            f"gitopsd: release candidate rc/{name} for {target.name} created by {identity} at {when(self.clock())}",
        )
        policy = target.approvals
        assert policy is not None
        self.notify(
            target.notify,
            {
                "event": "rc-created",
                "repo": repo.name,
                "env": target.name,
                "rc": name,
                "commit": deployed.commit,
                "tree": deployed.tree,
                "created_by": identity,
                "approvals_required": policy.required,
                "approvers": list(policy.approvers),
            },
        )
        self.on_rc_created(repo.name, name, identity)
        self.on_change(repo.name)
        log.info(
            "release candidate rc/%s created by %s from %s",
            name,
            identity,
            source.name,
            extra={"repo": repo.name, "env": target.name, "commit": deployed.commit[:7]},
        )
        return (
            f"release candidate rc/{name} created: {source.name}'s commit {deployed.commit[:7]} (tree "
            f"{deployed.tree[:7]}), {plural(len(changes), 'change')} since {target.name}'s last release; it needs "
            f"{plural(policy.required, 'approval')} from {', '.join(policy.approvers)}: gitopsd approve {name} --note '...'"
        )

    def _next_name(self, repo: Repository) -> str:
        day = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        taken = {rc.name for rc in self.store.rcs(repo.name, limit=1000)}
        n = 1
        while f"{day}.{n}" in taken or gitcli.rev_parse(repo.path, f"{RC_PREFIX}{day}.{n}") is not None:
            n += 1
        return f"{day}.{n}"

    @staticmethod
    def _changes(repo: Repository, base: str | None, commit: str) -> list[tuple[str, str]]:
        """(commit, subject) of what `commit` changes against what `base` runs, newest first (services/changes.py)."""
        return changes_since(str(repo.path), base, commit)

    def _tag_message(
        self,
        repo: Repository,
        name: str,
        source: Environment,
        target: Environment,
        deployed: Deployment,
        base: Deployment | None,
        changes: list[tuple[str, str]],
        identity: str,
    ) -> str:
        lines = [
            f"Release candidate {name} for {target.name}",
            "",
            f"From {source.name}: commit {deployed.commit} (tree {deployed.tree}), deployment #{deployed.id}",
            f"Created by {identity} at {when(self.clock())}",
            "",
            f"Changes since {target.name}'s last release ({base.commit[:7] if base else 'none yet'}):",
        ]
        lines += [f"  {c[:7]} {s}" for c, s in changes[:CHANGES_SHOWN]] or ["  (none)"]
        if len(changes) > CHANGES_SHOWN:
            lines.append(f"  ... and {len(changes) - CHANGES_SHOWN} more")
        statuses = self.store.statuses(repo.name, deployed.tree)
        lines += ["", "Checks:"] + (
            [f"  {s.context}: {s.state}" + (f" ({s.target_url})" if s.target_url else "") for s in statuses]
            or ["  (none reported)"]
        )
        signoffs = [
            (actor, verdict, note)
            for env in repo.environments
            for actor, (verdict, note, _w) in newest_by_actor(self.store.signoffs(repo.name, env.name, deployed.tree)).items()
        ]
        lines += ["", "Sign-offs:"] + ([f"  {a}: {v}: {n}" for a, v, n in signoffs] or ["  (none)"])
        return "\n".join(lines) + "\n"

    # -- approvals -----------------------------------------------------------------------------------------
    def approve(self, identity: str, request: dict[str, Any]) -> str:
        """approve, reject or withdraw (request["op"]) a release candidate, as `identity`."""
        kind = {"approve": "approve", "reject": "reject", "withdraw": "withdraw"}[str(request["op"])]
        repo = repository(self.config(), request.get("repo"))
        name = str(request.get("rc") or "").removeprefix("rc/")
        rc = self.store.rc(repo.name, name)
        if rc is None:
            raise Refused(f"no release candidate rc/{name} in {repo.name} (see gitopsd rc list)", MISSING, "rc_not_found")
        target = repo.environment(rc.target_env)
        policy = target.approvals if target is not None else None
        if target is None or policy is None:
            raise Refused(f"rc/{name} was made for {rc.target_env}, which no longer takes approvals", CONFLICT, "no_approvals")
        note = said(request, "note") if kind != "withdraw" else str(request.get("note") or "withdrawn").strip()[:NOTE_MAX]
        if identity not in policy.approvers:
            raise Refused(
                f"{identity} may not approve for {target.name}; who may: {', '.join(policy.approvers)}",
                FORBIDDEN,
                "approval_not_allowed",
            )
        rows = self.store.approval_rows(repo.name, name)
        mine = newest_by_actor(rows).get(identity)
        if kind == "withdraw":
            if mine is None:
                raise Refused(f"{identity} has no approval or rejection of rc/{name} to withdraw", CONFLICT, "nothing_changed")
        else:
            if kind == "approve" and policy.forbid_self_approval and identity in rc.self_identities:
                raise Refused(
                    f"{identity} may not approve rc/{name}: it is their own (they created it or pushed one of "
                    "its changes) and forbid_self_approval is on; ask another approver",
                    FORBIDDEN,
                    "approval_by_author",
                )
            rejected = rejection_for(repo, self.store.rejections(repo.name, rc.tree), target.name)
            if kind == "approve" and rejected is not None:
                raise Refused(
                    f"rc/{name} failed: its tree {rc.tree[:7]} is rejected for {target.name}: {describe(rejected)}",
                    CONFLICT,
                    "tree_rejected",
                )
            if not self.store.tree_succeeded(repo.name, rc.source_env, rc.tree):
                raise Refused(
                    f"rc/{name}'s tree {rc.tree[:7]} is not what {rc.source_env} verified", CONFLICT, "tree_not_verified"
                )
            # Already said, unless it was said before the preview the approvals now bind to (then it counts no more)
            marks, deployed, drifted_at = self.store.preview_marks(repo.name, name, target.name)
            since, _stale = preview_binding(marks, target.name, deployed, drifted_at)
            expire = policy.expire_after  # an approval that expired is given anew by approving again
            lapsed = kind == "approve" and expire is not None and mine is not None and mine[2] + expire < self.clock()
            if mine is not None and mine[0] == kind and mine[2] >= since and not lapsed:
                raise Refused(
                    f"{identity} already {'approved' if kind == 'approve' else 'rejected'} rc/{name} "
                    f"({when(mine[2])}); nothing changed",
                    CONFLICT,
                    "nothing_changed",
                )
        now = self.clock()
        self.store.add_approval(repo=repo.name, rc=name, tree=rc.tree, actor=identity, kind=kind, note=note, now=now)
        withdrawn = {"approve": "approval withdrawn", "reject": "rejection withdrawn"}.get(mine[0] if mine else "", "")
        word = {"approve": "approved", "reject": "rejected", "withdraw": withdrawn or "word withdrawn"}[kind]
        add_note(str(repo.path), rc.commit_id, f"gitopsd: rc/{name} {word} by {identity} at {when(now)}: {note}")
        valid, problems = bound_approval_state(Policy.of(policy), self.store, repo.name, name, target.name, now)
        previews = self.store.previews(repo.name, rc=name, limit=1)  # what the approvers saw (previews.py)
        event = {
            "repo": repo.name,
            "env": target.name,
            "rc": name,
            "commit": rc.commit_id,
            "tree": rc.tree,
            "by": identity,
            "note": note,
            "approved_by": valid,
            "preview": {"id": previews[0].id, "state": previews[0].state, "summary": previews[0].reason} if previews else None,
        }
        if kind == "reject":
            self.notify(target.notify, {"event": "rc-rejected", **event})
        elif not problems and kind == "approve":
            self.notify(target.notify, {"event": "rc-approved", **event})
        self.on_change(repo.name)
        log.info("rc/%s %s by %s: %s", name, word, identity, note, extra={"repo": repo.name, "env": target.name})
        state = (
            "approved: "
            + (
                f"{target.name} takes it now (gitopsd promote rc/{name} {target.name})"
                if not target.auto_promote
                else f"the daemon promotes it to {target.name}"
            )
            if not problems
            else "; ".join(problems)
        )
        return f"rc/{name} {word} by {identity}. {state}"

    # -- rejected trees (gate/rejections.py) ------------------------------------------------------------------
    def tree_word(self, identity: str, request: dict[str, Any]) -> str:  # noqa: C901 (one word per release mark, in their precedence)
        """Reject a tree for an environment and the later ones, or lift its rejection (request["op"]), as `identity`."""
        kind = {"tree-reject": "reject", "tree-unreject": "unreject"}[str(request["op"])]
        repo = repository(self.config(), request.get("repo"))
        reason, name = said(request, "reason"), str(request.get("tree") or "")
        usable = name and not name.startswith("-") and len(name) <= 200 and all(31 < ord(c) != 127 for c in name)
        tree = gitcli.rev_parse(repo.path, f"{name}^{{tree}}") if usable else None
        if tree is None:
            raise Refused(
                f"no tree or commit {name[:60]!r} in {repo.name} (name a commit or a tree id, e.g. from gitopsd history)",
                MISSING,
                "commit_not_found",
            )
        rows = self.store.rejections(repo.name, tree)
        standing_ = standing(rows)
        if request.get("env"):
            envs = [environment(repo, request["env"])]
        elif kind == "reject":
            envs = [repo.environments[0]]  # everywhere: the first environment and every later one
        else:
            envs = [e for e in repo.environments if e.name in standing_]
        if kind == "unreject" and not standing_:
            raise Refused(f"tree {tree[:7]} is not rejected anywhere; nothing changed", CONFLICT, "nothing_changed")
        if kind == "unreject" and not any(e.name in standing_ for e in envs):
            raise Refused(
                f"tree {tree[:7]} is not rejected for {envs[0].name} (it is for {', '.join(standing_)}): "
                f"name that with --env; nothing changed",
                CONFLICT,
                "nothing_changed",
            )
        if kind == "reject" and all(e.name in standing_ for e in envs):
            raise Refused(
                f"tree {tree[:7]} is rejected for {envs[0].name} already: {describe(standing_[envs[0].name])}",
                CONFLICT,
                "nothing_changed",
            )
        for env in envs:
            if identity not in env.override_by:
                who = ", ".join(env.override_by) or "nobody (no override_by: in the config)"
                raise Refused(
                    f"{identity} may not {kind} trees for {env.name}; who may: {who}", FORBIDDEN, "override_not_allowed"
                )
        commit = gitcli.rev_parse(repo.path, f"{name}^{{commit}}") or (rows[-1][6] if rows else None)
        now = self.clock()
        word = "rejected" if kind == "reject" else "let through again (unrejected)"
        for env in envs:
            self.store.add_rejection(
                repo=repo.name,
                tree=tree,
                env=env.name,
                kind=kind,
                deployment_id=None,
                commit=commit or "",
                actor=identity,
                reason=reason,
                now=now,
            )
            if kind == "unreject":  # and the daemon's own memory that it failed there (core/decide.py)
                for each in repo.environments:
                    if env.name in upstream(repo, each.name):
                        self.store.clear_bad_tree(repo.name, each.name, tree)
            if commit:
                add_note(
                    str(repo.path),
                    commit,
                    f"gitopsd: tree {tree[:7]} {word} for {env.name} and later "
                    f"environments by {identity} at {when(now)}: {reason}",
                )
            self.notify(
                env.notify,
                {
                    "event": f"tree-{kind}ed",
                    "repo": repo.name,
                    "env": env.name,
                    "tree": tree,
                    "commit": commit,
                    "by": identity,
                    "reason": reason,
                },
            )
            log.warning(
                "tree %s %s for %s by %s: %s",
                tree[:7],
                word,
                env.name,
                identity,
                reason,
                extra={"repo": repo.name, "env": env.name},
            )
        self.on_change(repo.name)
        names = [e.name for e in envs]
        if kind == "reject":  # say every environment it is kept out of now
            names = [e.name for e in repo.environments if any(n in upstream(repo, e.name) for n in names)]
        return f"tree {tree[:7]} {word} by {identity} for {', '.join(names)}: {reason}"

    # -- expiry notices, on every look ----------------------------------------------------------------------
    def tell_expired(self, repo: Repository) -> None:
        """Notify once (per daemon run) of each approval that expired on a recent release candidate."""
        now = self.clock()
        for rc in self.store.rcs(repo.name, limit=20):
            target = repo.environment(rc.target_env)
            policy = target.approvals if target is not None else None
            if target is None or policy is None or policy.expire_after is None:
                continue
            for actor, (kind, _note, at) in newest_by_actor(self.store.approval_rows(repo.name, rc.name)).items():
                key = (repo.name, rc.name, actor)
                if kind == "approve" and at + policy.expire_after < now and key not in self._expired_told:
                    self._expired_told.add(key)
                    self.notify(
                        target.notify,
                        {
                            "event": "rc-approval-expired",
                            "repo": repo.name,
                            "env": target.name,
                            "rc": rc.name,
                            "commit": rc.commit_id,
                            "by": actor,
                            "approved_at": at,
                            "expired_at": at + policy.expire_after,
                        },
                    )

    # -- the audit note of a deployment ----------------------------------------------------------------------
    def audit_deployment(self, repo: Repository, deployment: Deployment) -> None:
        """Note how a finished deployment ended (succeeded, failed, canceled, interrupted) and why, in one line."""
        why = " ".join((deployment.outcome or "").split())  # one line, whatever the playbook's words held
        line = (
            f"gitopsd: {deployment.kind} to {deployment.env} {deployment.result} (deployment #{deployment.id}, "
            f"{deployment.trigger} by {deployment.actor}) at {when(deployment.finished_at or self.clock())}"
        )
        if why:
            line += f": {why}"
        allowed = self._allowed_by(repo, deployment)
        if allowed:
            line += f"; allowed by {allowed}"
        add_note(str(repo.path), deployment.commit, line if len(line) <= NOTE_MAX else line[: NOTE_MAX - 3] + "...")

    def _allowed_by(self, repo: Repository, deployment: Deployment) -> str:
        """What let a deployment through its environment's gates (candidate, approvers, sign-offs, checks), or ''."""
        env = repo.environment(deployment.env)
        if (
            env is None
            or deployment.kind != "deploy"
            or (env.approvals is None and env.require_signoff is None and not env.require_checks)
        ):
            return ""
        from .readmodels import NO_MARKS, release_marks

        mark = release_marks(self.config(), self.store, [deployment]).get(deployment.id, NO_MARKS)
        parts = (
            [
                f"rc/{mark['rc']} approved by {', '.join(mark['approved_by']) or 'nobody'}"
                + (f" on preview #{mark['preview']}" if mark["preview"] else "")
            ]
            if mark["rc"]
            else []
        )
        if mark["signed_off_by"]:
            parts.append(f"signed off by {', '.join(mark['signed_off_by'])}")
        statuses = self.store.statuses(repo.name, deployment.tree)
        if statuses:
            parts.append("checks " + ", ".join(f"{s.context} {s.state}" for s in statuses))
        return "; ".join(parts)
