"""The daemon's life: recovery after a crash, STATUS= for systemd, reload on SIGHUP, signals, losing the lead, stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from .. import config as config_mod
from ..adapters import runner
from ..config import ConfigError
from ..core.errors import GitError, StoreError
from ..core.types import Trigger
from ..core.words import plural
from ..gate import snapshot
from ..installers import install_hooks
from ..services import nodes
from .events import HUP, STOP, WAKE, Intake
from .wiring import real_toolbox

log = logging.getLogger("gitopsd.daemon")


class Lifecycle(Intake):
    """Recover, reload, step down and shut down; the hook's view of the config is refreshed with each start."""

    def _status(self) -> None:
        running, queued = self.reconciler.running_commits(), self.reconciler.queued()
        if running or queued:
            text = ", ".join(
                f"deploying {env} {commit[:7]}"
                + (f" ({progress.label})" if progress is not None and progress.batch is not None else "")
                for (_repo, env), (commit, progress) in sorted(running.items())
            )
            text += f"{', ' if text else ''}{queued} queued" if queued else ""
            if self._adopting:  # the first convergence after start: how far it got
                text = f"adopting: {self._adopting - len(running) - queued} of {plural(self._adopting, 'environment')}; {text}"
        else:
            self._adopting = 0
            n = sum(len(r.environments) for r in self.config.repositories)
            text = f"watching {n} environment{'s' if n != 1 else ''}"
        if self.leadership is not None:
            text = f"leader (epoch {self.leadership.epoch}): {text}"
        self.notifier.status(text)

    # -- life cycle ------------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash: mark runs left `running` as interrupted and make sure none of their processes live."""
        for dep in self.store.mark_interrupted(time.time()):
            killed = runner.reap(self.reconciler.marker(dep.id))
            # and on the execution node it ran on: the worker and its children outlive a killed daemon's ssh
            self.placement.reap(self.reconciler.marker(dep.id), nodes.placement_of(self.config, dep.repo, dep.env))
            log.warning(
                "deployment was interrupted by a daemon stop; %d leftover process%s reaped",
                killed,
                "" if killed == 1 else "es",
                extra={"repo": dep.repo, "env": dep.env, "commit": dep.commit[:7], "deployment": dep.id},
            )
            repo, ended = self.config.repository(dep.repo), self.store.get(dep.id)
            if repo is not None and ended is not None:
                self.human_gates.audit_deployment(repo, ended)
        self.ci_steps.recover()  # built-in CI runs too: reaped, and their pending statuses ended with `error`

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config.source, writable_folders=True)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            self._status()
            self.notifier.send("READY=1")
            return
        if (new.state_dir, new.runtime_dir) != (self.config.state_dir, self.config.runtime_dir):
            log.error("reload refused: state_dir and runtime_dir can only change with a restart")
            self.notifier.send("READY=1")
            return
        self._stop_triggers()
        self.config = new
        self.reconciler.config = new
        self.placement.configure(new.execution_nodes, new.known_hosts)
        self.reconciler.tools = real_toolbox(new, self.placement)  # the sandbox hides the new config's repositories too
        self._save_gate()
        self._refresh_hooks()
        self._start_triggers()
        log.info("configuration reloaded from %s: %s", new.source, plural(len(new.repositories), "repository"))
        self.sweep(Trigger.RELOAD)
        self._status()
        self.notifier.send("READY=1")

    def install_signal_handlers(self, early: list[int] | None = None) -> None:
        """SIGTERM and SIGINT stop, SIGHUP reloads; then act on the signals `early` kept while the daemon started."""

        def stop(signum: int, _frame: FrameType | None) -> None:
            self.requests.put(STOP)

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.requests.put(HUP)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)
        for signum in sorted(set(early or ())):
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                log.info("%s came while gitopsd was starting: the configuration is read again once it runs", name)
                hup(signum, None)
            else:
                log.info("%s came while gitopsd was starting: it stops once started", name)
                stop(signum, None)

    def _save_gate(self) -> None:
        """Give the pre-receive hook the configuration this daemon enforces, without YAML (see gate/snapshot.py)."""
        try:
            self.store.save_gate(snapshot.from_config(self.config))
        except StoreError as exc:  # the hook then reads the config file: slower, same rule
            log.warning("could not save the configuration snapshot for the hook: %s", exc)

    def _refresh_hooks(self) -> None:
        """Point each repository's hook at this config and database: `state_dir` may have changed since install-hooks."""
        for repo in self.config.repositories:
            changed, problem = install_hooks.refresh_settings(
                repo.path, self.config.source, self.config.database, self.config, repo
            )
            if problem:
                log.warning("%s", problem, extra={"repo": repo.name})
            elif changed:
                log.info("hook settings updated: %s", ", ".join(changed), extra={"repo": repo.name})
        # This daemon's git reads $HOME/.gitconfig: the safe.directory entries install-hooks added there
        # for repositories that left this config go with them.
        listed = {os.path.realpath(repo.path) for repo in self.config.repositories}
        try:
            removed = install_hooks.tidy_safe_directories(Path.home(), self.config.source, listed)
        except (GitError, OSError) as exc:
            log.warning("could not remove safe.directory entries of repositories no longer configured: %s", exc)
        else:
            if removed:
                log.info("safe.directory entries removed (not in the config any more): %s", ", ".join(removed))

    def _lost_the_lead(self) -> None:
        """From the lease's threads: start nothing more and stop the runs now (the main loop may be waiting on a
        database that does not answer), then let the main loop step down, or exit if it cannot within a while."""
        from .leadership import EXIT_LOST, STEP_DOWN_WITHIN

        assert self.leadership is not None
        self._say_lost(self.leadership.why_lost, len(self.reconciler.running()))
        self._stop_runs()
        self.requests.put(WAKE)

        def exit_if_stuck() -> None:
            time.sleep(STEP_DOWN_WITHIN)
            self._stop_runs()
            log.error(
                "this gitopsd could not stop within %.0f s (the database does not answer): exiting now; its runs were stopped",
                STEP_DOWN_WITHIN,
            )
            logging.shutdown()
            os._exit(EXIT_LOST)

        threading.Thread(target=exit_if_stuck, name="step-down", daemon=True).start()

    def _stop_runs(self) -> None:
        """Start nothing more; cancel every run and reap its processes here at once (the new leader runs them)."""
        self.reconciler.accepting = False
        self.reconciler.cancel_all()
        for dep_id in self.reconciler.running().values():
            runner.reap(self.reconciler.marker(dep_id), grace=1.0)

    def _say_lost(self, why: str, running: int) -> None:
        if self._lost_said:
            return
        self._lost_said = True
        log.error(
            "this gitopsd no longer leads (epoch %s): %s. Canceling %d running deployment(s) and stopping; "
            "started again (systemd restarts it), it waits as the standby",
            self.leadership.epoch if self.leadership else "-",
            why,
            running,
        )

    def step_down(self) -> int:
        """Another daemon leads now: cancel what runs here at once (it is the leader's to run), stop, exit EXIT_LOST."""
        from .leadership import EXIT_LOST

        assert self.leadership is not None
        why = self.leadership.why_lost or "the database refused this daemon's deployment record: another gitopsd leads"
        self._say_lost(why, len(self.reconciler.running()))
        self._stop_runs()
        self.shutdown(grace=0.0)
        return EXIT_LOST

    def shutdown(self, grace: float | None = None) -> int:
        """Start nothing new; let running deployments finish within the grace time, then cancel them."""
        self.reconciler.accepting = False
        self.reconciler.cancel_checks()
        running = self.reconciler.running()
        grace = self.config.stop_grace if grace is None else grace
        self.notifier.stopping(f"stopping; waiting for {plural(len(running), 'deployment')}" if running else "stopping")
        log.info("stopping%s", f"; waiting up to {grace:g}s for {plural(len(running), 'running deployment')}" if running else "")
        deadline = time.monotonic() + grace
        while self.reconciler.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.reconciler.running():
            log.warning("grace time over: canceling %d running deployment(s)", len(self.reconciler.running()))
            self.reconciler.cancel_all()
        self.pool.shutdown(wait=True)
        # Each run reaped its own processes as it ended; the daemon exits only once none of any run is left.
        for dep_id in running.values():
            left = runner.reap(self.reconciler.marker(dep_id))
            if left:
                log.warning("deployment #%d: %d process%s left after it ended, reaped", dep_id, left, "" if left == 1 else "es")
        self.previewer.stop()
        self.monitor.shutdown(wait=True, cancel_futures=True)
        self.ci_triggers.stop()
        self.annotations.stop()
        self.ci_steps.stop()
        self._stop_triggers()
        if self.api is not None:  # before the store it writes to closes
            self.api.stop()
        if self.control is not None:
            self.control.close()
        self.chat.stop()
        # The readers first, then the writer: the last connection to close folds the write-ahead log into state.db
        # and removes it, so readers after the stop (the hook's Python, `history`) have no log to recover.
        self.status_rows.close()
        self.sweep_plan.close()
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()
        if self.leadership is not None:  # last: a standby takes over once nothing runs here
            self.leadership.close()
        log.info("stopped")
        self._lock_handle.close()
        return 0
