"""The looks the main loop takes: the queue's markers, the nudge listener, the ref watcher, the sweep, timers."""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..adapters.listener import Listener
from ..adapters.sweep import Periodic, Sweeper
from ..adapters.watch import RefWatcher
from ..core.errors import StoreError
from ..core.reconcile import Cause, Look
from ..core.types import Trigger
from ..core.words import plural
from ..gate.nudge import REFUSED, Nudge
from .judge import Judge
from .statedb import StateDb

log = logging.getLogger("gitopsd.daemon")

WAKE = Look("", None, Trigger.WAKE)
# What the signal handlers put in the loop's queue: they take no lock (a handler runs in the main thread, which may
# hold an Event's lock at that moment); the loop then sets `stopping` or `reload_requested` itself.
STOP = Look("", None, "signal-stop")
HUP = Look("", None, "signal-reload")
WATCH_DELAY = 0.01  # seconds: one look for the burst of events a ref update makes
# The pre-receive hook's nudge arrives just before the ref moves. The ref watcher sees the move;
# these looks after the nudge (seconds) find it too where inotify cannot (network file systems).
PUSH_FOLLOW_UP = (0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
# Seconds a stored CI status waits for the others a CI reports with it: one look for them all. A look each cost
# 4 ms of CPU per status (its git processes), and looks running beside the API were its slowest answers: at 200
# statuses a second, p99 23-65 ms with a look each 0.1 s, 15-16 ms with none (docs/benchmarks.md, (g)).
STATUS_LOOK_DELAY = 0.5


def _mtime(path: Path) -> float:
    """When a ref file last changed (0 when there is none: a packed or missing ref)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class Intake(StateDb):
    """What puts looks in the queue: the triggers started and stopped with each config, and the pushes they record."""

    def schedule(self, look: Look, at: float) -> None:
        with self._timer_lock:
            self._timer_seq += 1
            heapq.heappush(self.timers, (at, self._timer_seq, look))
        self.requests.put(WAKE)

    def status_reported(self, repo: str) -> None:
        """A CI status for `repo` was stored: look at it shortly, once for every status stored until that look starts."""
        with self._timer_lock:
            if repo in self._status_looks:
                return
            self._status_looks.add(repo)
        self.schedule(Look(repo, None, "ci-status"), time.time() + STATUS_LOOK_DELAY)

    def sweep(self, trigger: str = Trigger.SWEEP, newest_first: bool = False) -> None:
        """Look at every repository; `newest_first`: the most recently moved branches first (adoption after a stop)."""
        if not self.check_store():
            return
        self._record_unwatched()
        # The periodic sweep: not the repositories where nothing can have moved (issue 28); the others look at all.
        repos = self.sweep_plan.choose(self.config, self.reconciler.settled, everything=trigger != Trigger.SWEEP)
        log.debug("sweep: %d of %s (the others unmoved)", len(repos), plural(len(self.config.repositories), "repository"))
        if newest_first:
            repos.sort(
                key=lambda r: (
                    max((_mtime(r.path / "refs" / "heads" / e.branch) for e in r.environments), default=0.0)
                    or _mtime(r.path / "packed-refs")
                ),
                reverse=True,
            )
        for repo in repos:
            self.requests.put(Look(repo.name, None, trigger))

    def _record_unwatched(self) -> None:
        """Tell `gitopsd status` which repositories only the nudge and the sweep look at (when that changes)."""
        unwatched = self.watcher.unwatched if self.watcher is not None else {}
        if unwatched != self._unwatched_recorded:
            try:
                self.store.set_unwatched(unwatched)
                self._unwatched_recorded = unwatched
            except StoreError as exc:
                log.warning("could not record the unwatched repositories for `gitopsd status`: %s", exc)

    def _on_ref_change(self, repo: str) -> None:
        self.schedule(Look(repo, None, Trigger.WATCH), time.time() + WATCH_DELAY)

    def _listen(self, listener: Listener) -> None:
        while not (self.stopping.is_set() or listener.closed):
            nudge = listener.receive()
            if nudge is not None:
                self.heard(nudge)

    def heard(self, nudge: Nudge) -> None:
        """A nudge from the socket, or from the gate when this daemon judged the push (daemon/judge.py)."""
        with self._nudge_lock:
            self._heard(nudge)

    def _heard(self, nudge: Nudge) -> None:
        repo = self.config.repository_at(Path(nudge.repo))
        if repo is None:
            log.warning("nudge for unknown repository %s ignored", nudge.repo)
            return
        if nudge.trigger == REFUSED:  # the hook refused a push: counted for /metrics, nothing to look at
            for env, rule in nudge.refusals:
                if self.metrics is not None:
                    self.metrics.refused(repo.name, env, rule)
                if rule == "approvals":  # a promotion waiting for approvals: approvers see a preview (issue 25)
                    self.previewer.for_promotion(repo.name, env, nudge.who())
            return
        if nudge.commits:  # the commits arrive now: their first-seen time (recorded on the next look)
            self.first_seen.noted(repo.name, nudge.trigger, time.time())
        if nudge.trigger == Trigger.BRANCH_PUSH:  # main or a feature branch: who pushed it, for CI and approvals
            self._record_pushes(repo.name, nudge)
            now = time.time()
            for delay in PUSH_FOLLOW_UP[:6]:  # the refs move right after the hook: CI looks for the new heads
                self.schedule(Look(repo.name, None, Trigger.BRANCH_PUSH), now + delay)
            return
        if nudge.trigger == Trigger.PUSH:  # who delivered these commits (self-approval looks it up)
            self._record_pushes(repo.name, nudge)
        for commit in nudge.commits:
            self.reconciler.remember_cause(
                repo.name, commit, Cause(nudge.who(), nudge.trigger, nudge.reason, proven=self._from_hook(repo.path, nudge))
            )
            # A sweep or a `git update-ref` may have started this commit's deployment before the nudge came.
            try:
                self.store.attribute(repo.name, commit, nudge.who(), nudge.trigger, nudge.reason, since=time.time() - 120)
            except StoreError as exc:  # the listener goes on: a lost store is said once (check_store)
                log.warning("could not record who pushed %s: %s", commit[:7], exc, extra={"repo": repo.name})
        self.requests.put(Look(repo.name, None, nudge.trigger))
        if nudge.trigger == Trigger.PUSH:  # sent by pre-receive: the refs move right after it
            now = time.time()
            for delay in PUSH_FOLLOW_UP:
                self.schedule(Look(repo.name, None, Trigger.PUSH), now + delay)

    def _start_triggers(self) -> None:
        cfg = self.config
        # Each trigger alone converges; GITOPSD_TRIGGERS narrows them down for tests and debugging.
        enabled = set(os.environ.get("GITOPSD_TRIGGERS", "nudge,watch,sweep").split(","))
        if "nudge" in enabled:
            self.listener = Listener(cfg.nudge_socket)
            threading.Thread(target=self._listen, args=(self.listener,), name="nudge", daemon=True).start()
            try:  # the shim's pushes, judged here without a Python of their own
                self.judge = Judge(cfg, self.heard)
            except OSError as exc:  # the hooks' Python judges them then, as when the daemon is down
                log.warning(
                    "the judge socket %s cannot be opened (%s): each push starts its hook's Python", cfg.judge_socket, exc
                )
        if "watch" in enabled:
            self.watcher = RefWatcher({r.name: r.path for r in cfg.repositories}, self._on_ref_change)
            self.watcher.start()
        if "sweep" in enabled:
            self.sweeper = Sweeper(cfg.sweep_interval, self.sweep)
            self.sweeper.start()
        drifting = [(r.name, e.name, e.drift.interval) for r in cfg.repositories for e in r.environments if e.drift]
        if drifting:
            self.drift_timer = Periodic()
            for repo_name, env_name, interval in drifting:
                self.drift_timer.every(f"drift {repo_name} {env_name}", interval, self._drift_look(repo_name, env_name))
            self.drift_timer.start()

    def _drift_look(self, repo: str, env: str) -> Callable[[], None]:
        """What the drift timer does for one environment: ask the main loop for a drift check there."""
        return lambda: self.requests.put(Look(repo, env, Trigger.DRIFT_CHECK))

    def _stop_triggers(self) -> None:
        for part in (self.sweeper, self.watcher, self.drift_timer):
            if part is not None:
                part.stop()
        if self.listener is not None:
            self.listener.close()
        if self.judge is not None:
            self.judge.close()
        self.sweeper = self.watcher = self.listener = self.drift_timer = self.judge = None

    @staticmethod
    def _from_hook(repo: Path, nudge: Nudge) -> bool:
        """Whether a nudge may say its head was judged with the deploy windows: only the hook says so, and the kernel
        proves the sender is the account pushes arrive as (the repository's owner), root or the daemon itself. Any
        other member of the daemon's group can send a datagram that claims `push`; its head meets the windows here."""
        try:
            owner = repo.stat().st_uid
        except OSError:
            owner = None
        return nudge.sender_uid is not None and nudge.sender_uid in (0, os.geteuid(), owner)

    def _record_pushes(self, repo: str, nudge: Nudge) -> None:
        who = nudge.who()
        try:
            for commit in nudge.commits:
                self.store.record_push(repo, "", commit, who, time.time())
        except StoreError as exc:
            log.warning("could not record who pushed %s: %s", ", ".join(c[:7] for c in nudge.commits), exc, extra={"repo": repo})

    def _pusher_of(self, repo: str, commit: str) -> str | None:
        try:
            pushers = sorted(self.store.pushers(repo, [commit]))
        except StoreError:
            pushers = []
        if pushers:
            return ", ".join(pushers)
        cause = self.reconciler.causes.get((repo, commit))
        return cause.actor if cause is not None else None
