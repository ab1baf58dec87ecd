"""What to do about one environment, given what Git asks for and what the store knows. Pure.

The reconciler acts on it; `gitopsd status` shows it. One function, so the two never disagree
about what "stalled" or "failed" means.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ports import Ledger
from .types import EMPTY_TREE, Action, Deployment, DriftReport, FailureStatus, Head, Kind, Result, WatchWindow

__all__ = ["EMPTY_TREE", "Decision", "Head", "decide", "decide_from_store"]


@dataclass(frozen=True)
class Decision:
    """What one look concluded (see Action); a deploy says its kind and attempt, a wait when to retry."""

    action: Action
    kind: Kind | None = None
    attempt: int = 1
    retry_at: float | None = None
    reason: str | None = None


def decide(  # noqa: C901 (the decision table of docs/concepts.md, one branch per row)
    desired: Head | None,
    deployed: Deployment | None,
    last: Deployment | None,
    failure: FailureStatus | None,
    bad_tree_reason: str | None,
    rollback: bool,
    busy: bool,
    now: float,
    blocked_reason: str | None = None,
    suspended_reason: str | None = None,
    sync: bool = False,
    watch: WatchWindow | None = None,
    drift: DriftReport | None = None,
    heal: bool = False,
    closed_window: tuple[str, float | None] | None = None,
    announced: bool = False,
) -> Decision:
    """Given what Git asks for, what the store knows and how the promotion rule judged the head, return what to do.

    `rollback`: the rule accepted the head as a rollback. `blocked_reason`: the rule refused the head
    (the daemon judges every new head again; see reconciler). `suspended_reason`: an operator
    suspended the environment. `sync`: an operator asked to re-apply what is deployed. `watch`, `drift`:
    the environment's last post-deploy watch and drift report (they count only for the deployed
    deployment). `heal`: drift detection asks to re-apply what is deployed. `closed_window`: why the deploy
    windows keep deployments out now and when they open (windows.closed_now); it holds every deployment but a
    rollback, and a new head whose push was `announced` by the hook that judged the windows then. Pure.
    """
    if desired is None:
        return Decision(Action.MISSING, reason="the environment branch does not exist")
    if busy:
        return Decision(Action.BUSY)
    if suspended_reason is not None:
        return Decision(Action.SUSPENDED, reason=suspended_reason)
    if deployed is not None and deployed.commit == desired.commit:
        if (sync or heal) and closed_window is not None:
            return Decision(Action.WAIT, retry_at=closed_window[1], reason=closed_window[0])
        if sync:
            return Decision(Action.DEPLOY, kind=Kind.REAPPLY)
        if heal:
            return Decision(Action.DEPLOY, kind=Kind.HEAL)
        if last is not None and last.id > deployed.id and last.result == Result.FAILED:
            # A re-apply (sync, heal) of what runs failed: the hosts may be half changed, so not in sync.
            return Decision(
                Action.FAILED,
                reason=f"the {last.kind} of {last.commit[:7]} failed (deployment #{last.id}"
                f"{': ' + last.outcome if last.outcome else ''}); deployment "
                f"#{deployed.id} is the last that succeeded: `gitopsd sync "
                f"{deployed.env}` re-applies it again",
            )
        return _in_sync(deployed, watch, drift, now)
    if deployed is None and desired.tree == EMPTY_TREE:
        return Decision(Action.WAITING, reason="nothing deployed yet: waiting for its first promotion")
    if blocked_reason is not None:
        return Decision(Action.BLOCKED, reason=blocked_reason)
    same_commit_failure = failure if failure is not None and failure.commit == desired.commit else None
    if same_commit_failure is not None and same_commit_failure.failed:
        return Decision(Action.FAILED, reason=same_commit_failure.reason)
    if bad_tree_reason is not None and not (deployed is not None and deployed.tree == desired.tree):
        return Decision(Action.STALLED, reason=f"this tree failed here before: {bad_tree_reason}")
    if same_commit_failure is not None:
        if same_commit_failure.stalled:
            return Decision(Action.STALLED, reason=same_commit_failure.reason)
        if same_commit_failure.next_retry_at is not None and same_commit_failure.next_retry_at > now:
            return Decision(Action.WAIT, retry_at=same_commit_failure.next_retry_at, reason=same_commit_failure.reason)
    attempt = same_commit_failure.failures + 1 if same_commit_failure else 1
    # The kind says what the move really is: back onto the tree that runs now is a reapply (nothing
    # happened since) or a rollback (a failed or canceled attempt came between); otherwise the verdict decides.
    if deployed is not None and deployed.tree == desired.tree:
        reapply = last is not None and last.result == Result.SUCCEEDED and last.tree == desired.tree
        kind = Kind.REAPPLY if reapply else Kind.ROLLBACK
    else:
        kind = Kind.ROLLBACK if rollback else Kind.DEPLOY
    if closed_window is not None and kind != Kind.ROLLBACK and not announced:
        return Decision(Action.WAIT, retry_at=closed_window[1], reason=closed_window[0])
    return Decision(Action.DEPLOY, kind=kind, attempt=attempt)


def decide_from_store(
    store: Ledger,
    repo: str,
    env: str,
    desired: Head | None,
    deployed: Deployment | None,
    busy: bool,
    now: float,
    *,
    rollback: bool = False,
    blocked_reason: str | None = None,
    sync: bool = False,
    heal: bool = False,
    closed_window: tuple[str, float | None] | None = None,
    announced: bool = False,
) -> Decision:
    """`decide` with everything else it needs read from the store (a suspension, the watch, drift too)."""
    hold = store.suspension(repo, env)
    suspended = None
    if hold is not None:
        suspended = (
            f"suspended by {hold.actor}"
            + (f": {hold.reason}" if hold.reason else "")
            + f"; `gitopsd resume {env}` lets it deploy again"
        )
    return decide(
        desired,
        deployed,
        store.last(repo, env),
        store.failure(repo, env),
        store.bad_tree(repo, env, desired.tree) if desired else None,
        rollback,
        busy,
        now,
        blocked_reason,
        suspended,
        sync,
        store.watch(repo, env),
        store.drift_report(repo, env),
        heal,
        closed_window,
        announced,
    )


def _in_sync(deployed: Deployment, watch: WatchWindow | None, drift: DriftReport | None, now: float) -> Decision:
    """Git and the store agree; say what the post-deploy watch and drift detection add about this deployment."""
    if watch is not None and watch.deployment_id == deployed.id:
        if watch.active(now):
            return Decision(Action.WATCHING, retry_at=watch.until, reason=f"watching, {watch.left(now)}")
        if watch.state == "breached":
            return Decision(Action.WATCH_FAILED, reason=watch.reason)
    if drift is not None and drift.deployment_id == deployed.id:
        if drift.state == "drifted":
            return Decision(Action.DRIFTED, reason=f"{drift.reason} (`gitopsd drift {drift.env}` shows them)")
        if drift.state == "unknown":
            return Decision(Action.IN_SYNC, reason=f"drift unknown: {drift.reason}")
    return Decision(Action.IN_SYNC)
