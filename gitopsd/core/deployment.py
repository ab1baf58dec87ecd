"""Carrying out one deployment: the playbook once per batch of hosts, then the checks through the bake.

gitopsd, not the playbook, decides what happens between batches: a batch passes only when its
playbook run succeeded for enough of its hosts (Ansible's final stats, `max_fail_percentage`)
and every check passed throughout its bake. The first batch that fails stops the rollout.
Rollbacks go to every host at once: they return hosts to a release they still have.

The record says what happened to each host (HOST_STATES): Ansible's final stats for the hosts its
runs reached, then gitopsd's own checks of each batch, and `skipped` for hosts no run reached.
"""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .batches import failed_too_many, split_batches
from .settings import Environment, HttpCheck, PrometheusCheck, Repository
from .tree import resolve_inside
from .types import (
    BatchRecord,
    CheckResult,
    DeploymentFolders,
    GuardedInventory,
    Head,
    HostInfo,
    Kind,
    PlaybookRun,
    Progress,
    RunOutcome,
)

# What happened to a host in a deployment, in its record (`hosts` of `history --json`, the dashboard):
# ok: its run succeeded and changed nothing, and its checks passed; changed: the same, with changes;
# failed: a task failed there, or its batch's run failed without a word per host (a timeout, a syntax
# error); unreachable: Ansible could not reach it; check-failed: its run succeeded but a check of it
# failed (its HTTP check, the verification playbook there, or a check of its whole batch: Prometheus);
# canceled: its batch ran when the deployment was canceled; skipped: no run reached it (an earlier
# batch failed or the deployment was canceled first).
HOST_STATES = ("ok", "changed", "failed", "unreachable", "check-failed", "canceled", "skipped")


@dataclass
class Attempt:
    """What a deployment did, recorded as the deployment's detail."""

    ok: bool = False
    canceled: bool = False
    permanent: bool = False  # retrying the same tree cannot help (RunOutcome.permanent)
    reason: str = ""
    hosts: dict[str, str] = field(default_factory=dict)
    batches: list[BatchRecord] = field(default_factory=list)

    def detail(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "batches": [b.as_json() for b in self.batches]}


@dataclass(frozen=True)
class Toolbox:
    """The outside world a deployment uses: Ansible, the inventory parser, the checks. Fakes in unit tests."""

    run_playbook: Callable[[PlaybookRun, threading.Event], RunOutcome]
    hosts_of: Callable[[PlaybookRun, tuple[str, ...], threading.Event], list[HostInfo]] | None = None
    check_http: Callable[[HttpCheck, HostInfo, str], CheckResult] | None = None  # (check, host, commit)
    check_prometheus: Callable[[PrometheusCheck, str, str], CheckResult] | None = None  # (check, commit, env)
    sleep: Callable[[float], None] = time.sleep
    # The files CI built for a tree (repo, tree) -> name -> {path, sha256}: `gitopsd_artifacts` (ci/artifacts.py).
    artifacts: Callable[[str, str], dict[str, dict[str, str]]] = lambda _repo, _tree: {}
    # Why the tree's artifacts may not run (repo, tree) -> one line, or None: their signed provenance (ci/provenance.py).
    provenance: Callable[[str, str], str | None] = lambda _repo, _tree: None


def playbook_run(
    repo: str,
    env: Environment,
    marker: str,
    deployment_id: int,
    head: Head,
    previous_commit: str | None,
    kind: str,
    workdir: Path,
    data_dir: Path,
    artifacts: dict[str, dict[str, str]],
    check_mode: bool = False,
    guarded: tuple[GuardedInventory, ...] = (),
) -> PlaybookRun:
    """The environment's playbook over its inventory, with its vault, for the exported `head` in `workdir`.

    Deployments and drift checks (check mode, the deployed deployment's own values) both run it.
    """
    return PlaybookRun(
        marker=marker,
        workdir=workdir,
        playbook=resolve_inside(workdir, env.playbook),
        inventory=resolve_inside(workdir, env.inventory),
        data_dir=data_dir,
        timeout=env.timeout,
        vault_password_file=env.vault_password_file,
        check_mode=check_mode,
        guarded=guarded,
        extravars={
            "gitopsd_env": env.name,
            "gitopsd_repo": repo,
            "gitopsd_commit": head.commit,
            "gitopsd_tree": head.tree,
            "gitopsd_previous_commit": previous_commit or "",
            "gitopsd_deploy_id": str(deployment_id),
            "gitopsd_kind": kind,
            "gitopsd_workdir": str(workdir),
            "gitopsd_artifacts": artifacts,
        },
    )


def guarded_by(repo: Repository, env: Environment) -> tuple[GuardedInventory, ...]:
    """The environments after `env` in promotion order: a run of `env` reaches none of their SSH hosts but those their
    own tree gives to `env` too (a push to qa must not deploy to production's hosts)."""
    names = [e.name for e in repo.environments]
    later = repo.environments[names.index(env.name) + 1 :] if env.name in names else ()
    return tuple(GuardedInventory(e.name, repo.path, e.branch, e.inventory, env.inventory) for e in later)


def url_variables(url: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(url) if name)


def execute(
    env: Environment,
    run: PlaybookRun,
    kind: str,
    tools: Toolbox,
    cancel: threading.Event,
    progress: Callable[[Progress], None] = lambda _where: None,
    folders: DeploymentFolders | None = None,
) -> Attempt:
    """Run a deployment described by `run` (the whole inventory) in `env`'s batches with its checks.

    Each batch's runs get their own folders (`folders`, by default the ones beside `run.data_dir`).
    """
    folders = folders or DeploymentFolders(run.data_dir.parent)
    attempt = Attempt()
    needs_hosts = (env.rollout is not None and kind != Kind.ROLLBACK) or env.verify.http is not None
    hosts: list[HostInfo] = []
    if needs_hosts:
        assert tools.hosts_of is not None
        variables = url_variables(env.verify.http.url) if env.verify.http else ()
        try:
            hosts = tools.hosts_of(run, variables, cancel)
        except Exception as exc:  # InventoryError and templating errors: say what, fail the attempt
            attempt.reason = f"cannot read the inventory {run.inventory.name}: {exc}"
            return attempt
    if env.rollout is not None and kind != Kind.ROLLBACK:
        batches: list[list[str] | None] = list(split_batches([h.name for h in hosts], list(env.rollout.batches)))
        if not batches:
            attempt.reason = "no hosts matched: the inventory has no hosts to roll out to"
            return attempt
    else:
        batches = [None]  # the whole inventory in one run
    by_name = {h.name: h for h in hosts}
    for number, batch in enumerate(batches, 1):
        where = Progress(number, len(batches)) if batch is not None else Progress()
        label = where.label
        # Checked before every batch: an artifact changed between batches must not reach the next one.
        refusal = (
            tools.provenance(run.extravars["gitopsd_repo"], run.extravars["gitopsd_tree"]) if env.require_provenance else None
        )
        if refusal is not None:
            attempt.reason, attempt.permanent = (f"{label}: {refusal}" if batch is not None else refusal), True
            _not_reached(attempt, [], "skipped", batches[number - 1 :])
            return attempt
        progress(where)
        record = BatchRecord(number, batch or [])
        attempt.batches.append(record)
        outcome = tools.run_playbook(replace(run, data_dir=folders.run(number), limit=",".join(batch) if batch else None), cancel)
        attempt.hosts.update(_host_states(outcome))
        record.hosts = batch or sorted(outcome.hosts)
        record.playbook, record.node = outcome.reason, outcome.node
        # Without batches the playbook's own words say it all ("failed on qa-1 (failed); 1 of 2 hosts ok").
        said = f"{label} failed: " if batch is not None else ""
        if outcome.status == "canceled" or cancel.is_set():
            record.result = "canceled"
            attempt.canceled, attempt.reason = True, f"{label}: canceled" if batch is not None else "canceled"
            _not_reached(attempt, record.hosts, "canceled", batches[number:])
            return attempt
        if not _batch_ok(env, outcome, batch):
            record.result = "failed"
            attempt.reason = f"{said}{outcome.reason}"
            attempt.permanent = outcome.permanent
            _not_reached(attempt, record.hosts, "failed", batches[number:])
            return attempt
        failed_check, blamed = _checks(
            env, run, kind, tools, cancel, [by_name[h] for h in batch] if batch else hosts, folders.verify(number), record
        )
        if failed_check is not None:
            record.result = "failed"
            attempt.hosts.update(dict.fromkeys(blamed, "check-failed"))
            _not_reached(attempt, record.hosts, "failed", batches[number:])
            attempt.reason = (
                f"{label} failed the check {failed_check.name}: {failed_check.detail}"
                if batch is not None
                else f"the check {failed_check.name} failed: {failed_check.detail}"
            )
            return attempt
        record.result = "passed"
    attempt.ok = True
    n_hosts = len(attempt.hosts)
    attempt.reason = f"succeeded on {n_hosts} host{'s' if n_hosts != 1 else ''}" + (
        f" in {len(batches)} batches" if len(batches) > 1 else ""
    )
    return attempt


def _host_states(outcome: RunOutcome) -> dict[str, str]:
    """Each host a run reached, as Ansible's final stats say (ok, failed, unreachable), ok split into ok and changed."""
    changed = {c.host for c in outcome.changes}
    return {h: "changed" if said == "ok" and h in changed else said for h, said in outcome.hosts.items()}


def _not_reached(attempt: Attempt, batch: list[str], said: str, later: list[list[str] | None]) -> None:
    """The rollout stopped in `batch`: its hosts without a word from Ansible get `said`, later batches' `skipped`."""
    for host in batch:
        attempt.hosts.setdefault(host, said)
    for hosts in later:
        for host in hosts or ():
            attempt.hosts.setdefault(host, "skipped")


def _batch_ok(env: Environment, outcome: RunOutcome, batch: list[str] | None) -> bool:
    if outcome.ok:
        return True
    if outcome.status in ("timeout", "canceled") or not outcome.hosts or env.rollout is None:
        return False
    failed = sum(1 for h, r in outcome.hosts.items() if r != "ok")
    total = max(len(batch) if batch else len(outcome.hosts), failed)
    return not failed_too_many(failed, total, env.rollout.max_fail_percentage)


def _checks(
    env: Environment,
    run: PlaybookRun,
    kind: str,
    tools: Toolbox,
    cancel: threading.Event,
    hosts: list[HostInfo],
    verify_dir: Path,
    record: BatchRecord,
) -> tuple[CheckResult | None, list[str]]:
    """Run the verification playbook once, then the HTTP and Prometheus checks until the bake is over.

    Return the first failed check and the hosts whose checks failed (every host of the batch for a
    check of the whole batch), or (None, []) when all passed throughout.
    """
    verify = env.verify
    if verify.playbook:
        playbook = resolve_inside(run.workdir, verify.playbook)
        limit = ",".join(h.name for h in hosts) if hosts else None
        outcome = tools.run_playbook(replace(run, playbook=playbook, limit=limit, data_dir=verify_dir), cancel)
        result = CheckResult(outcome.ok, f"playbook {verify.playbook}", outcome.reason)
        record.checks.append(result)
        if not result.ok:
            return result, sorted(h for h, said in outcome.hosts.items() if said != "ok") or record.hosts
    bake = env.rollout.bake if env.rollout is not None and kind != Kind.ROLLBACK else 0.0
    deadline = time.monotonic() + bake
    interval = min(5.0, max(0.5, bake / 5)) if bake else 0.0
    commit = run.extravars.get("gitopsd_commit", "")
    while True:
        results: list[tuple[CheckResult, list[str]]] = []  # each check with the hosts it speaks for
        if verify.http is not None and tools.check_http is not None:
            results += [(tools.check_http(verify.http, host, commit), [host.name]) for host in hosts]
        if verify.prometheus is not None and tools.check_prometheus is not None:
            results.append((tools.check_prometheus(verify.prometheus, commit, env.name), record.hosts))
        failed = [(result, names) for result, names in results if not result.ok]
        if failed:
            record.checks += [result for result, _ in failed]
            return failed[0][0], sorted({name for _, names in failed for name in names})
        if time.monotonic() >= deadline or cancel.is_set():
            record.checks += [result for result, _ in results]
            return None, []
        tools.sleep(interval)
