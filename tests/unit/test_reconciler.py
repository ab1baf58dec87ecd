"""The reconciler core with fakes behind its ports: a fake Git, a fake playbook runner, an injected clock.

Real: the SQLite store (in a temp folder). Fake: Git heads and exports, Ansible outcomes, time.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitopsd.config import Config, Environment, Repository
from gitopsd.decision import Head, decide
from gitopsd.execute import Toolbox
from gitopsd.gitrepo import ExportError
from gitopsd.reconciler import Look, Reconciler, backoff
from gitopsd.runner import PlaybookRun, RunOutcome
from gitopsd.state import Store


@dataclass
class FakeGit:
    heads: dict[str, Head] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)

    def head(self, repo, branch):
        return self.heads.get(branch)

    def export(self, repo, commit, dest: Path):
        if commit in self.missing:
            raise ExportError(f"commit {commit} is missing from the repository")
        (dest / "playbooks").mkdir(parents=True)
        (dest / "playbooks" / "deploy.yml").write_text("- hosts: all\n")
        (dest / "environments" / "qa").mkdir(parents=True)
        (dest / "environments" / "qa" / "hosts.yml").write_text("all: {}\n")


@dataclass
class FakeRunner:
    failing: set[str] = field(default_factory=set)
    runs: list[PlaybookRun] = field(default_factory=list)

    def __call__(self, run: PlaybookRun, cancel: threading.Event) -> RunOutcome:
        self.runs.append(run)
        if run.extravars["gitopsd_commit"] in self.failing:
            return RunOutcome(False, "failed", 2, "failed on qa-1 (failed)", {"qa-1": "failed"})
        return RunOutcome(True, "successful", 0, "succeeded on 1 host", {"qa-1": "ok"})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def head(n: int, tree: int | None = None) -> Head:
    return Head(f"{n:040x}", f"{(tree if tree is not None else n) + 0xabc:040x}")


@pytest.fixture
def world(tmp_path):
    env = Environment(name="qa", branch="qa", promote_from="main", inventory="environments/qa/hosts.yml",
                      playbook="playbooks/deploy.yml", retries=2, retry_backoff=10, retry_backoff_max=60)
    config = Config(source=tmp_path / "gitopsd.yml", state_dir=tmp_path / "state",
                    repositories=(Repository("shop", tmp_path / "shop.git", (env,)),))
    store = Store(config.database)
    git, runner, clock = FakeGit(), FakeRunner(), Clock()
    scheduled: list[tuple[Look, float]] = []
    reconciler = Reconciler(config, store, git, Toolbox(run_playbook=runner), submit=lambda job: job(),
                            schedule=lambda look, at: scheduled.append((look, at)), clock=clock,
                            rng=random.Random(7))
    reconciler.auto_rollback_calls = []  # type: ignore[attr-defined]
    return reconciler, store, git, runner, clock, scheduled


def look(reconciler):
    reconciler.look(Look("shop", "qa", "test"))


def test_a_new_head_is_deployed_once_and_then_in_sync(world):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    look(reconciler)
    assert len(runner.runs) == 1
    assert store.deployed("shop", "qa").commit == head(1).commit
    extravars = runner.runs[0].extravars
    assert extravars["gitopsd_kind"] == "deploy" and extravars["gitopsd_previous_commit"] == ""
    assert set(extravars) == {"gitopsd_env", "gitopsd_repo", "gitopsd_commit", "gitopsd_tree",
                              "gitopsd_previous_commit", "gitopsd_deploy_id", "gitopsd_kind", "gitopsd_workdir"}


def test_failures_back_off_then_stall_until_the_branch_moves(world):
    reconciler, store, git, runner, clock, scheduled = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    runner.failing.add(head(2).commit)
    look(reconciler)                        # attempt 1 fails
    failure = store.failure("shop", "qa")
    assert failure.failures == 1 and not failure.stalled
    assert 8 <= failure.next_retry_at - clock.now <= 12   # 10 s +-20 %
    look(reconciler)                        # too early: nothing runs
    assert len(runner.runs) == 2
    clock.now = failure.next_retry_at
    look(reconciler)                        # attempt 2
    clock.now = store.failure("shop", "qa").next_retry_at
    look(reconciler)                        # attempt 3 = retries exhausted -> stalled
    failure = store.failure("shop", "qa")
    assert failure.stalled and failure.failures == 3 and len(runner.runs) == 4
    clock.now += 10_000
    look(reconciler)
    assert len(runner.runs) == 4, "a stalled environment waits for a new commit or `gitopsd retry`"
    assert store.deployed("shop", "qa").commit == head(1).commit
    git.heads["qa"] = head(3)
    look(reconciler)
    assert store.deployed("shop", "qa").commit == head(3).commit
    assert store.failure("shop", "qa") is None


def test_a_missing_commit_stalls_at_once_without_retries(world):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(5)
    git.missing.add(head(5).commit)
    look(reconciler)
    failure = store.failure("shop", "qa")
    assert failure.stalled and "missing" in failure.reason
    assert runner.runs == []


def test_returning_to_a_tree_deployed_before_is_a_rollback(world):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    look(reconciler)
    git.heads["qa"] = head(3, tree=1)       # a revert: new commit, old tree
    look(reconciler)
    assert [r.extravars["gitopsd_kind"] for r in runner.runs] == ["deploy", "deploy", "rollback"]
    assert store.last("shop", "qa").kind == "rollback"


def test_a_new_commit_with_the_deployed_tree_is_a_reapply(world):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2, tree=1)       # e.g. a promotion merge with the same tree
    look(reconciler)
    assert runner.runs[-1].extravars["gitopsd_kind"] == "reapply"


def test_backoff_is_capped_and_jittered():
    env = Environment("qa", "qa", "main", "i", "p", retry_backoff=10, retry_backoff_max=60)
    rng = random.Random(1)
    values = [backoff(env, n, rng) for n in range(1, 8)]
    assert all(v <= 60 * 1.2 for v in values)
    assert values[-1] >= 60 * 0.8


def test_decide_is_busy_while_a_deployment_runs_and_missing_without_a_branch():
    assert decide(None, None, None, None, None, False, False, 0).action == "missing"
    assert decide(head(1), None, None, None, None, False, True, 0).action == "busy"
