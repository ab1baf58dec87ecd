"""Drift detection as an engine: `drift:` runs the deployed tree in check mode on a schedule, and says what changed.

Never beside a deployment of that environment: the reconciler hands it a due check only when none runs, and
cancels a running check when the branch moves (drift of what runs then no longer matters). core/drift.py
judges each run against the deployment's baseline; this records the report, tells people once per new set of
drifted tasks, and asks the reconciler for a heal (kind heal) with a backoff when heals in a row do not hold.
The check-mode run itself (export, playbook, Ansible) is the reconciler's, through the `run_check` port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .drift import heal_delay, judge_drift
from .ports import Notifier
from .settings import Environment, Repository
from .types import Deployment, DriftReport, Head, Kind, RunOutcome
from .watching import LookLater, span

log = logging.getLogger("gitopsd.reconciler")

AFTER_CHECK = "after-check"  # the look after a drift check: a head that waited for it, or a heal it asked for


class DriftStore(Protocol):
    """The store as drift detection uses it: the deployed deployment, its reports, the heals before it."""

    def deployed(self, repo: str, env: str) -> Deployment | None: ...
    def drift_baseline(self, repo: str, env: str, deployment_id: int) -> DriftReport | None: ...
    def drift_report(self, repo: str, env: str, deployment_id: int | None = None) -> DriftReport | None: ...
    def add_drift_report(self, report: DriftReport) -> int: ...
    def history(self, *, repo: str | None = None, env: str | None = None, limit: int = 20) -> list[Deployment]: ...


class RunCheck(Protocol):
    """Run the deployed deployment's tree in check mode with diff (the reconciler exports it and runs the playbook).

    Never raises: a run that cannot start is a failed outcome, which says nothing about the hosts.
    """

    def __call__(self, repo: Repository, env: Environment, deployed: Deployment, cancel: threading.Event, /) -> RunOutcome: ...


class DriftDetection:
    """Runs each environment's drift checks in the background and remembers the heals they ask for."""

    def __init__(
        self,
        store: DriftStore,
        *,
        head: Callable[[Repository, Environment], Head | None],
        run_check: RunCheck,
        notify: Notifier,
        look_later: LookLater,
        background: Callable[[Callable[[], None]], object],
        clock: Callable[[], float],
        on_change: Callable[[], None],
    ):
        self.store = store
        self.head = head
        self.run_check = run_check
        self.notify = notify
        self.look_later = look_later
        self.background = background
        self.clock = clock
        self.on_change = on_change
        self._checking: dict[tuple[str, str], threading.Event] = {}  # drift checks running (cancel when a head moves)
        self._heal: dict[tuple[str, str], tuple[int, str]] = {}  # heals asked for: deployed id and why
        self._lock = threading.Lock()

    def checking(self, repo: str, env: str) -> bool:
        """Whether a drift check of the environment runs now (the environment is busy)."""
        with self._lock:
            return (repo, env) in self._checking

    def cancel(self, repo: str, env: str) -> None:
        """Stop the environment's running check, if any: a new head is due, deploy it soon."""
        with self._lock:
            check = self._checking.get((repo, env))
        if check is not None:
            check.set()

    def cancel_all(self) -> None:
        """Stop every running check (the daemon stops): a check has nothing to finish."""
        with self._lock:
            for check in self._checking.values():
                check.set()

    def heal_asked(self, repo: str, env: str, deployed: Deployment | None) -> str | None:
        """Why a heal of the deployed deployment was asked for, or None; a heal of what no longer runs is forgotten."""
        heal = self._heal.get((repo, env))
        if heal is not None and (deployed is None or heal[0] != deployed.id):
            self._heal.pop((repo, env), None)
            return None
        return heal[1] if heal is not None else None

    def healing(self, repo: str, env: str) -> None:
        """The heal asked for is starting: forget it."""
        self._heal.pop((repo, env), None)

    def due(self, repo: Repository, env: Environment) -> None:
        """A drift check is due (and no deployment of `env` runs): run it in the background unless one runs."""
        key = (repo.name, env.name)
        if env.drift is None:
            return
        with self._lock:
            if key in self._checking:
                return
            cancel = self._checking[key] = threading.Event()

        def check() -> None:
            try:
                self._check(repo, env, cancel)
            except Exception:
                log.exception("drift check failed", extra={"repo": repo.name, "env": env.name})
            finally:
                with self._lock:
                    self._checking.pop(key, None)
                self.on_change()
                self.look_later(repo.name, env.name, AFTER_CHECK, self.clock())  # a head that waited, a heal

        self.background(check)

    def _check(self, repo: Repository, env: Environment, cancel: threading.Event) -> None:
        """Run the deployed tree's playbook in check mode with diff, judge it against the baseline, record, tell."""
        assert env.drift is not None
        deployed = self.store.deployed(repo.name, env.name)
        desired = self.head(repo, env)
        if deployed is None or desired is None or desired.commit != deployed.commit:
            return  # nothing deployed, or a deployment is due: its own baseline check follows it
        extra = {"repo": repo.name, "env": env.name, "commit": deployed.commit[:7], "deployment": deployed.id}
        started = time.monotonic()
        outcome = self.run_check(repo, env, deployed, cancel)
        if cancel.is_set():
            log.info("drift check canceled", extra=extra)
            return
        baseline = self.store.drift_baseline(repo.name, env.name, deployed.id)
        previous = self.store.drift_report(repo.name, env.name, deployed.id)
        report = judge_drift(repo.name, env.name, deployed.id, outcome, baseline, self.clock())
        self.store.add_drift_report(report)
        took = time.monotonic() - started
        if report.state == "unknown":
            log.warning("drift unknown after %.1fs: %s", took, report.reason, extra=extra)
        elif report.state != "drifted":
            log.info("drift check %s in %.1fs%s", report.state, took, f": {report.reason}" if report.reason else "", extra=extra)
        else:
            log.warning("drift detected in %.1fs: %s", took, report.reason, extra=extra)
            said = (
                previous is not None
                and previous.state == "drifted"
                and {(c.host, c.key) for c in previous.changes} == {(c.host, c.key) for c in report.changes}
            )
            if not said:  # once per new set of drifted tasks, not every interval
                self.notify(
                    env.notify,
                    {
                        "event": "drift-detected",
                        "repo": repo.name,
                        "env": env.name,
                        "commit": deployed.commit,
                        "tree": deployed.tree,
                        "deployment": deployed.id,
                        "hosts": report.hosts,
                        "reason": report.reason,
                        "tasks": [{"host": c.host, "task": c.task} for c in report.changes],
                    },
                )
            if env.drift.heal:
                self._ask_heal(repo, env, deployed, report, extra)

    def _ask_heal(
        self, repo: Repository, env: Environment, deployed: Deployment, report: DriftReport, extra: dict[str, object]
    ) -> None:
        """Ask the next look to re-apply the deployed tree (kind heal), unless heals in a row back off."""
        assert env.drift is not None
        heals = 0
        last_heal: Deployment | None = None
        for d in self.store.history(repo=repo.name, env=env.name, limit=20):
            if d.kind != Kind.HEAL:
                break
            heals += 1
            last_heal = last_heal or d
        wait = heal_delay(env.drift.interval, heals)
        if last_heal is not None and (last_heal.finished_at or 0) + wait > self.clock():
            log.warning(
                "not healing yet: %d heal%s in a row did not hold; the next may start in %s",
                heals,
                "s" if heals != 1 else "",
                span((last_heal.finished_at or 0) + wait - self.clock()),
                extra=extra,
            )
            return
        self._heal[(repo.name, env.name)] = (deployed.id, f"heal: {report.reason}")
