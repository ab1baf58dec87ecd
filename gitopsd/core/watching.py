"""The post-deploy watch: after a successful deployment, the environment's `watch:` checks keep running for a while.

Rounds are scheduled as looks and run on the background workers; the window is in the store, so a restart
resumes it. A breach rolls back as a failed deployment does (through the reconciler's revert), or, without
automatic rollback, rejects the tree. The reconciler drives it: it begins a watch after a deployment, ends it
when another deployment begins, and hands it the rounds that fall due. Its ports are below; it imports no adapter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from .deployment import Toolbox, url_variables
from .errors import TransientError
from .ports import Notifier
from .settings import Environment, Repository
from .types import CheckResult, Deployment, DeploymentJob, Head, HostInfo, PlaybookRun, Trigger, WatchWindow

log = logging.getLogger("gitopsd.reconciler")

TRANSIENT_RETRY = 5.0  # seconds before looking again after a TransientError (the sweep is the slower safety net)


class WatchStore(Protocol):
    """The store as the watch uses it: its windows, and which deployment runs now."""

    def deployed(self, repo: str, env: str) -> Deployment | None: ...
    def watch(self, repo: str, env: str) -> WatchWindow | None: ...
    def start_watch(self, watch: WatchWindow) -> None: ...
    def active_watches(self) -> list[WatchWindow]: ...
    def end_watch(self, repo: str, env: str, deployment_id: int, state: str, reason: str, now: float) -> bool: ...
    def watch_checked(self, repo: str, env: str, deployment_id: int, now: float) -> None: ...


class Revert(Protocol):
    """The reconciler's automatic rollback: return (the revert commit, None), or (None, why not)."""

    def __call__(
        self, repo: Repository, env: Environment, bad: Head, good_tree: str, why: str, now: float, deployment_id: int, /
    ) -> tuple[str | None, str | None]: ...


class Reject(Protocol):
    """The reconciler's rejection of a tree for an environment and every later one."""

    def __call__(self, repo: Repository, env: Environment, bad: Head, deployment_id: int, why: str, now: float, /) -> None: ...


LookLater = Callable[[str, str, str, float], None]  # (repo, env, trigger, when): ask for a look then


class PostDeployWatch:
    """Runs each environment's post-deploy watch: its rounds of checks, its end, its breach."""

    def __init__(
        self,
        store: WatchStore,
        *,
        tools: Callable[[], Toolbox],
        revert: Revert,
        reject: Reject,
        notify: Notifier,
        look_later: LookLater,
        background: Callable[[Callable[[], None]], object],
        clock: Callable[[], float],
        on_change: Callable[[], None],
    ):
        self.store = store
        self.tools = tools  # read at each use: a reload hands the reconciler a new toolbox
        self.revert = revert
        self.reject = reject
        self.notify = notify
        self.look_later = look_later
        self.background = background
        self.clock = clock
        self.on_change = on_change
        self._rounds: set[tuple[str, str]] = set()  # watch rounds running
        self._lock = threading.Lock()

    def resume(self) -> None:
        """After a start: resume the watches the store says were running (their windows survive a restart)."""
        now = self.clock()
        for watch in self.store.active_watches():
            log.info(
                "resuming the watch of deployment #%d (%s)",
                watch.deployment_id,
                watch.left(now),
                extra={"repo": watch.repo, "env": watch.env, "commit": watch.commit[:7]},
            )
            self.look_later(watch.repo, watch.env, Trigger.WATCH_CHECK, now)

    def hosts(self, env: Environment, run: PlaybookRun, job: DeploymentJob, cancel: threading.Event) -> tuple[HostInfo, ...]:
        """The hosts the watch's HTTP checks go to, with the variables their URLs name, read once now."""
        assert env.watch is not None
        hosts_of = self.tools().hosts_of
        if hosts_of is None:
            return ()
        names = tuple(sorted({n for check in env.watch.http for n in url_variables(check.url)}))
        try:
            return tuple(hosts_of(replace(run, data_dir=job.folders.root / "watch" / "run"), names, cancel))
        except Exception as exc:  # the watch still runs its Prometheus checks; say why the HTTP ones cannot
            log.error("the watch cannot run its HTTP checks: cannot read the inventory: %s", exc, extra=job.log_extra())
            return ()

    def begin(self, repo: Repository, env: Environment, job: DeploymentJob, hosts: tuple[HostInfo, ...], now: float) -> None:
        """Start the watch of a deployment that succeeded, and schedule its first round."""
        assert env.watch is not None
        watch = WatchWindow(
            repo.name,
            env.name,
            job.id,
            job.desired.commit,
            job.desired.tree,
            job.deployed.tree if job.deployed else None,
            now,
            now + env.watch.duration,
            "watching",
            None,
            hosts,
        )
        self.store.start_watch(watch)
        log.info("watching for %s, checks every %gs", span(env.watch.duration), env.watch.interval, extra=job.log_extra())
        self.look_later(repo.name, env.name, Trigger.WATCH_CHECK, min(now + env.watch.interval, watch.until))

    def end(self, repo: Repository, env: Environment, why: str, now: float) -> None:
        """End a running watch of `env` (a new deployment began: it gets its own)."""
        watch = self.store.watch(repo.name, env.name)
        if watch is not None and watch.state == "watching":
            self.store.end_watch(repo.name, env.name, watch.deployment_id, "ended", why, now)

    def due(self, repo: Repository, env: Environment) -> None:
        """A watch round is due: run it on a background worker (one at a time per environment)."""
        key = (repo.name, env.name)
        with self._lock:
            if key in self._rounds:
                return
            self._rounds.add(key)

        def round_() -> None:
            try:
                self._round(repo, env)
            except TransientError as exc:
                log.warning("%s; the watch looks again in %gs", exc, TRANSIENT_RETRY, extra={"repo": repo.name, "env": env.name})
                self.look_later(repo.name, env.name, Trigger.WATCH_CHECK, self.clock() + TRANSIENT_RETRY)
            except Exception:
                log.exception("watch round failed", extra={"repo": repo.name, "env": env.name})
            finally:
                with self._lock:
                    self._rounds.discard(key)
                self.on_change()

        self.background(round_)

    def _round(self, repo: Repository, env: Environment) -> None:
        """One round of the watch's checks, or its end: passed when its time is over, breached at the first failure."""
        watch = self.store.watch(repo.name, env.name)
        now = self.clock()
        if watch is None or watch.state != "watching":
            return
        extra = {"repo": repo.name, "env": env.name, "commit": watch.commit[:7], "deployment": watch.deployment_id}
        deployed = self.store.deployed(repo.name, env.name)
        if deployed is None or deployed.id != watch.deployment_id:
            self.store.end_watch(repo.name, env.name, watch.deployment_id, "ended", "another deployment followed", now)
            return
        if env.watch is None:
            self.store.end_watch(repo.name, env.name, watch.deployment_id, "ended", "watch: left the configuration", now)
            return
        if now >= watch.until:
            last = watch.checked_at or watch.started_at
            if now - last > 2 * env.watch.interval + 30:  # the daemon was stopped through part of it
                why = f"the watch's time ran out while gitopsd was stopped (last checked {span(now - last)} before)"
                self.store.end_watch(repo.name, env.name, watch.deployment_id, "ended", why, now)
                log.warning("%s", why, extra=extra)
            else:
                self.store.end_watch(
                    repo.name,
                    env.name,
                    watch.deployment_id,
                    "passed",
                    f"no breach in {span(watch.until - watch.started_at)}",
                    now,
                )
                log.info("watch passed: no breach in %s", span(watch.until - watch.started_at), extra=extra)
            return
        breach = self._checks(env, watch, extra)
        if breach is None:
            self.store.watch_checked(repo.name, env.name, watch.deployment_id, self.clock())
            self.look_later(repo.name, env.name, Trigger.WATCH_CHECK, min(self.clock() + env.watch.interval, watch.until))
            return
        self._breached(repo, env, watch, breach, extra)

    def _checks(self, env: Environment, watch: WatchWindow, extra: dict[str, object]) -> CheckResult | None:
        """Run every watch check once (an inconclusive Prometheus answer is asked again up to its retries).

        Return the first breach: a failed check, or an inconclusive one unless `inconclusive: pass`.
        """
        assert env.watch is not None
        tools = self.tools()
        results: list[CheckResult] = []
        if tools.check_http is not None:
            results += [tools.check_http(check, host, watch.commit) for check in env.watch.http for host in watch.hosts]
        if tools.check_prometheus is not None:
            for prometheus in env.watch.prometheus:
                for attempt in range(prometheus.retries + 1):
                    result = tools.check_prometheus(prometheus, watch.commit, env.name)
                    if not result.inconclusive:
                        break
                    if attempt < prometheus.retries:
                        tools.sleep(1.0)
                if result.inconclusive:
                    result = replace(
                        result,
                        detail=f"{result.detail} (inconclusive after {prometheus.retries + 1} "
                        f"attempt{'s' if prometheus.retries else ''})",
                    )
                results.append(result)
        for result in results:
            if result.ok:
                continue
            if result.inconclusive and env.watch.inconclusive == "pass":
                log.warning("watch: %s: %s; ignored (inconclusive: pass)", result.name, result.detail, extra=extra)
                continue
            return result
        return None

    def _breached(
        self, repo: Repository, env: Environment, watch: WatchWindow, breach: CheckResult, extra: dict[str, object]
    ) -> None:
        """Roll back (with auto_rollback, as after a failed deployment), record the breach as the reason, notify."""
        now = self.clock()
        why = f"watch of deployment #{watch.deployment_id} ({watch.commit[:7]}) failed: {breach.name}: {breach.detail}"
        revert, problem = None, None
        if env.auto_rollback and watch.previous_tree is not None:
            revert, problem = self.revert(
                repo, env, Head(watch.commit, watch.tree), watch.previous_tree, why, now, watch.deployment_id
            )
        else:
            self.reject(repo, env, Head(watch.commit, watch.tree), watch.deployment_id, why, now)
            if env.auto_rollback:
                problem = "no automatic rollback: nothing ran here before this deployment"
        reason = why + (f"; rolling back with revert {revert[:7]}" if revert else f"; {problem}" if problem else "")
        if not self.store.end_watch(repo.name, env.name, watch.deployment_id, "breached", reason, now):
            return  # a new deployment ended it meanwhile
        log.error("%s", reason, extra=extra)
        self.notify(
            env.notify,
            {
                "event": "watch-failed",
                "repo": repo.name,
                "env": env.name,
                "commit": watch.commit,
                "tree": watch.tree,
                "deployment": watch.deployment_id,
                "check": breach.name,
                "detail": breach.detail,
                "inconclusive": breach.inconclusive,
                "reason": why,
                "rollback_commit": revert,
                "rollback_problem": problem,
            },
        )
        if revert:
            self.look_later(repo.name, env.name, Trigger.AUTO_ROLLBACK, now)


def span(seconds: float) -> str:
    """15m, 1h30m, 40s: a duration as the config writes it."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"
