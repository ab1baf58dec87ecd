"""One deployment on a worker: export the commit, run its playbook, record the result; retry, stall or roll back a failure.

A mixin of the Reconciler (core/reconcile.py), which starts the deployment and hands it to `submit`. A failure is retried
with capped, jittered backoff, then stalled; with automatic rollback, a revert commit goes on the branch and the tree is
rejected here and later. The check-mode run of drift detection (core/drifting.py) is exported and run here too.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable

from .deployment import Toolbox, execute, guarded_by, playbook_run
from .errors import StalledError, TransientError
from .judging import Judging
from .looks import Cause, Look, RunningDeployment, backoff
from .ports import GitPort
from .settings import Config, Environment, Repository
from .types import (
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
from .watching import PostDeployWatch

log = logging.getLogger("gitopsd.reconciler")


class Deploying(Judging):
    """The reconciler's deployments on the workers; the Reconciler sets these attributes (a reload replaces some)."""

    config: Config
    git: GitPort
    tools: Toolbox
    schedule: Callable[[Look, float], None]
    clock: Callable[[], float]
    rng: random.Random
    on_change: Callable[[], None]
    on_finished: Callable[[DeploymentJob, str], None]
    watch: PostDeployWatch
    _running: dict[tuple[str, str], RunningDeployment]
    _lock: threading.Lock
    _instance: str

    def marker(self, deployment_id: int) -> str:
        """The process marker of a deployment: unique across state folders sharing one machine."""
        return f"{self._instance}-{deployment_id}"

    # -- one deployment (runs on a worker) -----------------------------------------------------------
    def _deploy(self, repo: Repository, env: Environment, job: DeploymentJob, item: RunningDeployment) -> None:
        """One deployment on a worker. Nothing may end it silently: the pool would keep the exception to itself."""
        if item.cancel.is_set():  # the daemon is stopping (or an operator canceled it): a queued deployment never starts
            outcome = f"canceled by {item.canceled_by}" if item.canceled_by else "canceled before it started"
            self.store.finish(job.id, Result.CANCELED, now=self.clock(), outcome=outcome)
            if item.canceled_by:
                self._stall_canceled(repo, env, job, outcome)
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

    def _run_deployment(self, repo: Repository, env: Environment, job: DeploymentJob, item: RunningDeployment) -> Result:
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
                guarded=guarded_by(repo, env),
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
                elif item.canceled_by is not None:
                    reason = f"canceled by {item.canceled_by}" + (f" ({reason})" if reason not in ("", "canceled") else "")
            permanent = attempt.permanent  # e.g. invalid content: retrying the same tree cannot help
        except StalledError as exc:
            reason, permanent = str(exc), True
        except TransientError as exc:  # a failed attempt, retried with the environment's backoff
            reason = str(exc)
        except OSError as exc:  # out of open files, processes or disk: a failed attempt, said in one line
            log.error("deployment could not run: %s", exc, extra=job.log_extra())
            reason = f"could not run: {exc}"
        except Exception as exc:  # an unexpected error is a failed attempt, never a dead worker
            log.exception("deployment crashed", extra=job.log_extra())
            reason = f"internal error: {exc}"
        # Only with the result recorded (the caller then clears `_running`) may a look start the next one here.
        self._record(repo, env, job, result, reason, permanent, detail, time.monotonic() - started, watch_hosts)
        if result == Result.CANCELED and item.canceled_by is not None:
            self._stall_canceled(repo, env, job, reason)
        return result

    def _stall_canceled(self, repo: Repository, env: Environment, job: DeploymentJob, reason: str) -> None:
        """An operator canceled this deployment: the environment stalls on what ran before, as after a failure that
        retrying cannot help, instead of deploying the same head again at the next look."""
        good = job.deployed.commit[:7] if job.deployed else "nothing"
        why = f"{reason}; {env.name} stays on {good} until the branch moves or `gitopsd retry {env.name}`"
        self.store.record_failure(repo.name, env.name, FailureStatus(job.desired.commit, 1, None, True, why))
        log.warning("deployment %s", why, extra=job.log_extra())

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
        log.warning(  # in the words of the refusals (gate/policy.py rejection): who may lift it, and how
            "tree %s is rejected for %s and every later environment (deployment #%d); if it is safe after all, one of "
            "%s runs: gitopsd release unreject %s --env %s --reason '<why>'",
            bad.tree[:7],
            env.name,
            deployment_id,
            ", ".join(env.override_by) or f"nobody yet (add override_by: to {env.name} in the config)",
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

    # -- drift detection's check-mode run, and old work folders ------------------------------------------
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
                guarded=guarded_by(repo, env),
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
