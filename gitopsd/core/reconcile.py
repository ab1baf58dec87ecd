"""Where a branch head becomes a deployment: the level-triggered reconcile loop.

For each environment, desired = the branch head (re-read from Git on every look), deployed =
the last successful deployment (from the store). A look that finds them different, with no
deployment running and no backoff or stall in the way, starts one. Triggers only say which
environment to look at; they never carry what changed.

The hook is not a security boundary (the git user can `git update-ref`, a push into a linked
worktree skips hooks, a non-atomic push can land half), so every new head is judged again here
with the same `policy.judge` before it is deployed; a refused head is `blocked`.

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
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .decide import Decision, decide_from_store
from .deployment import Toolbox, execute, playbook_run
from .drifting import DriftDetection
from .errors import StalledError, TransientError
from .ports import GitPort, Judge, Notifier, StorePort, Verdict
from .settings import Config, Environment, Repository
from .types import (
    EMPTY_TREE,
    Action,
    Block,
    Deployment,
    DeploymentFolders,
    DeploymentJob,
    FailureStatus,
    Head,
    HostInfo,
    Kind,
    Progress,
    Result,
    RunOutcome,
    Trigger,
)
from .watching import TRANSIENT_RETRY, PostDeployWatch
from .windows import closed_now

log = logging.getLogger("gitopsd.reconciler")

# Nudges sent by code that judged the head with the deploy windows just before it moved the branch.
ANNOUNCING_TRIGGERS = (Trigger.PUSH, Trigger.PROMOTE)
IN_SYNC_ACTIONS = (Action.IN_SYNC, Action.WATCHING, Action.WATCH_FAILED, Action.DRIFTED)


@dataclass(frozen=True)
class Admitted:
    """An operator's admission (retry --force, rollback --to), standing in for the rule's verdict."""

    accepted: bool
    kind: str
    rule: str
    detail: list[str]


@dataclass(frozen=True)
class Look:
    """A request to look at one environment (or every environment of a repository)."""

    repo: str
    env: str | None
    trigger: str


@dataclass(frozen=True)
class Cause:
    """Who or what moved a branch to a commit, as the daemon learned it (never from commit metadata)."""

    actor: str
    trigger: str
    reason: str | None = None
    proven: bool = True  # False: a nudge the daemon cannot take for its hook's (daemon._listen): it announces nothing


def backoff(env: Environment, failures: int, rng: random.Random) -> float:
    """Capped exponential backoff with +-20% jitter, in seconds."""
    base = min(env.retry_backoff_max, env.retry_backoff * (2 ** max(0, failures - 1)))
    return float(base * rng.uniform(0.8, 1.2))


@dataclass
class _Running:
    deployment_id: int
    commit: str
    cancel: threading.Event
    progress: Progress | None = None
    started: bool = False  # False while queued for a worker (max_parallel deployments run at once)
    kind: str = ""
    superseded_by: str | None = None  # the newer head that canceled this rollout's remaining batches


class Reconciler:
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
        self._running: dict[tuple[str, str], _Running] = {}
        self._broken: dict[tuple[str, str], str] = {}  # environments whose branch cannot be read, and why
        self._held: dict[tuple[str, str], tuple[Head | None, str]] = {}  # deployments a closed window holds, said once
        self._heads: dict[tuple[str, str], Head] = {}  # the heads last recorded in the store
        self._superseded: dict[tuple[str, str], tuple[int, str, str]] = {}  # (old id, new head, where it stopped)
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
    def marker(self, deployment_id: int) -> str:
        """The process marker of a deployment: unique across state folders sharing one machine."""
        return f"{self._instance}-{deployment_id}"

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

    def cancel_checks(self) -> None:
        """Stop running drift checks (the daemon stops): a check has nothing to finish."""
        self.drift.cancel_all()

    def remember_cause(self, repo: str, commit: str, cause: Cause) -> None:
        self.causes[(repo, commit)] = cause
        if len(self.causes) > 10_000:  # bounded: oldest first
            self.causes.pop(next(iter(self.causes)))

    # -- the loop body -------------------------------------------------------------------------------
    def look(self, request: Look) -> None:
        repo = self.config.repository(request.repo)
        if repo is None:
            return
        envs = repo.environments if request.env is None else [e for e in repo.environments if e.name == request.env]
        for env in envs:
            try:
                if request.trigger == Trigger.WATCH_CHECK:
                    self.watch.due(repo, env)
                elif request.trigger == Trigger.DRIFT_CHECK:
                    self._drift_due(repo, env)
                else:
                    self._look_at(repo, env, request.trigger)
            except TransientError as exc:  # a busy store, a ref lock held: look again soon, no traceback
                log.warning("%s; looking again in %gs", exc, TRANSIENT_RETRY, extra={"repo": repo.name, "env": env.name})
                self.schedule(Look(repo.name, env.name, Trigger.RETRY), self.clock() + TRANSIENT_RETRY)
            except Exception:  # one environment's trouble must not stop the others
                log.exception("look failed", extra={"repo": repo.name, "env": env.name})

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

    # -- judging every new head again ----------------------------------------------------------------
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
        self, repo: Repository, env: Environment, running: _Running, desired: Head, deployed: Deployment | None
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
        cause = self.causes.get((repo.name, desired.commit), Cause("unknown", trigger))
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
        item = _Running(deployment_id, desired.commit, threading.Event(), kind=decision.kind)
        with self._lock:
            self._running[(repo.name, env.name)] = item
        log.info(
            "deploying %s (%s, attempt %d, caused by %s)",
            desired.commit[:7],
            decision.kind,
            decision.attempt,
            cause.actor,
            extra=job.log_extra(),
        )
        self.on_change()
        self.submit(lambda: self._deploy(repo, env, job, item))

    # -- one deployment (runs on a worker) -----------------------------------------------------------
    def _deploy(self, repo: Repository, env: Environment, job: DeploymentJob, item: _Running) -> None:
        """One deployment on a worker. Nothing may end it silently: the pool would keep the exception to itself."""
        if item.cancel.is_set():  # the daemon is stopping: a queued deployment never starts
            self.store.finish(job.id, Result.CANCELED, now=self.clock(), outcome="canceled before it started")
            with self._lock:
                if self._running.get((repo.name, env.name)) is item:
                    self._running.pop((repo.name, env.name))
            try:
                self.on_finished(job, Result.CANCELED)
            except Exception:
                log.exception("after the deployment's record", extra=job.log_extra())
            return
        item.started = True
        self.store.started(job.id, self.clock())  # queued until now, while max_parallel others ran
        self.on_change()
        result = Result.FAILED
        try:
            result = self._run_deployment(repo, env, job, item)
        except Exception:
            log.exception("deployment worker failed", extra=job.log_extra())
        finally:
            with self._lock:  # never leave the environment looking busy forever
                if self._running.get((repo.name, env.name)) is item:
                    self._running.pop((repo.name, env.name))
        try:
            self._prune()
        except Exception:
            log.exception("removing old work folders failed", extra=job.log_extra())
        self.on_change()
        # Look again here, and where this environment's trees are promoted to: a head blocked there
        # for want of this deployment may pass now.
        for other in repo.environments:
            if other.name == env.name or other.promote_from == env.branch:
                self.schedule(Look(repo.name, other.name, Trigger.AFTER_DEPLOY), self.clock())
        if result == Result.SUCCEEDED and env.drift is not None:
            # The first check-mode run after a deployment is its drift baseline: take it while nothing drifted yet.
            self.schedule(Look(repo.name, env.name, Trigger.DRIFT_CHECK), self.clock())

    def _run_deployment(self, repo: Repository, env: Environment, job: DeploymentJob, item: _Running) -> Result:
        started = time.monotonic()
        result, reason, permanent, detail = Result.FAILED, "", False, {}
        watch_hosts: tuple[HostInfo, ...] = ()

        def progress(where: Progress) -> None:
            item.progress = where
            self.store.set_progress(job.id, where.as_json())
            if where.batch is not None:
                log.info("rolling out: %s", where.label, extra=job.log_extra())
            self.on_change()

        try:
            workdir = job.folders.tree
            self.store.set_workdir(job.id, workdir)
            self.git.export(repo, job.desired.commit, workdir)
            # Built once by CI for this tree, the same files in every environment (plain data, names checked).
            artifacts = self.tools.artifacts(repo.name, job.desired.tree)
            run = playbook_run(
                repo.name,
                env,
                self.marker(job.id),
                job.id,
                job.desired,
                job.previous_commit,
                job.kind,
                workdir,
                job.folders.root / "run",
                artifacts,
            )
            attempt = execute(env, run, job.kind, self.tools, item.cancel, progress, job.folders)
            detail, reason = attempt.detail(), attempt.reason
            detail["artifacts"] = {name: a["sha256"] for name, a in artifacts.items()}  # history --json shows them
            if attempt.ok:
                result = Result.SUCCEEDED
                if env.watch is not None and job.kind == Kind.DEPLOY and env.watch.http:
                    watch_hosts = self.watch.hosts(env, run, job, item.cancel)
            elif attempt.canceled:
                result = Result.CANCELED
                if item.superseded_by is not None:
                    reason = f"superseded by the newer head {item.superseded_by[:7]}: {reason}"
                    detail["superseded_by"] = item.superseded_by
            permanent = attempt.permanent  # e.g. invalid content: retrying the same tree cannot help
        except StalledError as exc:
            reason, permanent = str(exc), True
        except TransientError as exc:  # a failed attempt, retried with the environment's backoff
            reason = str(exc)
        except Exception as exc:  # an unexpected error is a failed attempt, never a dead worker
            log.exception("deployment crashed", extra=job.log_extra())
            reason = f"internal error: {exc}"
        # Only with the result recorded (the caller then clears `_running`) may a look start the next one here.
        self._record(repo, env, job, result, reason, permanent, detail, time.monotonic() - started, watch_hosts)
        return result

    def _record(
        self,
        repo: Repository,
        env: Environment,
        job: DeploymentJob,
        result: Result,
        reason: str,
        permanent: bool,
        detail: dict[str, object],
        took: float,
        watch_hosts: tuple[HostInfo, ...] = (),
    ) -> None:
        now = self.clock()
        self.store.finish(job.id, result, now=now, outcome=reason or None, detail=detail)
        try:
            self.on_finished(job, result)
        except Exception:  # the record is what counts; a failed side note must not undo it
            log.exception("after the deployment's record", extra=job.log_extra())
        if result == Result.FAILED or job.kind == Kind.ROLLBACK:
            self.notify(
                env.notify,
                {
                    "event": f"{job.kind}-{result}" if job.kind == Kind.ROLLBACK else "deploy-failed",
                    "repo": repo.name,
                    "env": env.name,
                    "commit": job.desired.commit,
                    "tree": job.desired.tree,
                    "kind": job.kind,
                    "result": result,
                    "deployment": job.id,
                    "outcome": reason,
                    "previous_commit": job.previous_commit,
                },
            )
        if result == Result.SUCCEEDED:
            self.store.clear_failure(repo.name, env.name)
            log.info("deployment %s in %.1fs: %s", result, took, reason, extra=job.log_extra())
            if env.watch is not None and job.kind == Kind.DEPLOY:
                self.watch.begin(repo, env, job, watch_hosts, now)
        elif result == Result.CANCELED:
            log.warning(
                "deployment canceled after %.1fs; %s stays on %s",
                took,
                env.name,
                (job.previous_commit or "nothing")[:7],
                extra=job.log_extra(),
            )
        else:
            self._failed(repo, env, job, reason, permanent, now, took)

    def _failed(
        self, repo: Repository, env: Environment, job: DeploymentJob, reason: str, permanent: bool, now: float, took: float
    ) -> None:
        desired, deployed, extra = job.desired, job.deployed, job.log_extra()
        good = deployed.commit[:7] if deployed else "nothing"
        if env.auto_rollback and job.kind != Kind.ROLLBACK and deployed is not None and not permanent:
            why = f"deployment #{job.id} of {desired.commit[:7]} failed: {reason}"
            revert, problem = self._revert(repo, env, desired, deployed.tree, why, now, job.id)
            if revert is None:
                self._rollback_failed(repo, env, job, reason, problem or "automatic rollback not made")
                return
            log.error(
                "deployment failed in %.1fs (%s); rolling %s back to %s with revert %s",
                took,
                reason,
                env.name,
                good,
                revert[:7],
                extra=extra,
            )
            return
        previous = self.store.failure(repo.name, env.name)
        failures = previous.failures + 1 if previous and previous.commit == desired.commit else 1
        stalled = permanent or failures > env.retries
        retry_at = None if stalled else now + backoff(env, failures, self.rng)
        self.store.record_failure(repo.name, env.name, FailureStatus(desired.commit, failures, retry_at, stalled, reason))
        if stalled:
            log.error(
                "deployment failed in %.1fs: %s; stalled after %d attempt%s, %s stays on %s until the branch "
                "moves or `gitopsd retry %s`",
                took,
                reason,
                failures,
                "s" if failures != 1 else "",
                env.name,
                good,
                env.name,
                extra=extra,
            )
        else:
            assert retry_at is not None
            log.warning(
                "deployment failed in %.1fs: %s; retry %d of %d in %.0fs",
                took,
                reason,
                failures,
                env.retries,
                retry_at - now,
                extra=extra,
            )
            self.schedule(Look(repo.name, env.name, Trigger.RETRY), retry_at)

    def _revert(
        self, repo: Repository, env: Environment, bad: Head, good_tree: str, why: str, now: float, deployment_id: int
    ) -> tuple[str | None, str | None]:
        """The automatic rollback (after a failed deployment or a failed watch): mark `bad`'s tree bad here, commit
        `good_tree` on `bad` through the git port, then reject the tree here and later (gate/rejections.py).
        Return (the revert commit, None), or (None, why not)."""
        self.store.mark_bad_tree(repo.name, env.name, bad.tree, why, now)
        try:
            revert = self.git.revert(repo, env.branch, bad.commit, good_tree, reason=why)
        except Exception as exc:  # e.g. the repository is not writable by the daemon, or git failed
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            return None, f"automatic rollback failed: cannot write the revert to {repo.path}: {first}"
        if revert is None:
            return None, (
                f"automatic rollback not made: {env.branch} moved away from {bad.commit[:7]} "
                f"meanwhile, and its new head is deployed instead"
            )
        self.remember_cause(repo.name, revert, Cause("gitopsd", Trigger.AUTO_ROLLBACK, f"automatic rollback: {why}"))
        # Rejected only once rolled back: a head whose rollback failed stays 'failed' (a person acts), not 'blocked'.
        self._reject(repo, env, bad, deployment_id, why, now)
        return revert, None

    def _reject(self, repo: Repository, env: Environment, bad: Head, deployment_id: int, why: str, now: float) -> None:
        """Record `bad`'s tree rejected for `env` and every later environment: promotions refuse it from now on."""
        self.store.add_rejection(
            repo=repo.name,
            tree=bad.tree,
            env=env.name,
            kind="reject",
            deployment_id=deployment_id,
            commit=bad.commit,
            actor="gitopsd",
            reason=why,
            now=now,
        )
        log.warning(
            "tree %s is rejected for %s and every later environment (deployment #%d); a person in "
            "override_by may lift it: gitopsd release unreject %s --env %s --reason '...'",
            bad.tree[:7],
            env.name,
            deployment_id,
            bad.tree[:7],
            env.name,
            extra={"repo": repo.name, "env": env.name},
        )

    def _rollback_failed(self, repo: Repository, env: Environment, job: DeploymentJob, reason: str, problem: str) -> None:
        """A failed deployment whose automatic rollback failed too: a person must act; make sure one hears of it."""
        desired = job.desired
        previous = self.store.failure(repo.name, env.name)
        failures = previous.failures + 1 if previous and previous.commit == desired.commit else 1
        self.store.record_failure(repo.name, env.name, FailureStatus(desired.commit, failures, None, True, problem, failed=True))
        log.error(
            "deployment failed (%s) and %s; %s may run a half-deployed %s: fix that, then `gitopsd rollback %s` or push a fix",
            reason,
            problem,
            env.name,
            desired.commit[:7],
            env.name,
            extra=job.log_extra(),
        )
        self.notify(
            env.notify,
            {
                "event": "rollback-failed",
                "repo": repo.name,
                "env": env.name,
                "commit": desired.commit,
                "tree": desired.tree,
                "deployment": job.id,
                "outcome": reason,
                "reason": problem,
                "previous_commit": job.previous_commit,
            },
        )

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

    def _check_run(self, repo: Repository, env: Environment, deployed: Deployment, cancel: threading.Event) -> RunOutcome:
        """Drift detection's run: the deployed tree, exported afresh, its playbook in check mode with diff."""
        extra = {"repo": repo.name, "env": env.name, "commit": deployed.commit[:7], "deployment": deployed.id}
        folder = DeploymentFolders.of(self.config.state_dir, deployed.id).root / "drift"
        shutil.rmtree(folder, ignore_errors=True)  # the newest check's files only
        try:
            workdir = folder / "tree"
            self.git.export(repo, deployed.commit, workdir)
            artifacts = self.tools.artifacts(repo.name, deployed.tree)
            run = playbook_run(
                repo.name,
                env,
                self.marker(deployed.id) + "-drift",
                deployed.id,
                Head(deployed.commit, deployed.tree),
                deployed.previous_commit,
                deployed.kind,
                workdir,
                folder / "run",
                artifacts,
                check_mode=True,
            )
            return self.tools.run_playbook(run, cancel)
        except Exception as exc:  # an export or a run that cannot start says nothing about the hosts
            log.warning("drift check could not run: %s", exc, extra=extra)
            return RunOutcome(False, "failed", None, str(exc))
        finally:
            shutil.rmtree(folder / "tree", ignore_errors=True)

    def _prune(self) -> None:
        """Delete exported trees of old deployments; their output and events stay for `gitopsd logs`."""
        for deployment_id, workdir in self.store.old_workdirs(self.config.keep_workdirs):
            shutil.rmtree(workdir, ignore_errors=True)
            self.store.clear_workdir(deployment_id)


def blocked_reason(verdict: Verdict) -> str:
    """A refused verdict in one line: its rule, then its detail."""
    return " ".join([verdict.rule + ":", *verdict.detail]) if verdict.detail else verdict.rule
