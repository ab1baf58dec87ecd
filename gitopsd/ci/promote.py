"""Automatic promotion: `auto_promote: true` on an environment makes the daemon promote its source's head.

When the head of an environment's `promote_from` branch passes every gate of that environment
(its required checks, the tree rule, its deploy windows), the daemon makes the exact-tree
promotion commit itself, as `gitopsd promote` does (gate/promotion.py: judged by the same rule,
moved by compare-and-swap), recorded as the identity `gitopsd` with the trigger `auto-promote`.

The daemon calls `look` on every look at a repository: after a push, a new commit status, a
finished deployment, a sweep. Cheap reads come first (heads, statuses, deployments), so a head
that cannot pass yet costs no Git object; a head the full rule still refuses (a closed deploy
window, say) is judged again at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..adapters import signing
from ..base import gitcli
from ..core.settings import Environment, Repository
from ..core.types import Trigger
from ..gate import promotion
from ..gate.approvals import Policy, bound_approval_state
from ..gate.rejections import describe, rejection_for
from ..gate.required import unmet
from ..gate.snapshot import GateConfig

if TYPE_CHECKING:
    from ..adapters.store import ReleaseCandidate
    from ..gate.policy import Records

log = logging.getLogger("gitopsd.ci")

IDENTITY = "gitopsd"
RETRY_REFUSED = 60.0  # seconds before a head the full rule refused is judged again


class Holds(Protocol):
    """What else of the store automatic promotion reads: suspensions, what ran, release candidates."""

    def suspension(self, repo: str, env: str) -> object | None: ...
    def tree_tried(self, repo: str, env: str, tree: str) -> bool: ...
    def rcs(self, repo: str, limit: int = 50) -> list[ReleaseCandidate]: ...


class AutoPromoter:
    """Promotes heads into environments with `auto_promote: true` once they pass every gate there."""

    def __init__(
        self,
        store: Records,
        holds: Holds,
        gate: Callable[[], GateConfig],
        announce: Callable[[str, str, str], None],
        clock: Callable[[], float] = time.time,
    ):
        """`announce(repo, commit, reason)` tells the daemon who made `commit` before the branch moves."""
        self.store, self.holds, self.gate, self.announce, self.clock = store, holds, gate, announce, clock
        self._refused: dict[tuple[str, str, str], float] = {}  # (repo, env, source head) -> when the rule refused it

    def look(self, repo: Repository) -> list[str]:
        """Promote where a source head passes now; return what was done, one line per environment moved."""
        done = []
        for env in repo.environments:
            if env.auto_promote:
                line = self._look_at(repo, env)
                if line:
                    done.append(line)
        return done

    def _look_at(self, repo: Repository, env: Environment) -> str | None:
        heads = gitcli.branch_heads(repo.path, [env.promote_from, env.branch])
        if env.branch not in heads:
            return None
        dst_head, dst_tree = heads[env.branch]
        source = repo.environment_for_branch(env.promote_from)
        src_name = source.name if source is not None else env.promote_from
        if env.approvals is not None:  # the newest release candidate for it, once approved (docs/human-gates.md)
            newest = next((rc for rc in self.holds.rcs(repo.name) if rc.target_env == env.name), None)
            if newest is None:
                return None
            src_head, tree, src_name = newest.commit_id, newest.tree, f"rc/{newest.name}"
        elif env.promote_from in heads:
            src_head, tree = heads[env.promote_from]
        else:
            return None
        if tree == dst_tree:
            return None
        key = (repo.name, env.name, src_head)
        rejected = rejection_for(repo, self.store.rejections(repo.name, tree), env.name)
        if rejected is not None:  # paused until a new tree passes the source (gate/rejections.py)
            if self.clock() - self._refused.get(key, -RETRY_REFUSED) >= RETRY_REFUSED:
                self._refused[key] = self.clock()
                log.info(
                    "automatic promotion to %s waits: tree %s is rejected: %s",
                    env.name,
                    tree[:7],
                    describe(rejected),
                    extra={"repo": repo.name, "env": env.name, "commit": src_head[:7]},
                )
            return None
        # A tree that ran here before is never brought back by itself: a rollback from it must stay.
        if self.holds.tree_tried(repo.name, env.name, tree) or not self._may_pass(repo, env, tree):
            return None
        if self.clock() - self._refused.get(key, -RETRY_REFUSED) < RETRY_REFUSED:
            return None
        view = self.gate().repository(repo.name)
        gate_env = view.environment(env.name) if view is not None else None
        if view is None or gate_env is None:
            return None
        reason = f"automatic promotion of {src_name} ({src_head[:7]}) to {env.name}"
        result = promotion.promote(
            view,
            str(repo.path),
            self.store,
            gate_env,
            src_name,
            src_head,
            dst_head,
            identity=IDENTITY,
            announce=lambda commit, _override: self._announce(repo.name, commit, reason),
            ssh_crypto=signing.ssh_crypto,
        )
        extra = {"repo": repo.name, "env": env.name, "commit": src_head[:7]}
        if result.state == "moved":
            self._refused.pop(key, None)
            log.info("%s", result.summary, extra={**extra, "trigger": Trigger.AUTO_PROMOTE})
            return result.summary
        if result.state == "refused" and result.verdict is not None:
            self._refused[key] = self.clock()
            if len(self._refused) > 1000:  # bounded: oldest first
                self._refused.pop(next(iter(self._refused)))
            log.info("automatic promotion to %s waits: %s", env.name, result.verdict.rule, extra=extra)
        elif result.state == "raced":
            log.info("automatic promotion to %s raced with another update; it looks again", env.name, extra=extra)
        return None

    def _may_pass(self, repo: Repository, env: Environment, tree: str) -> bool:
        """The cheap part of the gate: not suspended, the source verified the tree, every required check passed."""
        if self.holds.suspension(repo.name, env.name) is not None:
            return False
        source = repo.environment_for_branch(env.promote_from)
        if source is not None and not self.store.tree_succeeded(repo.name, source.name, tree):
            return False
        if env.require_checks and unmet(env.require_checks, self.store.statuses(repo.name, tree)):
            return False
        a = env.approvals
        if a is not None:  # an approved release candidate (the full rule judges it again, with sign-offs)
            policy = Policy.of(a)
            return any(
                not bound_approval_state(policy, self.store, repo.name, name, env.name, self.clock())[1]
                for name, _created in self.store.rcs_for_tree(repo.name, tree, env.name)
            )
        return True

    def _announce(self, repo: str, commit: str, reason: str) -> bool:
        self.announce(repo, commit, reason)
        return True
