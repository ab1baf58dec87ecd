"""The daemon: wires the reconciler to its triggers, threads, signals and systemd.

One main loop takes look requests from a queue (nudges, ref watcher, sweep, timers) and hands
them to the reconciler, which starts deployments on a bounded pool. The loop alone pings the
systemd watchdog, so a wedged loop stops the pings.
"""
from __future__ import annotations

import fcntl
import heapq
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Callable

from .. import config as config_mod
from ..gate import snapshot
from ..installers import install_hooks
from ..services import nodes
from ..gate import policy
from ..gate.nudge import REFUSED, Nudge
from ..adapters import backups, runner
from ..adapters import sandbox
from ..config import Config, ConfigError
from ..core.deployment import Toolbox
from ..core.errors import MISSING, GitError, Refused, StoreError, refusal_answer
from ..core.ports import Verdict
from ..core.reconcile import Cause, Look, Reconciler
from ..core.settings import HttpCheck, PrometheusCheck, SandboxPolicy
from ..core.types import CheckResult, Deployment, DeploymentFolders, Head, HostInfo, PlaybookRun, RunOutcome, Trigger
from ..adapters.gitrepo import GitRepository
from ..adapters.listener import Listener
from ..adapters.notifications import notify
from ..services.revert import make_revert
from ..adapters.systemd import Notifier
from ..adapters.store import Store
from ..adapters.sweep import Periodic, Sweeper
from ..adapters.watch import RefWatcher
from ..ci import provenance
from ..ci.artifacts import ArtifactStore
from ..ci import rerun
from ..ci.heads import HeadEvent, NewHeads, matches
from ..ci.steps import StepRunner
from ..ci.triggers import TriggerSender, safe_url
from ..ci.promote import AutoPromoter
from ..adapters.control import ControlServer
from ..services.changecontrol import OPS as CHANGE_CONTROL_OPS, ChangeControl
from ..core.types import DeploymentJob
from ..services.releases import HumanGates
from ..services.chatroom import ChatRoom
from ..services.previews import Previewer
from ..adapters import logs
from ..adapters.annotations import AnnotationSender
from ..services.firstseen import FirstSeen

if TYPE_CHECKING:
    from ..api.server import ApiServer
    from .leadership import Leadership
    from ..services.metrics import Metrics

log = logging.getLogger("gitopsd.daemon")
deployments_log = logging.getLogger("gitopsd.deployment")   # one summary event per deployment's end

_WAKE = Look("", None, Trigger.WAKE)
# What the signal handlers put in the loop's queue: they take no lock (a handler runs in the main thread, which may
# hold an Event's lock at that moment); the loop then sets `stopping` or `reload_requested` itself.
_STOP = Look("", None, "signal-stop")
_HUP = Look("", None, "signal-reload")
# Looks that never follow a branch move: no walk for new commits (firstseen.py) then.
NO_NEW_COMMITS = frozenset({Trigger.AFTER_DEPLOY, Trigger.RETRY, "ci-status"})
WATCH_DELAY = 0.01  # seconds: one look for the burst of events a ref update makes
# The pre-receive hook's nudge arrives just before the ref moves. The ref watcher sees the move;
# these looks after the nudge (seconds) find it too where inotify cannot (network file systems).
PUSH_FOLLOW_UP = (0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class PygitPort:
    """The reconciler's view of Git, over pygit2."""

    def head(self, repo: config_mod.Repository, branch: str) -> Head | None:
        return GitRepository(repo.path).head(branch)

    def export(self, repo: config_mod.Repository, commit: str, dest: Path) -> None:
        GitRepository(repo.path).export(commit, dest)

    def revert(self, repo: config_mod.Repository, branch: str, head: str, good_tree: str, *, reason: str) -> str | None:
        """The automatic rollback's revert commit, written and moved through the git CLI (revert.py)."""
        return make_revert(repo.path, branch, head, good_tree, requested_by="gitopsd", reason=reason, automatic=True)


class PolicyJudge:
    """`policy.judge`, as the hook runs it, over this daemon's store and Git (through the git CLI)."""

    def __init__(self, config: Callable[[], Config], store: Store):
        self.config, self.store = config, store
        self._gate: tuple[Config, snapshot.GateConfig] | None = None

    def gate_config(self) -> snapshot.GateConfig:
        """The gate's view of the running configuration (rebuilt after a reload)."""
        config = self.config()
        gate = self._gate
        if gate is None or gate[0] is not config:
            gate = self._gate = (config, snapshot.from_config(config))
        return gate[1]

    def __call__(self, repo: config_mod.Repository, env: config_mod.Environment, desired: Head,
                 deployed: Deployment | None, check_windows: bool) -> Verdict:
        view = self.gate_config().repository(repo.name)
        gate_env = view.environment(env.name) if view else None
        if view is None or gate_env is None:
            return policy.refuse("other", "the configuration changed meanwhile", [f"{repo.name}/{env.name} is not configured"], [])
        return policy.judge(view, str(repo.path), self.store, gate_env, deployed.commit if deployed else None,
                            desired.commit, identity="gitopsd", check_windows=check_windows)


def sandbox_policy(config: Config) -> SandboxPolicy:
    """What playbook runs and inventory reads may see: the config's sandbox, with gitopsd's own paths hidden."""
    return sandbox.for_config(config)


def real_toolbox(config: Config, placement: nodes.Placement | None = None) -> Toolbox:
    """Ansible (in the sandbox, or on an execution node), its inventory parser (in the sandbox) and the checks, for real."""
    from ..adapters import checks
    sandboxed = sandbox_policy(config)
    placement = placement or nodes.Placement(config.execution_nodes, config.known_hosts)

    def run_playbook(run: PlaybookRun, cancel: threading.Event) -> RunOutcome:
        return placement.run(run, cancel, nodes.placed(config, run), sandboxed,
                             lambda: runner.run_playbook(run, cancel, sandboxed))

    def hosts_of(run: PlaybookRun, names: tuple[str, ...], cancel: threading.Event) -> list[HostInfo]:
        return runner.read_hosts(run.inventory, names, workdir=run.workdir,
                                 data_dir=DeploymentFolders(run.data_dir.parent).inventory,
                                 marker=run.marker, timeout=run.timeout, cancel=cancel, policy=sandboxed)

    def http(check: HttpCheck, host: HostInfo, commit: str) -> CheckResult:
        try:
            return checks.run_http(check, host, commit)
        except checks.CheckError as exc:   # e.g. the URL names a variable the host does not have
            return CheckResult(False, f"http {host.name}", str(exc))

    def prometheus(check: PrometheusCheck, commit: str, env: str) -> CheckResult:
        try:
            return checks.run_prometheus(check, commit, env)
        except checks.CheckError as exc:
            return CheckResult(False, "prometheus", str(exc))

    return Toolbox(run_playbook=run_playbook, hosts_of=hosts_of, check_http=http, check_prometheus=prometheus,
                   artifacts=ArtifactStore(config.artifacts_dir).for_deployment,
                   provenance=lambda repo, tree: provenance.refusal(config, repo, tree))


def _mtime(path: Path) -> float:
    """When a ref file last changed (0 when there is none: a packed or missing ref)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class AlreadyRunning(Exception):
    pass


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the one-daemon-per-state-folder lock; hold the returned file for the daemon's life."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "daemon.lock", "a+", encoding="utf-8")
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


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None, leadership: Leadership | None = None,
                 state_lock: IO[str] | None = None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.leadership = leadership   # with PostgreSQL: this daemon leads (gitopsd/daemon/leadership.py)
        self._lost_said = False
        runner.scrub_environment()
        # SimpleQueue: its put() is reentrant, so the signal handlers may wake the loop even when the signal lands
        # while the main thread is inside a get() (Queue's lock would deadlock the daemon there).
        self.requests: queue.SimpleQueue[Look] = queue.SimpleQueue()
        self.timers: list[tuple[float, int, Look]] = []
        self._timer_seq = 0
        self._timer_lock = threading.Lock()
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self._lock_handle = state_lock or lock_state_dir(config.state_dir)
        self.store = Store.of(config, epoch=leadership.epoch if leadership is not None else None)
        self.pool = ThreadPoolExecutor(max_workers=config.max_parallel, thread_name_prefix="deploy")
        # Post-deploy watch rounds and drift checks: never waiting behind (or holding up) deployments.
        self.monitor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="monitor")
        judge = PolicyJudge(lambda: self.reconciler.config, self.store)
        self.placement = nodes.Placement(config.execution_nodes, config.known_hosts)   # kept across reloads
        self.reconciler = Reconciler(config, self.store, PygitPort(), real_toolbox(config, self.placement),
                                     submit=self.pool.submit, schedule=self.schedule, on_change=self._status,
                                     judge=judge, notify=notify, background=self.monitor.submit)
        self.promoter = AutoPromoter(self.store, self.store, judge.gate_config, announce=self._auto_promoted)
        self.chat = ChatRoom(lambda: self.config, self.control_request, config.state_dir / "matrix-since")
        self.human_gates = HumanGates(lambda: self.config, self.store, self._notify_people,
                                      on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)))
        self.change_control = ChangeControl(lambda: self.config, self.store, notify,
                                            on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)),
                                            look_at=lambda repo, at: self.schedule(Look(repo, None, Trigger.CLI), at))
        # Promotion previews (previews.py): threads of their own, one per target environment; never a deployment.
        self.previewer = Previewer(
            lambda: self.config, self.store, export=self.reconciler.git.export,
            run=lambda run, cancel, on_event: runner.run_playbook(run, cancel, sandbox_policy(self.config), on_event),
            artifacts=lambda repo, tree: self.reconciler.tools.artifacts(repo, tree),
            secrets=lambda run, cancel: runner.vault_values(run, cancel, sandbox_policy(self.config)),
            marker=self.reconciler.marker, notify=notify,
            on_change=lambda repo: self.requests.put(Look(repo, None, Trigger.CLI)))
        self.human_gates.on_rc_created = self.previewer.for_rc
        self.reconciler.on_finished = self._deployment_finished
        # DORA lead time: when commits first reached the server, and which deployment brought them where.
        self.first_seen = FirstSeen(self.store, lambda repo, commit: (
            cause.trigger if (cause := self.reconciler.causes.get((repo, commit))) else None))
        self.annotations = AnnotationSender()   # Grafana, on its own thread (config `grafana:`)
        self.control: ControlServer | None = None
        self._adopting = 0
        self._unwatched_recorded: dict[str, str] | None = None   # environments the startup sweep found to deploy, until all are done
        self.listener: Listener | None = None
        self.watcher: RefWatcher | None = None
        self.sweeper: Sweeper | None = None
        self.drift_timer: Periodic | None = None   # each environment's `drift:` checks, jittered
        self.api: ApiServer | None = None   # the HTTP API (docs/api.md), when configured
        self.metrics: Metrics | None = None   # its /metrics (docs/monitoring.md), read from the store when scraped
        if config.api is not None:
            from ..services.metrics import Metrics
            self.metrics = Metrics(lambda: self.config, Store.of(config, readonly=True),
                                   role=leadership.role if leadership is not None else None)
        # CI: each look at a repository finds the new heads of its CI branches and hands each to every sink
        # (the CI servers to trigger, the built-in steps). A sink queues its work: it never blocks the loop.
        self.ci_heads = NewHeads(self.store, self._pusher_of)
        self.ci_sinks: list[Callable[[config_mod.Repository, HeadEvent], None]] = []
        self.ci_triggers = TriggerSender()   # webhooks to the CI servers of `ci.trigger`, sent on its own thread
        self.ci_triggers.start()
        self.ci_sinks.append(self.ci_triggers.sink)
        # The built-in steps, on their own workers; each status they report makes the loop look again (auto-promotion).
        self.ci_steps = StepRunner(config, self.store, ArtifactStore(config.artifacts_dir),
                                   policy=lambda: sandbox_policy(self.config),
                                   on_status=lambda repo: self.requests.put(Look(repo, None, "ci-status")))
        self.ci_sinks.append(self.ci_steps.sink)
        self.store_lost: str | None = None   # why the state database file is not the one opened (check_store)
        self._store_lost_lock = threading.Lock()
        self._next_backup = 0.0   # the first copy once started, then one each `backup.interval`

    # -- the state database's file ---------------------------------------------------------------
    def check_store(self) -> bool:
        """Is the SQLite file still the one this daemon opened? If not: start no deployment, say so once, keep a copy.

        Each sweep, each look and each deployment's end ask (one os.stat). A deleted or replaced state.db would
        be recreated empty by the next opener: this daemon keeps its records in the file it still holds, and
        writes what it has into backups/ so a restore brings them back."""
        if self.store_lost is not None:
            return False
        reason = self.store.replaced()
        if reason is None:
            return True
        with self._store_lost_lock:   # the loop and a deployment's end may find it at once: said once
            if self.store_lost is not None:
                return False
            self.store_lost = reason
        self.reconciler.accepting = False
        self.store.let_go(reason)   # first: no other thread writes meanwhile into the log a new file would read
        copy = None
        try:
            copy = backups.scheduled(self.store, self.config.backup_dir, self.config.backup.keep, time.time(),
                                     prefix=backups.RESCUED)
            rescued = f"; the records this daemon still held are in {copy}"
        except (OSError, StoreError, sqlite3.Error) as exc:
            rescued = f"; its records could not be copied ({exc})"
        line = f"{reason}: no deployment starts until it is restored{rescued}"
        log.error("%s; %s", line, backups.what_to_do(self.config.backup_dir, copy))
        try:
            backups.say_replaced(self.config.runtime_dir, line)
        except OSError as exc:
            log.warning("could not tell `gitopsd status` (%s): %s", backups.replaced_marker(self.config.runtime_dir), exc)
        if self.metrics is not None:
            self.metrics.store_replaced = True
        return False

    def _backup_if_due(self) -> None:
        """The scheduled copy of the SQLite store (`backup:`), on a monitor worker: never holding up the loop."""
        now = time.time()
        if now < self._next_backup or self.store.backend != "sqlite" or self.store_lost is not None:
            return
        self._next_backup = now + self.config.backup.interval

        def copy() -> None:
            try:
                target = backups.scheduled(self.store, self.config.backup_dir, self.config.backup.keep, now)
                log.info("state database copied to %s", target)
            except (OSError, StoreError, sqlite3.Error) as exc:
                log.error("could not copy the state database to %s: %s; check that the daemon's user can write "
                          "there (config `backup.dir`)", self.config.backup_dir, exc)
        self.monitor.submit(copy)

    # -- triggers --------------------------------------------------------------------------------
    def schedule(self, look: Look, at: float) -> None:
        with self._timer_lock:
            self._timer_seq += 1
            heapq.heappush(self.timers, (at, self._timer_seq, look))
        self.requests.put(_WAKE)

    def sweep(self, trigger: str = Trigger.SWEEP, newest_first: bool = False) -> None:
        """Look at every repository; `newest_first`: the most recently moved branches first (adoption after a stop)."""
        if not self.check_store():
            return
        self._record_unwatched()
        repos = list(self.config.repositories)
        if newest_first:
            repos.sort(key=lambda r: max((_mtime(r.path / "refs" / "heads" / e.branch) for e in r.environments),
                                         default=0.0) or _mtime(r.path / "packed-refs"), reverse=True)
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
            if nudge is None:
                continue
            repo = self.config.repository_at(Path(nudge.repo))
            if repo is None:
                log.warning("nudge for unknown repository %s ignored", nudge.repo)
                continue
            if nudge.trigger == REFUSED:   # the hook refused a push: counted for /metrics, nothing to look at
                for env, rule in nudge.refusals:
                    if self.metrics is not None:
                        self.metrics.refused(repo.name, env, rule)
                    if rule == "approvals":   # a promotion waiting for approvals: approvers see a preview (issue 25)
                        self.previewer.for_promotion(repo.name, env, nudge.who())
                continue
            if nudge.commits:   # the commits arrive now: their first-seen time (recorded on the next look)
                self.first_seen.noted(repo.name, nudge.trigger, time.time())
            if nudge.trigger == Trigger.BRANCH_PUSH:   # main or a feature branch: who pushed it, for CI and approvals
                self._record_pushes(repo.name, nudge)
                now = time.time()
                for delay in PUSH_FOLLOW_UP[:6]:   # the refs move right after the hook: CI looks for the new heads
                    self.schedule(Look(repo.name, None, Trigger.BRANCH_PUSH), now + delay)
                continue
            if nudge.trigger == Trigger.PUSH:   # who delivered these commits (self-approval looks it up)
                self._record_pushes(repo.name, nudge)
            for commit in nudge.commits:
                self.reconciler.remember_cause(repo.name, commit, Cause(nudge.who(), nudge.trigger, nudge.reason,
                                                                        proven=self._from_hook(repo.path, nudge)))
                # A sweep or a `git update-ref` may have started this commit's deployment before the nudge came.
                try:
                    self.store.attribute(repo.name, commit, nudge.who(), nudge.trigger, nudge.reason,
                                         since=time.time() - 120)
                except StoreError as exc:   # the listener goes on: a lost store is said once (check_store)
                    log.warning("could not record who pushed %s: %s", commit[:7], exc, extra={"repo": repo.name})
            self.requests.put(Look(repo.name, None, nudge.trigger))
            if nudge.trigger == Trigger.PUSH:   # sent by pre-receive: the refs move right after it
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
        self.sweeper = self.watcher = self.listener = self.drift_timer = None

    # -- status for systemd ----------------------------------------------------------------------------
    def _status(self) -> None:
        running, queued = self.reconciler.running_commits(), self.reconciler.queued()
        if running or queued:
            text = ", ".join(f"deploying {env} {commit[:7]}"
                             + (f" ({progress.label})" if progress is not None and progress.batch is not None else "")
                             for (_repo, env), (commit, progress) in sorted(running.items()))
            text += f"{', ' if text else ''}{queued} queued" if queued else ""
            if self._adopting:   # the first convergence after start: how far it got
                text = f"adopting: {self._adopting - len(running) - queued} of {self._adopting} environments; {text}"
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
            log.warning("deployment was interrupted by a daemon stop; %d leftover process%s reaped", killed,
                        "" if killed == 1 else "es",
                        extra={"repo": dep.repo, "env": dep.env, "commit": dep.commit[:7], "deployment": dep.id})
            repo, ended = self.config.repository(dep.repo), self.store.get(dep.id)
            if repo is not None and ended is not None:
                self.human_gates.audit_deployment(repo, ended)
        self.ci_steps.recover()   # built-in CI runs too: reaped, and their pending statuses ended with `error`

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
        self.reconciler.tools = real_toolbox(new, self.placement)   # the sandbox hides the new config's repositories too
        self._save_gate()
        self._refresh_hooks()
        self._start_triggers()
        log.info("configuration reloaded from %s: %d repositories", new.source, len(new.repositories))
        self.sweep(Trigger.RELOAD)
        self._status()
        self.notifier.send("READY=1")

    def install_signal_handlers(self, early: list[int] | None = None) -> None:
        """SIGTERM and SIGINT stop, SIGHUP reloads; then act on the signals `early` kept while the daemon started."""
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.requests.put(_STOP)

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.requests.put(_HUP)

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
        except StoreError as exc:   # the hook then reads the config file: slower, same rule
            log.warning("could not save the configuration snapshot for the hook: %s", exc)

    def _refresh_hooks(self) -> None:
        """Point each repository's hook at this config and database: `state_dir` may have changed since install-hooks."""
        for repo in self.config.repositories:
            changed, problem = install_hooks.refresh_settings(repo.path, self.config.source, self.config.database,
                                                              self.config, repo)
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

    def run(self) -> int:
        backups.replaced_marker(self.config.runtime_dir).unlink(missing_ok=True)   # a stopped daemon's: said and done
        self.recover()
        self.reconciler.resume()   # post-deploy watches a stop interrupted
        self._save_gate()
        self._refresh_hooks()
        self._start_triggers()
        n_envs = sum(len(r.environments) for r in self.config.repositories)
        log.info("gitopsd started: %d repositories, %d environments, state in %s, nudges on %s",
                 len(self.config.repositories), n_envs, self.config.state_dir, self.config.nudge_socket)
        # The API listens before the first sweep: that sweep sends CI triggers, and a CI server reports "pending"
        # back at once (a status refused then is lost to it).
        self._start_api()
        self.sweep(Trigger.STARTUP, newest_first=True)
        self._drain()  # the first sweep: every environment looked at before READY
        self._start_control()
        self.chat.start()   # approvals from the chat room: a thread of its own (docs/human-gates.md)
        self._adopting = len(self.reconciler.running())   # started or queued by it: STATUS= counts them down
        self.notifier.ready(f"watching {n_envs} environment{'s' if n_envs != 1 else ''}")
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
            # Wake for the next ping when it is due, not a whole interval after the last request.
            next_ping = last_ping + interval - time.monotonic() if interval else 1.0
            timeout = min(next_ping, 1.0, self._next_timer_in())
            try:
                request = self.requests.get(timeout=max(0.0, timeout))
            except queue.Empty:
                request = _WAKE
            self._handle(request)
            if self.reload_requested.is_set() and not self.stopping.is_set():
                self.reload_requested.clear()
                self.reload()
            self._fire_due_timers()
            self._backup_if_due()
        return self.shutdown()

    def _start_api(self) -> None:
        """Serve the HTTP API in its own thread; a stored status makes the daemon look at its repository at once."""
        if self.config.api is not None:
            from ..api.server import serve
            dashboard: Callable[..., Any] | None = None
            if getattr(self.config, "web", None) is not None:   # only then Jinja2 and the pages are imported
                from ..web.app import create_web_app
                dashboard = create_web_app
            self.api = serve(lambda: self.config, self.store,
                             on_status=lambda repo: self.requests.put(Look(repo, None, "ci-status")),
                             human_gates=self.control_request,   # as the token's owner or the signed-in user
                             metrics=self.metrics.exposition if self.metrics is not None else None,
                             dashboard=dashboard)

    def _start_control(self) -> None:
        """Take sign-offs, release candidates and approvals on the control socket (identity: SO_PEERCRED)."""
        try:
            self.control = ControlServer(self.config.control_socket, self.control_request)
        except OSError as exc:
            log.error("cannot open the control socket %s: %s; sign-offs and approvals cannot be recorded until a "
                      "restart", self.config.control_socket, exc)
            return
        self.control.start()

    def _notify_people(self, target: config_mod.Notify, event: dict[str, Any]) -> None:
        """The human gates' events: to the environment's `notify`, and approval requests to the chat room too."""
        notify(target, event)
        self.chat.announce(event)

    def control_request(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """A request of the control socket or the dashboard, as `identity`: a CI rerun here, the rest to HumanGates."""
        if request.get("op") in CHANGE_CONTROL_OPS:   # locks, alert freezes, break-glass (changecontrol.py)
            return self.change_control.handle(identity, request)
        if request.get("op") == "preview":
            return self.previewer.request(identity, request)
        if request.get("op") != "ci-rerun":
            return self.human_gates.handle(identity, request)   # one lock with the HTTP API
        repo = self.config.repository(str(request.get("repo")))
        if repo is None:
            return refusal_answer(Refused(f"no repository named {str(request.get('repo'))[:100]!r} "
                                          f"(known: {', '.join(r.name for r in self.config.repositories)})",
                                          MISSING, "no-repository"))
        try:
            event = rerun.head_event(repo, str(request.get("head") or ""), identity, self._pusher_of)
        except rerun.RerunRefused as exc:
            return refusal_answer(exc)
        log.info("CI asked to run again on %s %s by %s", event.branch, event.after[:7], identity,
                 extra={"repo": repo.name, "commit": event.after[:7]})
        for sink in self.ci_sinks:
            sink(repo, event)
        what = (["the built-in steps"] if repo.ci.steps and matches(event.branch, repo.ci.branches) else []) + \
            [f"the trigger to {safe_url(t.url)}" for t in repo.ci.trigger if matches(event.branch, t.branches)]
        return {"ok": True, "identity": identity,
                "message": f"{repo.name}: CI runs again on {event.branch} at {event.after[:7]} ({', '.join(what)}), "
                           f"asked by {identity}; follow with `gitopsd ci status {event.after[:7]}`"}

    def _deployment_finished(self, job: DeploymentJob, result: str) -> None:
        """A deployment ended: its summary event in the log, its annotation in Grafana and its line in the audit
        trail (git notes), whatever the result; a successful one's new commits are recorded (DORA)."""
        self.check_store()   # the note below is written all the same: `gitopsd db rebuild` reads it
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
        if request is _STOP:
            self.stopping.set()
            return
        if request is _HUP:
            self.reload_requested.set()
            return
        if request is _WAKE or self.stopping.is_set() or not self.check_store():
            return
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
            log.warning("could not record who pushed %s: %s", ", ".join(c[:7] for c in nudge.commits), exc,
                        extra={"repo": repo})

    def _pusher_of(self, repo: str, commit: str) -> str | None:
        try:
            pushers = sorted(self.store.pushers(repo, [commit]))
        except StoreError:
            pushers = []
        if pushers:
            return ", ".join(pushers)
        cause = self.reconciler.causes.get((repo, commit))
        return cause.actor if cause is not None else None

    def _ci_look(self, repo: config_mod.Repository) -> None:
        """Hand each new head of the repository's CI branches to the CI sinks."""
        try:
            events = self.ci_heads.changes(repo)
        except StoreError as exc:
            log.warning("could not read or record the CI heads: %s", exc, extra={"repo": repo.name})
            return
        for event in events:
            log.info("new head of %s: %s (pushed by %s)", event.branch, event.after[:7], event.pusher,
                     extra={"repo": repo.name, "commit": event.after[:7]})
            for sink in self.ci_sinks:
                try:
                    sink(repo, event)
                except Exception:   # one sink's bug must not stop the others, nor the daemon
                    log.exception("CI could not take the new head %s of %s", event.after[:7], event.branch,
                                  extra={"repo": repo.name})

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

    def _lost_the_lead(self) -> None:
        """From the lease's threads: start nothing more and stop the runs now (the main loop may be waiting on a
        database that does not answer), then let the main loop step down, or exit if it cannot within a while."""
        from .leadership import EXIT_LOST, STEP_DOWN_WITHIN
        assert self.leadership is not None
        self._say_lost(self.leadership.why_lost, len(self.reconciler.running()))
        self._stop_runs()
        self.requests.put(_WAKE)

        def exit_if_stuck() -> None:
            time.sleep(STEP_DOWN_WITHIN)
            self._stop_runs()
            log.error("this gitopsd could not stop within %.0f s (the database does not answer): exiting now; "
                      "its runs were stopped", STEP_DOWN_WITHIN)
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
        log.error("this gitopsd no longer leads (epoch %s): %s. Canceling %d running deployment(s) and stopping; "
                  "started again (systemd restarts it), it waits as the standby",
                  self.leadership.epoch if self.leadership else "-", why, running)

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
        self.notifier.stopping(f"stopping; waiting for {len(running)} deployment(s)" if running else "stopping")
        log.info("stopping%s", f"; waiting up to {grace:g}s for {len(running)} running deployment(s)"
                 if running else "")
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
                log.warning("deployment #%d: %d process%s left after it ended, reaped", dep_id, left,
                            "" if left == 1 else "es")
        self.previewer.stop()
        self.monitor.shutdown(wait=True, cancel_futures=True)
        self.ci_triggers.stop()
        self.annotations.stop()
        self.ci_steps.stop()
        self._stop_triggers()
        if self.api is not None:   # before the store it writes to closes
            self.api.stop()
        if self.control is not None:
            self.control.close()
        self.chat.stop()
        self.store.close()
        if self.leadership is not None:   # last: a standby takes over once nothing runs here
            self.leadership.close()
        log.info("stopped")
        self._lock_handle.close()
        return 0


# The daemon's signals. `gitopsd run` blocks them before it imports this module (cli.cmd_run).
STARTUP_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def continue_deployment_ids(store: Store, state_dir: Path) -> None:
    """Never reuse a deployment id: each names a folder in state_dir/deployments/, which outlives a lost store."""
    folder = state_dir / "deployments"
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    next_id = store.continue_ids_after(max(ids)) if ids else None
    if next_id is not None:
        log.warning("%s is new or was reset: %d earlier deployment folder%s found in %s; deployment ids continue "
                    "from %d; every environment is deployed again as it converges", store.path, len(ids),
                    "" if len(ids) == 1 else "s", folder, next_id)


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
            Store.of(cfg).close()   # also upgrades the schema (adapters/store/schema.py)
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
        log.error("the configuration changed while this gitopsd was the standby and has problems; leading with the "
                  "one read at start:\n%s", exc)
        return cfg
    if (new.state_dir, new.runtime_dir) != (cfg.state_dir, cfg.runtime_dir):   # its lock is held on the first
        log.error("state_dir and runtime_dir changed while this gitopsd was the standby; they change only with a "
                  "restart: leading with the configuration read at start")
        return cfg
    return new


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one: each API connection, run and database takes some."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:   # a seccomp filter or a hard limit of "unlimited": keep what we have
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
        cfg = config_mod.load(config_path, writable_folders=True)   # the daemon writes there
    except ConfigError as exc:
        log.error("refusing to start: the configuration has %d problem%s:\n%s", len(exc.problems),
                  "" if len(exc.problems) == 1 else "s", exc)
        return 2
    if cfg.database_url and not wait_for_database(cfg, early):
        return 0   # stopped while waiting: nothing was started
    notifier = Notifier()
    leadership = None
    try:
        state_lock = lock_state_dir(cfg.state_dir)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    if cfg.database_url:   # a standby may share the database: lead, or wait as the standby (docs/install.md, "Standby daemon")
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
    except StoreError as exc:   # its line says which file and what to do
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
