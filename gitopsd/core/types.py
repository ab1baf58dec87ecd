"""The core's vocabulary: what a branch asks for, what a deployment is and did, as typed, frozen values.

Stdlib only. The store, the runner, the checks and the command line all speak these types, so the
reconciler and `status` name states the same way (a StrEnum is its own string in the store and in JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .constants import EMPTY_TREE as EMPTY_TREE  # re-exported: the core's vocabulary


class Action(StrEnum):
    """What one look at an environment concluded (decide())."""

    IN_SYNC = "in-sync"
    DEPLOY = "deploy"
    WAIT = "wait"  # a retry is due later
    STALLED = "stalled"  # a person must act; not retried
    FAILED = "failed"  # the deployment and its automatic rollback failed, or a re-apply of what runs failed
    BLOCKED = "blocked"  # the promotion rule refused the head
    BUSY = "busy"
    MISSING = "missing"
    WAITING = "waiting"  # for a first promotion: nothing deployed, the branch holds the empty tree
    SUSPENDED = "suspended"
    WATCHING = "watching"  # in sync, and the post-deploy watch still runs its checks
    WATCH_FAILED = "watch-failed"  # in sync, but the watch saw a breach and nothing rolled back
    DRIFTED = "drifted"  # in sync in Git, but a check-mode run found hosts changed behind Ansible's back


class Kind(StrEnum):
    """What a deployment does to an environment."""

    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    REAPPLY = "reapply"
    HEAL = "heal"  # the deployed tree again, because drift detection found hosts changed (drift.heal)


class Result(StrEnum):
    """How a deployment ended (or that it runs)."""

    QUEUED = "queued"  # waiting for a free worker (max_parallel deployments run at once)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"


class Trigger(StrEnum):
    """Why the daemon looked. A nudge may carry another word (bounded); it is recorded as it came."""

    PUSH = "push"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    RETRY = "retry"
    CLI = "cli"
    WATCH = "watch"
    SWEEP = "sweep"
    STARTUP = "startup"
    RELOAD = "reload"
    AFTER_DEPLOY = "after-deploy"
    WAKE = "wake"
    SYNC = "sync"
    AUTO_ROLLBACK = "auto-rollback"
    SUSPEND = "suspend"
    RESUME = "resume"
    AUTO_PROMOTE = "auto-promote"
    BRANCH_PUSH = "branch-push"  # a push to a non-environment branch: for CI and self-approval, never an announcement
    WATCH_CHECK = "watch-check"  # a post-deploy watch's next round of checks is due
    DRIFT_CHECK = "drift-check"  # a drift detection run (check mode) is due
    HEAL = "heal"  # drift detection asked to re-apply the deployed tree


@dataclass(frozen=True)
class Head:
    """What a branch asks for: a commit and its tree."""

    commit: str
    tree: str


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Progress:
    """Where a running deployment is: batch `batch` of `of`, or the whole inventory at once (no batches)."""

    batch: int | None = None
    of: int | None = None

    @property
    def label(self) -> str:
        """'batch 1/3' (log lines and systemd's status), or 'all hosts'."""
        return f"batch {self.batch}/{self.of}" if self.batch is not None else "all hosts"

    @property
    def words(self) -> str | None:
        """'batch 1 of 3' for an operator; None without batches."""
        return f"batch {self.batch} of {self.of}" if self.batch is not None else None

    def as_json(self) -> dict[str, int | None]:
        return {"batch": self.batch, "of": self.of}

    @classmethod
    def from_json(cls, value: object) -> Progress | None:
        if not isinstance(value, dict):
            return None
        batch, of = value.get("batch"), value.get("of")
        return cls(batch if isinstance(batch, int) else None, of if isinstance(of, int) else None)


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. `name` is "http <host>", "prometheus <check name>" or "playbook <path>"."""

    ok: bool
    name: str
    detail: str
    inconclusive: bool = False  # failed without a verdict: the source (Prometheus) was down or answered garbage

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"ok": self.ok, "name": self.name, "detail": self.detail}
        if self.inconclusive:
            record["inconclusive"] = True
        return record

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CheckResult:
        return cls(
            bool(value.get("ok")),
            str(value.get("name", "")),
            str(value.get("detail", "")),
            bool(value.get("inconclusive", False)),
        )


@dataclass
class BatchRecord:
    """What one batch of a deployment did; stored in the deployment's detail (as_json) and shown by `logs`."""

    batch: int
    hosts: list[str]
    result: str = "running"  # running | passed | failed | canceled
    checks: list[CheckResult] = field(default_factory=list)
    playbook: str | None = None  # the playbook run's own words
    node: str = ""  # the execution node that ran its playbook ("" on the controller)

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "batch": self.batch,
            "hosts": self.hosts,
            "result": self.result,
            "checks": [c.as_json() for c in self.checks],
        }
        if self.playbook is not None:
            record["playbook"] = self.playbook
        if self.node:
            record["node"] = self.node
        return record

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> BatchRecord:
        return cls(
            int(value.get("batch", 0)),
            [str(h) for h in value.get("hosts", [])],
            str(value.get("result", "")),
            [CheckResult.from_json(c) for c in value.get("checks", []) if isinstance(c, dict)],
            value.get("playbook"),
            str(value.get("node") or ""),
        )


@dataclass(frozen=True)
class Deployment:
    id: int
    repo: str
    env: str
    commit: str
    tree: str
    previous_commit: str | None
    kind: str
    result: str
    trigger: str
    actor: str
    reason: str | None  # why it started (e.g. an automatic rollback's cause)
    outcome: str | None  # how it ended, in words
    started_at: float
    finished_at: float | None
    attempt: int
    workdir: str | None
    detail: dict[str, Any]

    @property
    def active(self) -> bool:
        """Not finished yet: queued for a worker or running."""
        return self.result in (Result.QUEUED, Result.RUNNING)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo": self.repo,
            "env": self.env,
            "commit": self.commit,
            "tree": self.tree,
            "previous_commit": self.previous_commit,
            "kind": self.kind,
            "result": self.result,
            "trigger": self.trigger,
            "actor": self.actor,
            "reason": self.reason,
            "outcome": self.outcome,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "attempt": self.attempt,
        }

    @property
    def batches(self) -> list[BatchRecord]:
        return [BatchRecord.from_json(b) for b in self.detail.get("batches", []) if isinstance(b, dict)]

    @property
    def progress(self) -> Progress | None:
        return Progress.from_json(self.detail.get("progress"))


@dataclass(frozen=True)
class FailureStatus:
    """Why an environment is not converging: the failing commit, how often, and what happens next."""

    commit: str
    failures: int
    next_retry_at: float | None
    stalled: bool
    reason: str | None
    failed: bool = False  # a person must act: the deployment failed and so did its automatic rollback


@dataclass(frozen=True)
class Block:
    """The daemon refused the branch head `commit` (judged against `deployed_commit`), and why."""

    commit: str
    deployed_commit: str | None
    reason: str
    since: float


@dataclass(frozen=True)
class Admission:
    """An operator let `commit` past the promotion rule in one environment (retry --force, rollback --to)."""

    id: int
    repo: str
    env: str
    commit: str
    kind: str
    actor: str
    reason: str
    created_at: float


@dataclass(frozen=True)
class Hold:
    """An operator's standing request on one environment: a suspension, or a sync of `commit`."""

    actor: str
    reason: str | None
    since: float
    commit: str | None = None


@dataclass(frozen=True)
class HostInfo:
    """One inventory host and the requested variables, templated, as strings.

    A string value is kept as it is; any other value (a number, a boolean, a list, a mapping,
    null) is its JSON text: `30032`, `true`, `["a"]`, `null`. A variable the host does not
    have is absent, except `ansible_host`, which is the inventory name when it is not set (as
    Ansible's connection plugins do).
    """

    name: str
    vars: dict[str, str]


@dataclass(frozen=True)
class GuardedInventory:
    """An environment after a run's own in promotion order, whose SSH hosts the run may not reach: a push to qa must
    not deploy to production's hosts. A host production's own tree also gives to qa's inventory is shared on purpose."""

    env: str  # production
    repo: Path  # the bare repository: production's branch head is what production runs, past the promotion rule
    branch: str
    inventory: str  # production's inventory, in production's tree
    ours: str  # the run's own environment's inventory, in production's tree: the hosts it may share


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook invocation, fully described."""

    marker: str  # unique per deployment and state folder; tags every process of the run
    workdir: Path  # the exported commit; Ansible runs with it as its project folder
    playbook: Path
    inventory: Path
    data_dir: Path  # fresh ansible-runner private data dir
    extravars: dict[str, Any]  # strings, and gitopsd_artifacts: name -> {path, sha256} (all strings)
    timeout: int
    limit: str | None = None
    vault_password_file: Path | None = None  # the environment's, from the config; never inside the tree
    check_mode: bool = False  # `--check --diff`: drift detection asks what would change, changing nothing
    verbose: bool = False  # `-v`: a skipped task's line says why (a preview tells 'cannot run in check mode')
    guarded: tuple[GuardedInventory, ...] = ()  # later environments whose hosts its ssh may not reach (sshgate.py)


@dataclass(frozen=True)
class TaskChange:
    """A task that reported `changed` on a host (in check mode: would change), with its diff.

    `key` tells the same task apart across runs (its name and place in the tree); `diff` is empty
    for a task with `no_log` (its values are never shown) or one that gives no diff.
    """

    host: str
    task: str
    key: str
    diff: str = ""
    no_log: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "task": self.task, "key": self.key, "diff": self.diff, "no_log": self.no_log}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TaskChange:
        return cls(
            str(value.get("host", "")),
            str(value.get("task", "")),
            str(value.get("key", "")),
            str(value.get("diff", "")),
            bool(value.get("no_log", False)),
        )


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, judged from Ansible's final stats rather than its exit code."""

    ok: bool
    status: str  # successful | failed | timeout | canceled
    rc: int | None
    reason: str
    hosts: dict[str, str] = field(default_factory=dict)  # host -> ok | failed | unreachable
    stdout: Path | None = None
    permanent: bool = False  # retrying cannot help: the content is invalid (a syntax error, an unknown module)
    changes: tuple[TaskChange, ...] = ()  # every task result with `changed` (read for drift detection)
    node: str = ""  # the execution node that ran it ("" here, on the controller: nodes.py)


@dataclass(frozen=True)
class DeploymentFolders:
    """The folders of one deployment under state_dir/deployments/ID: one owner for their names.

    `tree` is the exported commit; `run-N` and `verify-N` are ansible-runner's data folders of batch
    N's playbook and verification playbook; `inventory` is where the inventory was read.
    """

    root: Path

    @classmethod
    def of(cls, state_dir: Path, deployment_id: int) -> DeploymentFolders:
        return cls(state_dir / "deployments" / str(deployment_id))

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory"

    def run(self, batch: int) -> Path:
        return self.root / f"run-{batch}"

    def verify(self, batch: int) -> Path:
        return self.root / f"verify-{batch}"

    def outputs(self) -> list[tuple[str, int, Path]]:
        """(run | verify, batch, stdout file) of every recorded Ansible run, in the order they ran."""
        found = []
        for stdout in self.root.glob("*-*/artifacts/run/stdout"):
            what, _, number = stdout.parts[-4].partition("-")
            if what in ("run", "verify") and number.isdigit():
                found.append((what, int(number), stdout))
        return sorted(found, key=lambda f: (f[1], f[0] == "verify"))


@dataclass(frozen=True)
class DeploymentJob:
    """Everything one deployment needs from its start to its record: built once by the reconciler, never changed."""

    id: int
    repo: str
    env: str
    desired: Head
    deployed: Deployment | None
    kind: Kind
    attempt: int
    folders: DeploymentFolders

    @property
    def previous_commit(self) -> str | None:
        return self.deployed.commit if self.deployed else None

    def log_extra(self) -> dict[str, object]:
        return {"repo": self.repo, "env": self.env, "commit": self.desired.commit[:7], "deployment": self.id}


@dataclass(frozen=True)
class WatchWindow:
    """The post-deploy watch of one deployment, as the store keeps it (a restarted daemon resumes it).

    `state`: watching | passed | breached | ended. `previous_tree` is what an automatic rollback returns to.
    `hosts` are the inventory's hosts with the variables the HTTP checks need, read once when it began.
    """

    repo: str
    env: str
    deployment_id: int
    commit: str
    tree: str
    previous_tree: str | None
    started_at: float
    until: float
    state: str
    reason: str | None = None
    hosts: tuple[HostInfo, ...] = ()
    checked_at: float | None = None

    def active(self, now: float) -> bool:
        return self.state == "watching" and now < self.until

    def left(self, now: float) -> str:
        """'12 min left', '40 s left': for `gitopsd status`."""
        seconds = max(0, int(self.until - now + 0.999))
        return f"{-(-seconds // 60)} min left" if seconds >= 60 else f"{seconds} s left"


@dataclass(frozen=True)
class DriftReport:
    """One drift detection run (check mode) against the deployed deployment.

    `state`: baseline (the first run after the deployment: what it changes is the baseline) | clean |
    drifted | unknown (the check-mode run itself failed: `reason`). `changes` are the drifted ones only
    (for a baseline, the baseline's).
    """

    repo: str
    env: str
    deployment_id: int
    checked_at: float
    state: str
    reason: str | None
    changes: tuple[TaskChange, ...] = ()
    id: int = 0

    @property
    def hosts(self) -> list[str]:
        return sorted({c.host for c in self.changes})

    def as_json(self) -> dict[str, Any]:
        hosts: dict[str, list[dict[str, Any]]] = {}
        for change in self.changes:
            hosts.setdefault(change.host, []).append(
                {"task": change.task, "key": change.key, "diff": change.diff, "no_log": change.no_log}
            )
        return {
            "repo": self.repo,
            "env": self.env,
            "deployment": self.deployment_id,
            "checked_at": iso(self.checked_at),
            "state": self.state,
            "reason": self.reason,
            "drifted_hosts": len(hosts) if self.state == "drifted" else 0,
            "hosts": hosts,
        }
