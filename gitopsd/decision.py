"""What to do about one environment, given what Git asks for and what the store knows. Pure.

The reconciler acts on it; `gitopsd status` shows it. One function, so the two never disagree
about what "stalled" or "failed" means.
"""
from __future__ import annotations

from dataclasses import dataclass

from .policy import EMPTY_TREE
from .state import Deployment, FailureStatus, Store


# `gitopsd init` starts a later environment's branch at a commit with git's empty tree, to wait for
# its first promotion (a branch at `main` would pass the rule once qa ran main, unpromoted).


@dataclass(frozen=True)
class Head:
    """What a branch asks for: a commit and its tree."""

    commit: str
    tree: str


@dataclass(frozen=True)
class Decision:
    """What one look concluded. `action` is in-sync | deploy | wait | stalled | failed | blocked | busy | missing
    | waiting (for a first promotion: nothing was deployed and the branch holds the empty tree) | suspended."""

    action: str
    kind: str | None = None
    attempt: int = 1
    retry_at: float | None = None
    reason: str | None = None


def decide(desired: Head | None, deployed: Deployment | None, last: Deployment | None,
           failure: FailureStatus | None, bad_tree_reason: str | None, rollback: bool,
           busy: bool, now: float, blocked_reason: str | None = None, suspended_reason: str | None = None,
           sync: bool = False) -> Decision:
    """Given what Git asks for, what the store knows and how the promotion rule judged the head, return what to do.

    `rollback`: the rule accepted the head as a rollback. `blocked_reason`: the rule refused the head
    (the daemon judges every new head again; see reconciler). `suspended_reason`: an operator
    suspended the environment. `sync`: an operator asked to re-apply what is deployed. Pure.
    """
    if desired is None:
        return Decision("missing", reason="the environment branch does not exist")
    if busy:
        return Decision("busy")
    if suspended_reason is not None:
        return Decision("suspended", reason=suspended_reason)
    if deployed is not None and deployed.commit == desired.commit:
        return Decision("deploy", kind="reapply") if sync else Decision("in-sync")
    if deployed is None and desired.tree == EMPTY_TREE:
        return Decision("waiting", reason="nothing deployed yet: waiting for its first promotion")
    if blocked_reason is not None:
        return Decision("blocked", reason=blocked_reason)
    same_commit_failure = failure if failure is not None and failure.commit == desired.commit else None
    if same_commit_failure is not None and same_commit_failure.failed:
        return Decision("failed", reason=same_commit_failure.reason)
    if bad_tree_reason is not None and not (deployed is not None and deployed.tree == desired.tree):
        return Decision("stalled", reason=f"this tree failed here before: {bad_tree_reason}")
    if same_commit_failure is not None:
        if same_commit_failure.stalled:
            return Decision("stalled", reason=same_commit_failure.reason)
        if same_commit_failure.next_retry_at is not None and same_commit_failure.next_retry_at > now:
            return Decision("wait", retry_at=same_commit_failure.next_retry_at, reason=same_commit_failure.reason)
    attempt = same_commit_failure.failures + 1 if same_commit_failure else 1
    # The kind says what the move really is: back onto the tree that runs now is a reapply (nothing
    # happened since) or a rollback (a failed or canceled attempt came between); otherwise the verdict decides.
    if deployed is not None and deployed.tree == desired.tree:
        reapply = last is not None and last.result == "succeeded" and last.tree == desired.tree
        kind = "reapply" if reapply else "rollback"
    else:
        kind = "rollback" if rollback else "deploy"
    return Decision("deploy", kind=kind, attempt=attempt)


def decide_from_store(store: Store, repo: str, env: str, desired: Head | None, deployed: Deployment | None,
                      busy: bool, now: float, *, rollback: bool = False, blocked_reason: str | None = None,
                      sync: bool = False) -> Decision:
    """`decide` with everything else it needs read from the store (a suspension too)."""
    hold = store.suspension(repo, env)
    suspended = None
    if hold is not None:
        suspended = f"suspended by {hold.actor}" + (f": {hold.reason}" if hold.reason else "") + f"; `gitopsd resume {env}` lets it deploy again"
    return decide(desired, deployed, store.last(repo, env), store.failure(repo, env),
                  store.bad_tree(repo, env, desired.tree) if desired else None, rollback, busy, now, blocked_reason,
                  suspended, sync)
