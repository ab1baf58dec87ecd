"""Where a branch head becomes a deployment: the level-triggered reconcile loop.

For each environment, desired = the branch head (re-read from Git on every look), deployed =
the last successful deployment (from the store). A look that finds them different, with no
deployment running and no backoff or stall in the way, starts one. Triggers only say which
environment to look at; they never carry what changed.

The hook is not a security boundary (the git user can `git update-ref`, a push into a linked
worktree skips hooks, a non-atomic push can land half), so every new head is judged again here
with the same `policy.judge` before it is deployed; a refused head is `blocked` (core/judging.py).

This module holds the look and its decision, and starts a deployment; the deployment's run on a worker, its
record, and the retry, stall or automatic rollback of a failure are core/deploying.py's. What a look is asked
and keeps (looks, causes, the deployments running, backoff) is core/looks.py's.

After a successful deployment, the environment's `watch:` checks keep running for a while, and a breach
rolls back as a failed deployment does (core/watching.py). `drift:` runs the deployed tree in check mode
on a schedule, never beside a deployment of that environment (core/drifting.py). Both are engines of
their own that this loop drives: it hands them the looks that are theirs and the rollbacks they need.

The core depends on ports (core/ports.py: Git, the store, the judge, notifications; the Toolbox of
core/deployment.py; a clock and an executor), so unit tests drive it with fakes and the daemon wires
in pygit2 and the git CLI, SQLite, ansible-runner and threads. It imports no adapter.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable

from .decide import Decision, decide_from_store
from .deploying import Deploying
from .deployment import Toolbox
from .drifting import DriftDetection
from .errors import StalledError, TransientError
from .looks import IN_SYNC_ACTIONS, Admitted, Cause, Look, RunningDeployment, backoff, blocked_reason
from .ports import GitPort, Judge, Notifier, StorePort, Verdict
from .settings import Config, Environment, Repository
from .types import EMPTY_TREE, Action, Deployment, DeploymentFolders, DeploymentJob, Head, Kind, Progress, Trigger
from .watching import TRANSIENT_RETRY, PostDeployWatch
from .windows import closed_now

# Callers import these from here (they moved to core/looks.py and core/watching.py).
__all__ = ["TRANSIENT_RETRY", "Admitted", "Cause", "Look", "Reconciler", "backoff", "blocked_reason"]

log = logging.getLogger("gitopsd.reconciler")


class Reconciler(Deploying):
    """Decides and runs deployments. `look` is called from one thread; deployments run on `submit`."""

    def __init__(
        self,
        config: Config,
        store: StorePort,
        git: GitPort,
        tools: Toolbox,
        *,
        submit: Callable[[Callable[[], None]], object],
        schedule: Callable[[Look, float], None],
        judge: Judge,
        notify: Notifier,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_change: Callable[[], None] = lambda: None,
        background: Callable[[Callable[[], None]], object] | None = None,
    ):
        self.config = config
        self.store = store
        self.git = git
        self.tools = tools
        self.submit = submit
        # Watch rounds and drift checks: short or read-only work, kept off the deployment workers.
        self.background = background or submit
        self.schedule = schedule
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 (jitter for retries, not a secret)
        self.on_change = on_change
        self.on_finished: Callable[[DeploymentJob, str], None] = lambda _job, _result: None  # e.g. the audit trail
        self.judge = judge
        self.notify = notify
        self.accepting = True
        self._accepted: dict[tuple[str, str, str, str | None], Verdict] = {}  # (repo, env, desired, deployed)
        self.causes: dict[tuple[str, str], Cause] = {}
        self._running: dict[tuple[str, str], RunningDeployment] = {}
        self._broken: dict[tuple[str, str], str] = {}  # environments whose branch cannot be read, and why
        self._held: dict[tuple[str, str], tuple[Head | None, str]] = {}  # deployments a closed window holds, said once
        self._heads: dict[tuple[str, str], Head] = {}  # the heads last recorded in the store
        self._superseded: dict[tuple[str, str], tuple[int, str, str]] = {}  # (old id, new head, where it stopped)
        # Repositories whose last look at every environment found each in sync with nothing due: a periodic sweep may
        # pass them over while their refs and the store stay as they were (services/sweepplan.py, issue 28).
        self.settled: set[str] = set()
        self._lock = threading.Lock()
        self._instance = hashlib.sha256(str(config.database).encode()).hexdigest()[:8]
        # Notify and tools are read at each use: a reload (and a test) replaces them on the reconciler.
        self.watch = PostDeployWatch(
            store,
            tools=lambda: self.tools,
            revert=self._revert,
            reject=self._reject,
            notify=lambda target, event: self.notify(target, event),
            look_later=self._look_later,
            background=self.background,
            clock=clock,
            on_change=lambda: self.on_change(),
        )
        self.drift = DriftDetection(
            store,
            head=lambda repo, env: self.git.head(repo, env.branch),
            run_check=self._check_run,
            notify=lambda target, event: self.notify(target, event),
            look_later=self._look_later,
            background=self.background,
            clock=clock,
            on_change=lambda: self.on_change(),
        )

    # -- bookkeeping shared with the daemon ----------------------------------------------------------
    def running(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {k: v.deployment_id for k, v in self._running.items()}

    def running_commits(self) -> dict[tuple[str, str], tuple[str, Progress | None]]:
        """(repo, env) -> (commit, where it is) of every running deployment (not the queued ones)."""
        with self._lock:
            return {k: (v.commit, v.progress) for k, v in self._running.items() if v.started}

    def queued(self) -> int:
        """How many deployments wait for a free worker."""
        with self._lock:
            return sum(1 for v in self._running.values() if not v.started)

    def cancel_all(self) -> None:
        with self._lock:
            for item in self._running.values():
                item.cancel.set()
        self.cancel_checks()

    def cancel(self, repo: str, env: str, who: str) -> RunningDeployment | None:
        """Cancel the deployment running (or queued) in REPO/ENV at an operator's word; return it, or None if none is.
        Its processes are reaped as at a timeout, and the environment stalls on what ran before (no retry)."""
        with self._lock:
            item = self._running.get((repo, env))
            if item is None or item.cancel.is_set():
                return None
            item.canceled_by = who
            item.cancel.set()
            return item

    def cancel_checks(self) -> None:
        """Stop running drift checks (the daemon stops): a check has nothing to finish."""
        self.drift.cancel_all()

    # -- the loop body -------------------------------------------------------------------------------
    def look(self, request: Look) -> None:
        repo = self.config.repository(request.repo)
        if repo is None:
            return
        envs = repo.environments if request.env is None else [e for e in repo.environments if e.name == request.env]
        self.settled.discard(repo.name)
        settled = request.env is None and request.trigger not in (Trigger.WATCH_CHECK, Trigger.DRIFT_CHECK)
        for env in envs:
            try:
                if request.trigger == Trigger.WATCH_CHECK:
                    self.watch.due(repo, env)
                elif request.trigger == Trigger.DRIFT_CHECK:
                    self._drift_due(repo, env)
                else:
                    decision = self._look_at(repo, env, request.trigger)
                    settled = settled and decision.action == Action.IN_SYNC and decision.retry_at is None
            except TransientError as exc:  # a busy store, a ref lock held: look again soon, no traceback
                log.warning("%s; looking again in %gs", exc, TRANSIENT_RETRY, extra={"repo": repo.name, "env": env.name})
                self.schedule(Look(repo.name, env.name, Trigger.RETRY), self.clock() + TRANSIENT_RETRY)
                settled = False
            except OSError as exc:  # out of open files, processes or disk: one line a look, never a traceback each
                log.error("look failed: %s; the next sweep looks again", exc, extra={"repo": repo.name, "env": env.name})
                settled = False
            except Exception:  # one environment's trouble must not stop the others
                log.exception("look failed", extra={"repo": repo.name, "env": env.name})
                settled = False
        if settled:
            self.settled.add(repo.name)

    def _look_at(self, repo: Repository, env: Environment, trigger: str) -> Decision:  # noqa: C901 (the reconciler's one look: each branch is a documented state)
        now = self.clock()
        try:
            desired = self.git.head(repo, env.branch)
        except StalledError as exc:
            # Every look would say it again (each sweep, each ref event): log it once until it changes.
            if self._broken.get((repo.name, env.name)) != str(exc):
                self._broken[(repo.name, env.name)] = str(exc)
                log.error("%s", exc, extra={"repo": repo.name, "env": env.name})
            return Decision(Action.MISSING, reason=str(exc))
        self._broken.pop((repo.name, env.name), None)
        if desired is not None and self._heads.get((repo.name, env.name)) != desired:
            self.store.record_head(repo.name, env.name, desired.commit, desired.tree)  # for `gitopsd status`
            self._heads[(repo.name, env.name)] = desired
        key = (repo.name, env.name)
        deployed = self.store.deployed(repo.name, env.name)
        checking = self.drift.checking(repo.name, env.name)
        with self._lock:
            busy = key in self._running or checking
            running = self._running.get(key)
        if checking and desired is not None and (deployed is None or deployed.commit != desired.commit):
            self.drift.cancel(repo.name, env.name)  # a new head: drift of what runs now no longer matters; deploy it soon
        if running is not None and desired is not None and running.commit != desired.commit:
            self._supersede(repo, env, running, desired, deployed)
        heal = self.drift.heal_asked(repo.name, env.name, deployed)
        verdict = None
        if desired is not None and not busy and not (deployed is None and desired.tree == EMPTY_TREE):
            if deployed is None or deployed.commit != desired.commit:
                verdict = self._verdict(repo, env, desired, deployed)
            self._note_block(repo, env, desired, deployed, verdict, now)
        sync = self.store.sync_request(repo.name, env.name)
        if sync is not None and (deployed is None or sync.commit != deployed.commit):
            self.store.clear_sync(repo.name, env.name)  # what it asked to re-apply is not what runs any more
            sync = None
        closed = closed_now(env.windows, now) if env.windows else None
        # Every deployment but a rollback meets the windows here too: a sync, a heal, a retry (its verdict was
        # remembered while the window was open), a head the hook did not announce.
        decision = decide_from_store(
            self.store,
            repo.name,
            env.name,
            desired,
            deployed,
            busy,
            now,
            rollback=verdict is not None and verdict.kind == Kind.ROLLBACK,
            blocked_reason=blocked_reason(verdict) if verdict is not None and not verdict.accepted else None,
            sync=sync is not None,
            heal=heal is not None,
            closed_window=closed,
            # An operator's admission (retry --force by an identity in override_by) overrides the windows too.
            announced=desired is not None and (self._announced(repo, desired) or isinstance(verdict, Admitted)),
        )
        synced = (
            sync is not None
            and decision.action == Action.DEPLOY
            and self.accepting
            and desired is not None
            and desired.commit == sync.commit
        )
        if synced:
            # `gitopsd sync`: the operator, not the push that once brought this commit, causes this run.
            assert sync is not None and desired is not None
            self.remember_cause(repo.name, desired.commit, Cause(sync.actor, Trigger.SYNC, sync.reason))
        elif heal is not None and decision.kind == Kind.HEAL and self.accepting and desired is not None:
            self.drift.healing(repo.name, env.name)
            self.remember_cause(repo.name, desired.commit, Cause("gitopsd", Trigger.HEAL, heal))
        if decision.action in IN_SYNC_ACTIONS:
            self.store.clear_failure(repo.name, env.name)
        elif decision.action == Action.WAIT and closed is not None and decision.reason == closed[0]:
            if self._held.get(key) != (desired, closed[0]):  # said once per head and window
                self._held[key] = (desired, closed[0])
                log.info(
                    "%s %s: %s",
                    "re-applying" if sync or heal else "deploying",
                    desired.commit[:7] if desired else "",
                    closed[0],
                    extra={"repo": repo.name, "env": env.name},
                )
            if decision.retry_at is not None:
                self.schedule(Look(repo.name, env.name, Trigger.RETRY), decision.retry_at)
        elif decision.action == Action.WAIT and decision.retry_at is not None:
            self.schedule(Look(repo.name, env.name, Trigger.RETRY), decision.retry_at)
        elif decision.action == Action.DEPLOY and self.accepting:
            assert desired is not None
            self._start(repo, env, desired, deployed, decision, trigger, now)
            if synced:  # only once the reapply is recorded: `gitopsd wait` always sees the request or the reapply
                self.store.clear_sync(repo.name, env.name)
        elif decision.action in (Action.STALLED, Action.FAILED, Action.BLOCKED, Action.MISSING, Action.SUSPENDED):
            log.debug("%s: %s", decision.action, decision.reason, extra={"repo": repo.name, "env": env.name})
        return decision

    def _start(
        self,
        repo: Repository,
        env: Environment,
        desired: Head,
        deployed: Deployment | None,
        decision: Decision,
        trigger: str,
        now: float,
    ) -> None:
        cause = self.causes.get((repo.name, desired.commit)) or Cause.unannounced(trigger)
        assert decision.kind is not None
        reason = cause.reason
        superseded = self._superseded.pop((repo.name, env.name), None)
        if superseded is not None and superseded[1] == desired.commit:
            reason = "; ".join(filter(None, (reason, f"supersedes deployment #{superseded[0]} (canceled at {superseded[2]})")))
        deployment_id = self.store.begin(
            repo=repo.name,
            env=env.name,
            commit=desired.commit,
            tree=desired.tree,
            previous_commit=deployed.commit if deployed else None,
            kind=decision.kind,
            trigger=cause.trigger if cause.actor != "unknown" else trigger,
            actor=cause.actor,
            now=now,
            attempt=decision.attempt,
            reason=reason,
            queued=True,
        )
        # A new push ends the watch; this deployment gets its own.
        self.watch.end(repo, env, f"deployment #{deployment_id} of {desired.commit[:7]} began", now)
        job = DeploymentJob(
            deployment_id,
            repo.name,
            env.name,
            desired,
            deployed,
            decision.kind,
            decision.attempt,
            DeploymentFolders.of(self.config.state_dir, deployment_id),
        )
        item = RunningDeployment(deployment_id, desired.commit, threading.Event(), kind=decision.kind)
        with self._lock:
            self._running[(repo.name, env.name)] = item
        log.info(
            "deploying %s (%s, attempt %d, caused by %s)",
            desired.commit[:7],
            decision.kind,
            decision.attempt,
            cause.described(),
            extra=job.log_extra(),
        )
        self.on_change()
        self.submit(lambda: self._deploy(repo, env, job, item))

    # -- the post-deploy watch and drift detection (core/watching.py, core/drifting.py) -------------------
    def resume(self) -> None:
        """After a start: resume the watches the store says were running (their windows survive a restart)."""
        # The heads the store holds need not be written again by the first look (3,000 writes at 1,000 repositories).
        self._heads.update({key: Head(commit, tree) for key, (commit, tree) in self.store.recorded_heads().items()})
        self.watch.resume()

    def _drift_due(self, repo: Repository, env: Environment) -> None:
        """A drift check is due: hand it to drift detection unless a deployment of `env` runs (or the daemon stops)."""
        if env.drift is None or not self.accepting:
            return
        with self._lock:
            if (repo.name, env.name) in self._running:
                return  # never beside a deployment: the deployment schedules its own baseline check
        self.drift.due(repo, env)

    def _look_later(self, repo: str, env: str, trigger: str, when: float) -> None:
        self.schedule(Look(repo, env, trigger), when)
