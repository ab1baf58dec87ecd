"""Judging every new head again before it is deployed (the hook is no security boundary): verdicts, blocks, supersedes.

A mixin of the Reconciler (core/reconcile.py): it keeps the verdicts the promotion rule accepted and the causes the
daemon learned, records and announces a refused head once, and cancels a rollout a newer acceptable head supersedes.
"""

from __future__ import annotations

import logging

from .looks import ANNOUNCING_TRIGGERS, Admitted, Cause, RunningDeployment, blocked_reason
from .ports import Judge, Notifier, StorePort, Verdict
from .settings import Environment, Repository
from .types import Block, Deployment, Head, Kind, Trigger

log = logging.getLogger("gitopsd.reconciler")


class Judging:
    """The reconciler's judging of heads; the Reconciler sets these attributes (and a test or a reload replaces some)."""

    store: StorePort
    judge: Judge
    notify: Notifier
    causes: dict[tuple[str, str], Cause]
    _accepted: dict[tuple[str, str, str, str | None], Verdict]  # (repo, env, desired, deployed)
    _superseded: dict[tuple[str, str], tuple[int, str, str]]  # (old id, new head, where it stopped)

    def remember_cause(self, repo: str, commit: str, cause: Cause) -> None:
        """Who or what moved a branch to `commit` (a push, an admission, gitopsd): the deployment of it records them."""
        self.causes[(repo, commit)] = cause
        if len(self.causes) > 10_000:  # bounded: oldest first
            self.causes.pop(next(iter(self.causes)))

    def _verdict(self, repo: Repository, env: Environment, desired: Head, deployed: Deployment | None) -> Verdict:
        """The promotion rule's verdict on deploying `desired` over `deployed`; accepted ones are remembered."""
        key = (repo.name, env.name, desired.commit, deployed.commit if deployed else None)
        if key in self._accepted:
            return self._accepted[key]
        admission = self.store.admission(repo.name, env.name, desired.commit)
        if admission is not None:
            kind = "rollback" if admission.kind == "rollback" else "promotion"
            verdict: Verdict = Admitted(True, kind, f"admitted by {admission.actor}: {admission.reason}", [])
            # The admission, not the nudge that announced it (if the daemon was up), says who and why.
            self.remember_cause(
                repo.name,
                desired.commit,
                Cause(admission.actor, Trigger.ROLLBACK if admission.kind == "rollback" else Trigger.RETRY, admission.reason),
            )
        else:
            # Deploy windows are judged here only for heads no push (or `gitopsd promote`) announced. An
            # announced head passed the windows when it was pushed: maybe just before a window closed, or
            # with an emergency override this daemon cannot check again. A head nobody announced (git
            # update-ref, a push that skipped the hook) meets the windows as they are now.
            cause = self.causes.get((repo.name, desired.commit))
            verdict = self.judge(repo, env, desired, deployed, not self._announced(repo, desired))
            override = getattr(verdict, "override", None)
            if verdict.accepted and override and not (cause and cause.reason):
                # Let through by a break-glass the daemon found itself: its deployment records who and why.
                self.remember_cause(
                    repo.name,
                    desired.commit,
                    Cause(cause.actor if cause else "unknown", cause.trigger if cause else "", override),
                )
        if verdict.accepted:
            self._accepted[key] = verdict
            if len(self._accepted) > 10_000:  # bounded: oldest first
                self._accepted.pop(next(iter(self._accepted)))
        return verdict

    def _announced(self, repo: Repository, desired: Head) -> bool:
        """Whether the hook announced this head (so it judged the deploy windows when it was pushed)."""
        cause = self.causes.get((repo.name, desired.commit))
        return cause is not None and cause.trigger in ANNOUNCING_TRIGGERS and cause.proven

    def _supersede(
        self, repo: Repository, env: Environment, running: RunningDeployment, desired: Head, deployed: Deployment | None
    ) -> None:
        """A newer acceptable head while a rollout runs: cancel its remaining batches; the next look rolls `desired`
        out from batch 1 (as Flux cancels the health checks of a superseded revision). Rollbacks are never canceled."""
        if (
            env.rollout is None
            or running.kind != Kind.DEPLOY
            or not running.started
            or running.cancel.is_set()
            or running.superseded_by is not None
        ):
            return
        verdict = self._verdict(repo, env, desired, deployed)
        if not verdict.accepted:
            return  # a refused head supersedes nothing: the rollout goes on, the head is blocked after it
        where = running.progress.label if running.progress is not None and running.progress.batch else "its start"
        running.superseded_by = desired.commit
        self._superseded[(repo.name, env.name)] = (running.deployment_id, desired.commit, where)
        log.warning(
            "newer head %s supersedes deployment #%d of %s at %s: its remaining batches are canceled, %s rolls out from batch 1",
            desired.commit[:7],
            running.deployment_id,
            running.commit[:7],
            where,
            desired.commit[:7],
            extra={"repo": repo.name, "env": env.name, "commit": desired.commit[:7]},
        )
        running.cancel.set()

    def _note_block(
        self, repo: Repository, env: Environment, desired: Head, deployed: Deployment | None, verdict: Verdict | None, now: float
    ) -> None:
        """Record (for `status`), log and notify a refused head once per commit; forget it when it is gone."""
        block = self.store.blocked(repo.name, env.name)
        if verdict is None or verdict.accepted:
            if block is not None:
                self.store.clear_block(repo.name, env.name)
            return
        reason = blocked_reason(verdict)
        deployed_commit = deployed.commit if deployed else None
        if block is not None and (block.commit, block.deployed_commit, block.reason) == (desired.commit, deployed_commit, reason):
            return
        self.store.block(repo.name, env.name, Block(desired.commit, deployed_commit, reason, now))
        if block is not None and block.commit == desired.commit:
            return  # the same head, judged again with other words: said already
        log.error(
            "blocked %s: %s (not deployed until the branch moves to an acceptable head, the rule is met, or an "
            "identity in override_by runs `gitopsd retry %s --force`)",
            desired.commit[:7],
            reason,
            env.name,
            extra={"repo": repo.name, "env": env.name, "commit": desired.commit[:7]},
        )
        self.notify(
            env.notify,
            {
                "event": "blocked",
                "repo": repo.name,
                "env": env.name,
                "commit": desired.commit,
                "tree": desired.tree,
                "rule": verdict.rule,
                "reason": reason,
                "deployed_commit": deployed_commit,
            },
        )
