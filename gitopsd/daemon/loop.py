"""The main loop: start, then take each look from the queue to the reconciler, CI and the human gates until stopped."""

from __future__ import annotations

import errno
import gc
import heapq
import logging
import queue
import resource
import time

from .. import config as config_mod
from ..adapters import backups, logs
from ..core.errors import StoreError
from ..core.reconcile import Cause, Look
from ..core.types import DeploymentJob, Trigger
from ..core.words import plural
from .events import HUP, STOP, WAKE
from .lifecycle import Lifecycle
from .serving import Serving

log = logging.getLogger("gitopsd.daemon")
deployments_log = logging.getLogger("gitopsd.deployment")  # one summary event per deployment's end

# Looks that never follow a branch move: no walk for new commits (firstseen.py) then.
NO_NEW_COMMITS = frozenset({Trigger.AFTER_DEPLOY, Trigger.RETRY, "ci-status"})
IDLE_WAKE = 60.0  # seconds the loop waits at most when nothing is due


class Loop(Lifecycle, Serving):
    """The one thread that hands looks to the reconciler and pings the systemd watchdog."""

    def run(self) -> int:
        backups.replaced_marker(self.config.runtime_dir).unlink(missing_ok=True)  # a stopped daemon's: said and done
        self.recover()
        self.reconciler.resume()  # post-deploy watches a stop interrupted
        self._save_gate()
        self._refresh_hooks()
        self._start_triggers()
        n_envs = sum(len(r.environments) for r in self.config.repositories)
        log.info(
            "gitopsd started: %s, %s, state in %s, nudges on %s",
            plural(len(self.config.repositories), "repository"),
            plural(n_envs, "environment"),
            self.config.state_dir,
            self.config.nudge_socket,
        )
        # The API listens before the first sweep: that sweep sends CI triggers, and a CI server reports "pending"
        # back at once (a status refused then is lost to it).
        self._start_api()
        self.sweep(Trigger.STARTUP, newest_first=True)
        self._drain()  # the first sweep: every environment looked at before READY
        self._start_control()
        self.chat.start()  # approvals from the chat room: a thread of its own (docs/human-gates.md)
        self._adopting = len(self.reconciler.running())  # started or queued by it: STATUS= counts them down
        self.notifier.ready(f"watching {plural(n_envs, 'environment')}")
        # What the start built (the configuration, the repositories' state) stays; full collections no longer scan
        # it: at 1,000 repositories each took 0.1-0.3 s, in the middle of whatever request was then served (issue 28).
        gc.freeze()
        self._status()
        if self.leadership is not None:
            self.leadership.watch(on_lost=self._lost_the_lead)
        last_ping = 0.0
        while not self.stopping.is_set():
            if self.leadership is not None and (self.leadership.lost.is_set() or self.store.fenced.is_set()):
                return self.step_down()
            interval = self.notifier.watchdog_interval
            if interval and time.monotonic() - last_ping >= interval:
                self.notifier.watchdog()
                last_ping = time.monotonic()
            # Wake for the next ping when it is due, not a whole interval after the last request; otherwise only for
            # what is due (timers, the scheduled copy): stops, reloads and looks arrive in the queue. Losing the lead
            # is polled. Waking every second cost about 0.1 % of a core at 1,000 repositories (issue 28).
            next_ping = last_ping + interval - time.monotonic() if interval else IDLE_WAKE
            polled = 1.0 if self.leadership is not None else IDLE_WAKE
            timeout = min(next_ping, polled, self._next_timer_in(), self._backup_in())
            try:
                request = self.requests.get(timeout=max(0.0, timeout))
            except queue.Empty:
                request = WAKE
            try:
                self._handle(request)
                if self.reload_requested.is_set() and not self.stopping.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self._fire_due_timers()
                self._backup_if_due()
            except OSError as exc:  # out of open files or processes, a full disk: this look is lost, the daemon goes on
                self._out_of_resources(exc)
        return self.shutdown()

    def _out_of_resources(self, exc: OSError) -> None:
        """One error line for a look the system could not serve; the next sweep or push looks again."""
        fix = ""
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            fix = f"; this daemon may open {soft} files: raise LimitNOFILE= in its systemd unit (docs/operate.md)"
        log.error(
            "a look could not be made and is left to the next sweep: %s%s", exc, fix, exc_info=log.isEnabledFor(logging.DEBUG)
        )

    def _deployment_finished(self, job: DeploymentJob, result: str) -> None:
        """A deployment ended: its summary event in the log, its annotation in Grafana and its line in the audit
        trail (git notes), whatever the result; a successful one's new commits are recorded (DORA)."""
        self.check_store()  # the note below is written all the same: `gitopsd db rebuild` reads it
        try:
            deployment = self.store.get(job.id)
        except StoreError:
            return
        if deployment is None:
            return
        logs.deployment_ended(deployments_log, deployment)
        if self.config.grafana is not None:
            self.annotations.send(self.config.grafana, deployment)
        repo = self.config.repository(job.repo)
        if repo is None:
            return
        if result == "succeeded":
            self.first_seen.deployed(str(repo.path), deployment, deployment.previous_commit)
        self.human_gates.audit_deployment(repo, deployment)

    def _drain(self) -> None:
        while True:
            try:
                self._handle(self.requests.get_nowait())
            except queue.Empty:
                return

    def _handle(self, request: Look) -> None:
        if request.trigger == "ci-status":  # a status stored from now on needs a look after this one
            with self._timer_lock:
                self._status_looks.discard(request.repo)
        if request is STOP:
            self.stopping.set()
            return
        if request is HUP:
            self.reload_requested.set()
            return
        if request is WAKE or self.stopping.is_set() or not self.check_store():
            return
        if self.config.freeze_on:  # freezes whose alert was not sent again in time: recorded as expired
            try:
                self.change_control.expire()
            except StoreError as exc:
                log.warning("could not record the expired alert freezes: %s", exc)
        self.reconciler.look(request)
        repo = self.config.repository(request.repo)
        if repo is not None and request.trigger not in NO_NEW_COMMITS:
            self.first_seen.walk(repo.name, str(repo.path))
        if repo is not None and self.ci_sinks:
            self._ci_look(repo)
        if repo is not None and any(e.approvals and e.approvals.expire_after for e in repo.environments):
            try:
                self.human_gates.tell_expired(repo)
            except StoreError as exc:
                log.warning("could not look for expired approvals: %s", exc, extra={"repo": repo.name})
        if repo is not None and self.reconciler.accepting and any(e.auto_promote for e in repo.environments):
            try:
                if self.promoter.look(repo):
                    self.requests.put(Look(repo.name, None, Trigger.AUTO_PROMOTE))
            except (StoreError, OSError) as exc:
                log.warning("automatic promotion could not look: %s", exc, extra={"repo": repo.name})

    def _auto_promoted(self, repo: str, commit: str, reason: str) -> None:
        """The promoter made `commit`: its deployment is recorded as the daemon's own, triggered by auto-promote."""
        self.reconciler.remember_cause(repo, commit, Cause("gitopsd", Trigger.AUTO_PROMOTE, reason))

    def _ci_look(self, repo: config_mod.Repository) -> None:
        """Hand each new head of the repository's CI branches to the CI sinks."""
        try:
            events = self.ci_heads.changes(repo)
        except StoreError as exc:
            log.warning("could not read or record the CI heads: %s", exc, extra={"repo": repo.name})
            return
        for event in events:
            log.info(
                "new head of %s: %s (pushed by %s)",
                event.branch,
                event.after[:7],
                event.pusher,
                extra={"repo": repo.name, "commit": event.after[:7]},
            )
            for sink in self.ci_sinks:
                try:
                    sink(repo, event)
                except Exception:  # one sink's bug must not stop the others, nor the daemon
                    log.exception(
                        "CI could not take the new head %s of %s", event.after[:7], event.branch, extra={"repo": repo.name}
                    )

    def _next_timer_in(self) -> float:
        with self._timer_lock:
            return self.timers[0][0] - time.time() if self.timers else 3600.0

    def _fire_due_timers(self) -> None:
        now = time.time()
        due = []
        with self._timer_lock:
            while self.timers and self.timers[0][0] <= now:
                due.append(heapq.heappop(self.timers)[2])
        for look in due:
            self._handle(look)
