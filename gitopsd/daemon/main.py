"""The daemon's start: `gitopsd run` (run), the state folder's lock, and the Daemon built from the config.

One main loop (loop.py) takes look requests from a queue (events.py: nudges, ref watcher, sweep, timers) and
hands them to the reconciler, which starts deployments on a bounded pool. The loop alone pings the systemd
watchdog, so a wedged loop stops the pings.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .. import config as config_mod
from ..adapters import backups, runner
from ..adapters.annotations import AnnotationSender
from ..adapters.notifications import notify
from ..adapters.store import Store
from ..adapters.systemd import Notifier
from ..ci.artifacts import ArtifactStore
from ..ci.heads import NewHeads
from ..ci.promote import AutoPromoter
from ..ci.steps import StepRunner
from ..ci.triggers import TriggerSender
from ..config import Config, ConfigError
from ..core.errors import StoreError
from ..core.reconcile import Look, Reconciler
from ..core.types import Trigger
from ..services import nodes
from ..services.changecontrol import ChangeControl
from ..services.chatroom import ChatRoom
from ..services.firstseen import FirstSeen
from ..services.previews import Previewer
from ..services.releases import HumanGates
from ..services.statusrows import StatusRows
from ..services.sweepplan import SweepPlan
from .loop import Loop
from .wiring import PolicyJudge, PygitPort, real_toolbox, sandbox_policy

if TYPE_CHECKING:
    from .leadership import Leadership

log = logging.getLogger("gitopsd.daemon")


class AlreadyRunning(Exception):
    pass


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the one-daemon-per-state-folder lock; hold the returned file for the daemon's life."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "daemon.lock", "a+", encoding="utf-8")  # noqa: SIM115 (held: the lock lives with it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise AlreadyRunning(f"another gitopsd is already running with the state folder {state_dir}") from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Daemon(Loop):
    """The daemon's parts, built from the config (each concern's class in its module: statedb, events, lifecycle, loop)."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        leadership: Leadership | None = None,
        state_lock: IO[str] | None = None,
    ):
        self.config = config
        self.notifier = notifier or Notifier()
        self.leadership = leadership  # with PostgreSQL: this daemon leads (gitopsd/daemon/leadership.py)
        self._lost_said = False
        runner.scrub_environment()
        # SimpleQueue: its put() is reentrant, so the signal handlers may wake the loop even when the signal lands
        # while the main thread is inside a get() (Queue's lock would deadlock the daemon there).
        self.requests = queue.SimpleQueue()
        self.timers = []
        self._timer_seq = 0
        self._timer_lock = threading.Lock()
        self._status_looks = set()
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self._lock_handle = state_lock or lock_state_dir(config.state_dir)
        self.store = Store.of(config, epoch=leadership.epoch if leadership is not None else None)
        self.pool = ThreadPoolExecutor(max_workers=config.max_parallel, thread_name_prefix="deploy")
        # Post-deploy watch rounds and drift checks: never waiting behind (or holding up) deployments.
        self.monitor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="monitor")
        judge = PolicyJudge(lambda: self.reconciler.config, self.store)
        self.placement = nodes.Placement(config.execution_nodes, config.known_hosts)  # kept across reloads
        self.reconciler = Reconciler(
            config,
            self.store,
            PygitPort(),
            real_toolbox(config, self.placement),
            submit=self.pool.submit,
            schedule=self.schedule,
            on_change=self._status,
            judge=judge,
            notify=notify,
            background=self.monitor.submit,
        )
        self.promoter = AutoPromoter(self.store, self.store, judge.gate_config, announce=self._auto_promoted)
        self.chat = ChatRoom(lambda: self.config, self.control_request, config.state_dir / "matrix-since")
        self.human_gates = HumanGates(
            lambda: self.config,
            self.store,
            self._notify_people,
            on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)),
        )
        self.change_control = ChangeControl(
            lambda: self.config,
            self.store,
            notify,
            on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)),
            look_at=lambda repo, at: self.schedule(Look(repo, None, Trigger.CLI), at),
        )
        # Promotion previews (previews.py): threads of their own, one per target environment; never a deployment.
        self.previewer = Previewer(
            lambda: self.config,
            self.store,
            export=self.reconciler.git.export,
            run=lambda run, cancel, on_event: runner.run_playbook(run, cancel, sandbox_policy(self.config), on_event),
            artifacts=lambda repo, tree: self.reconciler.tools.artifacts(repo, tree),
            secrets=lambda run, cancel: runner.vault_values(run, cancel, sandbox_policy(self.config)),
            marker=self.reconciler.marker,
            notify=notify,
            on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)),
        )
        self.human_gates.on_rc_created = self.previewer.for_rc
        self.reconciler.on_finished = self._deployment_finished
        # DORA lead time: when commits first reached the server, and which deployment brought them where.
        self.first_seen = FirstSeen(
            self.store, lambda repo, commit: cause.trigger if (cause := self.reconciler.causes.get((repo, commit))) else None
        )
        self.annotations = AnnotationSender()  # Grafana, on its own thread (config `grafana:`)
        self.control = None
        # `status --json` asked on the control socket: rows kept while nothing moved (issue 28), read with a store of its own.
        self.status_rows = StatusRows(lambda: self.config, lambda: Store.of(self.config, readonly=True))
        self.sweep_plan = SweepPlan(lambda: Store.of(self.config, readonly=True))  # what each sweep looks at (issue 28)
        self._adopting = 0
        self._unwatched_recorded = None  # environments the startup sweep found to deploy, until all are done
        self.listener = None
        self.judge = None  # the judge socket: pushes judged here for the hook's shim (daemon/judge.py)
        self._nudge_lock = threading.Lock()  # nudges heard from the socket and from judged pushes, one at a time
        self.watcher = None
        self.sweeper = None
        self.drift_timer = None  # each environment's `drift:` checks, jittered
        self.api = None  # the HTTP API (docs/api.md), when configured
        self.metrics = None  # its /metrics (docs/monitoring.md), read from the store when scraped
        if config.api is not None:
            from ..services.metrics import Metrics

            self.metrics = Metrics(
                lambda: self.config, Store.of(config, readonly=True), role=leadership.role if leadership is not None else None
            )
        # CI: each look at a repository finds the new heads of its CI branches and hands each to every sink
        # (the CI servers to trigger, the built-in steps). A sink queues its work: it never blocks the loop.
        self.ci_heads = NewHeads(self.store, self._pusher_of)
        self.ci_sinks = []
        self.ci_triggers = TriggerSender()  # webhooks to the CI servers of `ci.trigger`, sent on its own thread
        self.ci_triggers.start()
        self.ci_sinks.append(self.ci_triggers.sink)
        # The built-in steps, on their own workers; each status they report makes the loop look again (auto-promotion).
        self.ci_steps = StepRunner(
            config,
            self.store,
            ArtifactStore(config.artifacts_dir),
            policy=lambda: sandbox_policy(self.config),
            on_status=self.status_reported,
        )
        self.ci_sinks.append(self.ci_steps.sink)
        self.store_lost = None  # why the state database file is not the one opened (check_store)
        self._store_lost_lock = threading.Lock()
        # A copy each `backup.interval`, the first once started unless the newest is younger than that: a restart
        # made a 500 MB copy every time, most of the CPU after READY at 1,000 repositories (issue 28).
        newest = backups.newest_scheduled(config.backup_dir)
        self._next_backup = newest + config.backup.interval if newest is not None else 0.0


# The daemon's signals. `gitopsd run` blocks them before it imports this module (cli.cmd_run).
STARTUP_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def continue_deployment_ids(store: Store, state_dir: Path) -> None:
    """Never reuse a deployment id: each names a folder in state_dir/deployments/, which outlives a lost store."""
    folder = state_dir / "deployments"
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    next_id = store.continue_ids_after(max(ids)) if ids else None
    if next_id is not None:
        log.warning(
            "%s is new or was reset: %d earlier deployment folder%s found in %s; deployment ids continue "
            "from %d; every environment is deployed again as it converges",
            store.path,
            len(ids),
            "" if len(ids) == 1 else "s",
            folder,
            next_id,
        )


def wait_for_database(cfg: Config, early: list[int], notifier: Notifier | None = None) -> bool:
    """Wait until PostgreSQL can be reached (not READY meanwhile: STATUS says why); False if stopped while waiting.

    Any other problem with the database (a refused user, a schema from a newer gitopsd) returns True at once:
    opening the store again in Daemon() then refuses to start with its line.
    """
    from ..core.errors import TransientError

    notifier = notifier or Notifier()
    delay = 1.0
    while True:
        try:
            Store.of(cfg).close()  # also upgrades the schema (adapters/store/schema.py)
            return True
        except StoreError as exc:
            if not isinstance(exc, TransientError):
                return True
            log.error("cannot start yet: %s Next try in %.0f s.", exc, delay)
            notifier.status(f"waiting for the database: {exc}")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in early):
                log.info("stopped while waiting for the database")
                return False
            time.sleep(0.2)
        delay = min(delay * 2, 30.0)


def _config_now(cfg: Config) -> Config:
    """The configuration file as it is now (a standby may have waited for days); the one read at start if it broke."""
    try:
        new = config_mod.load(cfg.source, writable_folders=True)
    except ConfigError as exc:
        log.error(
            "the configuration changed while this gitopsd was the standby and has problems; leading with the "
            "one read at start:\n%s",
            exc,
        )
        return cfg
    if (new.state_dir, new.runtime_dir) != (cfg.state_dir, cfg.runtime_dir):  # its lock is held on the first
        log.error(
            "state_dir and runtime_dir changed while this gitopsd was the standby; they change only with a "
            "restart: leading with the configuration read at start"
        )
        return cfg
    return new


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one: each API connection, run and database takes some."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # a seccomp filter or a hard limit of "unlimited": keep what we have
            log.debug("open files limit stays at %d: %s", soft, exc)


def run(config_path: Path) -> int:
    """Load and validate the config (refusing to start on any problem), then run until SIGTERM."""
    # SIGHUP's default action ends the process, and starting takes a while (config, store, triggers):
    # until the daemon's handlers exist, signals are only kept, then acted on (install_signal_handlers).
    early: list[int] = []
    for signum in STARTUP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: early.append(signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTUP_SIGNALS)
    raise_open_files_limit()
    try:
        cfg = config_mod.load(config_path, writable_folders=True)  # the daemon writes there
    except ConfigError as exc:
        log.error(
            "refusing to start: the configuration has %d problem%s:\n%s",
            len(exc.problems),
            "" if len(exc.problems) == 1 else "s",
            exc,
        )
        return 2
    if cfg.database_url and not wait_for_database(cfg, early):
        return 0  # stopped while waiting: nothing was started
    notifier = Notifier()
    leadership = None
    try:
        state_lock = lock_state_dir(cfg.state_dir)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    if cfg.database_url:  # a standby may share the database: lead, or wait as the standby (docs/install.md, "Standby daemon")
        from .leadership import Leadership

        leadership = Leadership(cfg)
        if not leadership.wait_for_lead(cfg, early, notifier):
            return 0
        cfg = _config_now(cfg)
    try:
        daemon = Daemon(cfg, notifier, leadership, state_lock)
        continue_deployment_ids(daemon.store, cfg.state_dir)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    except StoreError as exc:  # its line says which file and what to do
        log.error("refusing to start: %s", exc)
        log.debug("the error in full:", exc_info=True)
        return 1
    except OSError as exc:
        from ..base.storeerrors import explain

        log.error("refusing to start: %s", explain(str(cfg.database), exc))
        log.debug("the error in full:", exc_info=True)
        return 1
    daemon.install_signal_handlers(early)
    return daemon.run()
