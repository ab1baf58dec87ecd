"""Built-in CI: a repository's `ci.steps`, run on every new head of its `ci.branches`.

For each new head (a HeadEvent from the daemon's loop) a run is numbered and queued; a worker
(at most max(1, max_parallel // 2) at once) exports the exact commit into a fresh folder under
`ci_dir/<id>/` and runs the steps in order. Each step is repository content, so it runs like a
playbook: in the sandbox (adapters/sandbox.py) when it is on, with a cleared environment, in its
own process group, marked so that every process it started is reaped when it ends, times out or
is canceled, even after the daemon itself died. Each step reports the commit status
`gitopsd/<name>` (reporter `gitopsd`); a failed step stops the run. A newer head of the same
branch cancels the older run. What a step's `artifacts` globs match is kept (ci/artifacts.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..adapters import runner, sandbox
from ..adapters.gitrepo import GitRepository
from ..core.errors import GitopsdError
from ..core.settings import CiStep, Config, Repository, SandboxPolicy
from ..services import releases
from . import provenance, runs
from .artifacts import ArtifactError, ArtifactStore
from .heads import HeadEvent, matches

log = logging.getLogger("gitopsd.ci")

REPORTER = "gitopsd"
POLL = 0.05  # seconds between looks at a running step (its end, its time limit, a cancel)


class StatusRecords(Protocol):
    """Where steps report their commit statuses (adapters.store.Store)."""

    def add_status(
        self,
        *,
        repo: str,
        commit: str,
        tree: str,
        context: str,
        state: str,
        reporter: str,
        now: float,
        target_url: str | None = None,
        description: str | None = None,
    ) -> int: ...

    def record_attestation(
        self, *, repo: str, tree: str, name: str, sha256: str, signed_sha256: str, statement: str, now: float
    ) -> None: ...


def context(step: str) -> str:
    return f"gitopsd/{step}"


@dataclass
class _Run:
    """A run the runner knows about: its record (run.json) and how to stop it."""

    record: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    why: str = ""  # the description its unfinished steps get when canceled
    silent: bool = False  # replaced by a run of the same tree: its statuses would overwrite the newer run's

    @property
    def id(self) -> int:
        return int(self.record["id"])


class StepRunner:
    """Queues and runs built-in CI runs; `sink` is the daemon's CI sink. Never blocks its caller."""

    def __init__(
        self,
        config: Config,
        store: StatusRecords,
        artifacts: ArtifactStore,
        *,
        policy: Callable[[], SandboxPolicy],
        on_status: Callable[[str], None] = lambda _repo: None,
    ):
        self.ci_dir, self.state_dir = config.ci_dir, config.state_dir
        self.store, self.artifacts, self.policy, self.on_status = store, artifacts, policy, on_status
        self.keep: dict[str, int] = {r.name: r.ci.keep_artifacts for r in config.repositories}
        self.pool = ThreadPoolExecutor(max_workers=max(1, config.max_parallel // 2), thread_name_prefix="ci")
        self._instance = hashlib.sha256(str(config.database).encode()).hexdigest()[:8]
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], _Run] = {}  # (repo, branch) -> its newest run
        self._next_id: int | None = None
        self._stopping = False

    def marker(self, run_id: int) -> str:
        """The process marker of a run: unlike any deployment's, unique across state folders of one machine."""
        return f"{self._instance}-ci{run_id}"

    # -- the daemon's side ------------------------------------------------------------------------
    def sink(self, repo: Repository, event: HeadEvent) -> None:
        """Queue a run for a new head of a branch whose heads run the steps; cancel that branch's older run."""
        if not repo.ci.steps or not matches(event.branch, repo.ci.branches):
            return
        self.keep[repo.name] = repo.ci.keep_artifacts  # the configuration may have been reloaded
        with self._lock:
            if self._stopping:
                return
            if self._next_id is None:
                self._next_id = max(runs.ids(self.ci_dir), default=0) + 1
            run_id, self._next_id = self._next_id, self._next_id + 1
            runs.folder(self.ci_dir, run_id).mkdir(parents=True)
            run = _Run(
                {
                    "id": run_id,
                    "repo": repo.name,
                    "branch": event.branch,
                    "commit": event.after,
                    "tree": event.tree,
                    "pusher": event.pusher,
                    "state": "queued",
                    "reason": None,
                    "created_at": time.time(),
                    "started_at": None,
                    "finished_at": None,
                    "steps": [{"name": s.name, "state": "queued", "description": None} for s in repo.ci.steps],
                }
            )
            if event.asked_by is not None:
                run.record["rerun_by"] = event.asked_by
            older = self._active.get((repo.name, event.branch))
            self._active[(repo.name, event.branch)] = run
        runs.save(self.ci_dir, run.record)
        if older is not None:
            older.why = (
                f"canceled: a rerun asked by {event.asked_by} replaced it (CI run #{run_id})"
                if event.asked_by is not None and older.record["commit"] == event.after
                else f"canceled: a newer commit {event.after[:7]} of {event.branch} replaced it (CI run #{run_id})"
            )
            older.silent = older.record["tree"] == event.tree
            older.cancel.set()
        log.info(
            "CI run #%d queued for %s %s%s",
            run_id,
            event.branch,
            event.after[:7],
            f" (a rerun asked by {event.asked_by})" if event.asked_by is not None else "",
            extra={"repo": repo.name, "commit": event.after[:7]},
        )
        self.pool.submit(self._work, repo, run)

    def recover(self) -> None:
        """At start: runs a stopped daemon left queued or running are interrupted; reap them, end their statuses."""
        for run_id in runs.ids(self.ci_dir):
            record = runs.load(self.ci_dir, run_id)
            if record is None or record.get("state") not in runs.ACTIVE:
                continue
            killed = runner.reap(self.marker(run_id))
            run = _Run(record, why="interrupted: the daemon stopped during this run; push again to run the steps")
            self._close_open_steps(run)
            self._finish(run, "interrupted", "the daemon stopped during this run")
            log.warning(
                "CI run #%d was interrupted by a daemon stop; %d leftover process%s reaped",
                run_id,
                killed,
                "" if killed == 1 else "es",
                extra={"repo": record.get("repo"), "commit": record["commit"][:7]},
            )

    def stop(self) -> None:
        """Cancel every run (their processes are killed and reaped) and wait for the workers."""
        with self._lock:
            self._stopping = True
            for run in self._active.values():
                run.why = "canceled: the daemon stopped during this run; push again to run the steps"
                run.cancel.set()
        self.pool.shutdown(wait=True)

    # -- one run, on a worker ---------------------------------------------------------------------
    def _work(self, repo: Repository, run: _Run) -> None:
        """One run. Nothing may end it silently, nor leave its statuses pending."""
        extra = {"repo": repo.name, "commit": run.record["commit"][:7]}
        try:
            self._execute(repo, run)
        except Exception as exc:
            log.exception("CI run #%d failed inside gitopsd", run.id, extra=extra)
            run.why = f"error in gitopsd: {exc}"
            self._close_open_steps(run)
            self._finish(run, "error", run.why)
        finally:
            with self._lock:
                if self._active.get((repo.name, run.record["branch"])) is run:
                    self._active.pop((repo.name, run.record["branch"]))
            shutil.rmtree(runs.folder(self.ci_dir, run.id) / "work", ignore_errors=True)  # kept: artifacts, logs
        try:
            removed = self.artifacts.prune(dict(self.keep))
            if removed:
                log.info("artifacts: %d file%s no deployment used pruned", removed, "" if removed == 1 else "s")
        except (OSError, GitopsdError) as exc:
            log.warning("could not prune old artifacts: %s", exc)

    def _execute(self, repo: Repository, run: _Run) -> None:
        record = run.record
        extra = {"repo": repo.name, "commit": record["commit"][:7]}
        if run.cancel.is_set():
            self._close_open_steps(run)
            self._finish(run, "canceled", run.why)
            return
        record.update(state="running", started_at=time.time())
        for index in range(len(repo.ci.steps)):
            self._report(
                run, index, "queued", "pending", f"queued (CI run #{run.id})" if index else f"starting (CI run #{run.id})"
            )
        work = runs.folder(self.ci_dir, run.id) / "work"
        tree = work / "tree"  # inside the run's writable folder: steps build in it (sandbox.bwrap_args binds it last)
        started = time.monotonic()
        try:
            GitRepository(repo.path).export(record["commit"], tree)
        except GitopsdError as exc:
            run.why = f"not run: the commit cannot be exported: {exc}"
            self._close_open_steps(run)
            self._finish(run, "error", run.why)
            return
        log.info("CI run #%d started: %d step%s", run.id, len(repo.ci.steps), "" if len(repo.ci.steps) == 1 else "s", extra=extra)
        failed = None
        for index, step in enumerate(repo.ci.steps):
            if run.cancel.is_set():
                break
            self._report(run, index, "running", "pending", f"running (gitopsd logs --ci {run.id})")
            state, description = self._step(repo, run, index, step, work, tree)
            self._report(run, index, state, state, f"{description} (gitopsd logs --ci {run.id})")
            if state != "success":
                failed = step.name
                break
        took = time.monotonic() - started
        if run.cancel.is_set():
            self._close_open_steps(run)
            self._finish(run, "canceled", run.why)
            log.info("CI run #%d %s", run.id, run.why, extra=extra)
        elif failed is not None:
            run.why = f"not run: {failed} failed"
            self._close_open_steps(run)
            self._finish(run, "failed", f"step {failed} failed")
            log.warning("CI run #%d failed in %.1fs: step %s failed", run.id, took, failed, extra=extra)
        else:
            self._finish(run, "succeeded", None)
            log.info("CI run #%d succeeded in %.1fs", run.id, took, extra=extra)

    def _step(self, repo: Repository, run: _Run, index: int, step: CiStep, work: Path, tree: Path) -> tuple[str, str]:
        """Run one step to its end, its time limit or a cancel; reap what it started. Return (state, description)."""
        record = run.record
        marker = self.marker(run.id)
        home = work / "home"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Only these: nothing of the daemon's environment (tokens, sockets, its supervisor's variables) reaches a step.
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITOPSD_COMMIT": record["commit"],
            "GITOPSD_TREE": record["tree"],
            "GITOPSD_BRANCH": record["branch"],
            "GITOPSD_STEP": step.name,
            runner.MARKER: marker,
        }  # how the reaper finds every process of the run, also after a daemon crash
        argv = list(step.run)
        policy = self.policy()
        if policy.enabled:
            argv = sandbox.command_prefix(policy, project=tree, run_dir=work, network=policy.network) + argv
        log_path = runs.folder(self.ci_dir, run.id) / runs.log_name(index + 1, step.name)
        started = time.monotonic()
        ended = None
        with open(log_path, "wb") as out:
            out.write(f"$ {shlex.join(step.run)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tree,
                    start_new_session=True,
                )
            except OSError as exc:
                return "error", f"cannot start {step.run[0]}: {exc.strerror or exc}"
            try:
                while proc.poll() is None:
                    if run.cancel.is_set():
                        ended = "canceled"
                        break
                    if time.monotonic() - started > step.timeout:
                        ended = "timeout"
                        break
                    time.sleep(POLL)
            finally:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)  # its own process group: the step and what it forked
                    except ProcessLookupError:
                        pass
                    proc.wait()
                left = runner.reap(marker)  # and whatever left the group (setsid, double fork)
            took = time.monotonic() - started
            if ended == "timeout":
                out.write(
                    f"\n# stopped after {step.timeout}s (time limit); {left} more process"
                    f"{'' if left == 1 else 'es'} killed\n".encode()
                )
        if ended == "canceled":
            return "error", run.why or "canceled"
        if ended == "timeout":
            return "failure", f"stopped after {step.timeout}s (time limit), with every process it started"
        if proc.returncode != 0:
            return "failure", f"exit code {proc.returncode} after {took:.1f}s"
        if step.artifacts:
            try:
                kept = self.artifacts.keep(repo.name, record["tree"], tree, step.artifacts)
            except ArtifactError as exc:
                return "failure", str(exc)
            record["steps"][index]["artifacts"] = kept
            self._attest(repo, run, index, kept)
            names = ", ".join(sorted(kept)) or "the same files as before"
            return "success", f"passed in {took:.1f}s; artifacts: {names}"
        return "success", f"passed in {took:.1f}s"

    def _attest(self, repo: Repository, run: _Run, index: int, kept: dict[str, dict[str, Any]]) -> None:
        """Sign the provenance of each newly kept artifact, name it in the manifest and in the commit's note."""
        record = run.record
        steps = [{"name": s.name, "run": s.run} for s in repo.ci.steps[: index + 1]]
        for name, entry in sorted(kept.items()):
            body = provenance.statement(
                name=name,
                sha256=entry["sha256"],
                repo=repo.name,
                repo_path=str(repo.path),
                commit=record["commit"],
                tree=record["tree"],
                steps=steps,
                run_id=run.id,
                started=float(record.get("started_at") or time.time()),
                builder=provenance.builder_id(),
            )
            path = provenance.write(
                self.artifacts.root, repo.name, record["tree"], name, provenance.envelope(self.state_dir, body)
            )
            self.artifacts.attest(repo.name, record["tree"], name, path)
            signed = [str(s["digest"]["sha256"]) for s in body["subject"] if s.get("name") == name]
            self.store.record_attestation(
                repo=repo.name,
                tree=record["tree"],
                name=name,
                sha256=entry["sha256"],
                signed_sha256=signed[0] if signed else "",
                statement=str(path),
                now=time.time(),
            )
            releases.add_note(
                str(repo.path),
                record["commit"],
                f"gitopsd: built {name} sha256:{entry['sha256']} (CI run #{run.id}), provenance {path}",
            )

    # -- records and statuses ---------------------------------------------------------------------
    def _report(self, run: _Run, index: int, step_state: str, state: str, description: str) -> None:
        """Record a step's state in run.json and report its commit status, then tell the daemon."""
        record = run.record
        step = record["steps"][index]
        step.update(state=step_state, description=description)
        runs.save(self.ci_dir, record)
        if run.silent:
            return
        try:
            self.store.add_status(
                repo=record["repo"],
                commit=record["commit"],
                tree=record["tree"],
                context=context(step["name"]),
                state=state,
                reporter=REPORTER,
                now=time.time(),
                description=description[:1000],
            )
        except Exception as exc:  # a busy or broken store: the run goes on, the daemon's log says it
            log.error(
                "could not record the status %s of %s: %s",
                context(step["name"]),
                record["commit"][:7],
                exc,
                extra={"repo": record["repo"]},
            )
            return
        self.on_status(record["repo"])

    def _close_open_steps(self, run: _Run) -> None:
        """Report `error` on every step not finished, saying why (run.why): nothing stays pending."""
        for index, step in enumerate(run.record["steps"]):
            if step["state"] in runs.STEP_OPEN:
                self._report(run, index, "error", "error", run.why)

    def _finish(self, run: _Run, state: str, reason: str | None) -> None:
        run.record.update(state=state, reason=reason, finished_at=time.time())
        runs.save(self.ci_dir, run.record)
