"""The reconciler core with fakes behind its ports: a fake Git, a fake playbook runner, a fake judge, an injected clock.

Real: the SQLite store (in a temp folder), `policy.rollback_trees`. Fake: Git heads, exports and reverts,
Ansible outcomes, the rest of the promotion rule, notifications, time.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from gitopsd.adapters.store import Store
from gitopsd.core.decide import EMPTY_TREE, Head, decide
from gitopsd.core.deployment import Toolbox
from gitopsd.core.errors import GitError, StalledError
from gitopsd.core.reconcile import Cause, Look, Reconciler, backoff
from gitopsd.core.settings import Config, Environment, Repository
from gitopsd.core.types import Deployment, FailureStatus, PlaybookRun, RunOutcome
from gitopsd.gate.policy import Verdict, refuse, rollback_trees


@dataclass
class FakeGit:
    heads: dict[str, Head] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)

    def head(self, repo, branch):
        return self.heads.get(branch)

    def export(self, repo, commit, dest: Path):
        if commit in self.missing:
            raise StalledError(f"commit {commit} is missing from the repository")
        (dest / "playbooks").mkdir(parents=True)
        (dest / "playbooks" / "deploy.yml").write_text("- hosts: all\n")
        (dest / "environments" / "qa").mkdir(parents=True)
        (dest / "environments" / "qa" / "hosts.yml").write_text("all: {}\n")

    def revert(self, repo, branch, head, good_tree, *, reason):
        self.heads[branch] = Head(f"{len(self.heads) + 0xFEED:040x}", good_tree)
        return self.heads[branch].commit


@dataclass
class FakeRunner:
    failing: set[str] = field(default_factory=set)
    runs: list[PlaybookRun] = field(default_factory=list)

    def __call__(self, run: PlaybookRun, cancel: threading.Event) -> RunOutcome:
        self.runs.append(run)
        if run.extravars["gitopsd_commit"] in self.failing:
            return RunOutcome(False, "failed", 2, "failed on qa-1 (failed)", {"qa-1": "failed"})
        return RunOutcome(True, "successful", 0, "succeeded on 1 host", {"qa-1": "ok"})


@dataclass
class FakeJudge:
    """The promotion rule with its Git half faked: `refused` commits fail; a move to the rollback target is a rollback."""

    store: Store
    refused: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, repo, env, desired: Head, deployed, check_windows: bool) -> Verdict:
        self.calls.append((desired.commit, check_windows))
        if desired.commit in self.refused:
            return refuse("other", self.refused[desired.commit], [f"commit {desired.commit[:7]} is not acceptable."], [])
        current, target = rollback_trees(self.store.successes(repo.name, env.name))
        if desired.tree in (current, target):
            return Verdict(True, "rollback", "rollback")
        return Verdict(True, "promotion", "promotion")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def head(n: int, tree: int | None = None) -> Head:
    return Head(f"{n:040x}", f"{(tree if tree is not None else n) + 0xABC:040x}")


@pytest.fixture
def world(tmp_path):
    env = Environment(
        name="qa",
        branch="qa",
        promote_from="main",
        inventory="environments/qa/hosts.yml",
        playbook="playbooks/deploy.yml",
        retries=2,
        retry_backoff=10,
        retry_backoff_max=60,
    )
    config = Config(
        source=tmp_path / "gitopsd.yml",
        state_dir=tmp_path / "state",
        repositories=(Repository("shop", tmp_path / "shop.git", (env,)),),
    )
    store = Store(config.database)
    git, runner, clock = FakeGit(), FakeRunner(), Clock()
    scheduled: list[tuple[Look, float]] = []
    reconciler = Reconciler(
        config,
        store,
        git,
        Toolbox(run_playbook=runner),
        submit=lambda job: job(),
        schedule=lambda look, at: scheduled.append((look, at)),
        clock=clock,
        rng=random.Random(7),
        judge=FakeJudge(store),
        notify=lambda target, event: None,
    )
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
    assert set(extravars) == {
        "gitopsd_env",
        "gitopsd_repo",
        "gitopsd_commit",
        "gitopsd_tree",
        "gitopsd_previous_commit",
        "gitopsd_deploy_id",
        "gitopsd_kind",
        "gitopsd_workdir",
        "gitopsd_artifacts",
    }
    assert extravars["gitopsd_artifacts"] == {}  # no CI artifacts for this tree


def test_failures_back_off_then_stall_until_the_branch_moves(world):
    reconciler, store, git, runner, clock, scheduled = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    runner.failing.add(head(2).commit)
    look(reconciler)  # attempt 1 fails
    failure = store.failure("shop", "qa")
    assert failure.failures == 1 and not failure.stalled
    assert 8 <= failure.next_retry_at - clock.now <= 12  # 10 s +-20 %
    look(reconciler)  # too early: nothing runs
    assert len(runner.runs) == 2
    clock.now = failure.next_retry_at
    look(reconciler)  # attempt 2
    clock.now = store.failure("shop", "qa").next_retry_at
    look(reconciler)  # attempt 3 = retries exhausted -> stalled
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
    git.heads["qa"] = head(3, tree=1)  # a revert: new commit, old tree
    look(reconciler)
    assert [r.extravars["gitopsd_kind"] for r in runner.runs] == ["deploy", "deploy", "rollback"]
    assert store.last("shop", "qa").kind == "rollback"


def test_a_new_commit_with_the_deployed_tree_is_a_reapply(world):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2, tree=1)  # e.g. a promotion merge with the same tree
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


def test_a_branch_init_left_at_the_empty_tree_waits_for_its_first_promotion_without_being_judged(world):
    reconciler, store, git, runner, _clock, _scheduled = world
    placeholder = Head(f"{7:040x}", EMPTY_TREE)
    git.heads["qa"] = placeholder
    reconciler.judge.refused[placeholder.commit] = "qa only takes trees from main"
    look(reconciler)
    assert runner.runs == [] and reconciler.judge.calls == [] and store.blocked("shop", "qa") is None
    assert decide(placeholder, None, None, None, None, False, False, 0).action == "waiting"
    # Once something ran there, the empty tree is an ordinary head, judged like any other.
    deployed = _deployment(1, head(1))
    assert decide(placeholder, deployed, deployed, None, None, False, False, 0).action == "deploy"


def _deployment(n: int, commit: Head, kind: str = "deploy", result: str = "succeeded") -> Deployment:
    return Deployment(
        n, "shop", "qa", commit.commit, commit.tree, None, kind, result, "test", "t", None, None, 0.0, 1.0, 1, None, {}
    )


def test_decide_blocks_a_refused_head_before_any_stall_or_retry_and_names_the_rule():
    deployed = _deployment(1, head(1))
    stalled = FailureStatus(head(2).commit, 3, None, True, "failed three times")
    decision = decide(
        head(2),
        deployed,
        deployed,
        stalled,
        "it failed",
        False,
        False,
        0,
        blocked_reason="production only takes trees verified in staging",
    )
    assert (decision.action, decision.reason) == ("blocked", "production only takes trees verified in staging")
    assert decide(head(1), deployed, deployed, None, None, False, False, 0, blocked_reason="x").action == "in-sync"


def test_decide_takes_the_kind_from_the_verdict_not_from_a_tree_that_once_ran():
    deployed = _deployment(2, head(2))
    assert decide(head(3, tree=1), deployed, deployed, None, None, False, False, 0).kind == "deploy"
    assert decide(head(3, tree=1), deployed, deployed, None, None, True, False, 0).kind == "rollback"
    assert decide(head(3, tree=2), deployed, deployed, None, None, False, False, 0).kind == "reapply"
    failed = _deployment(3, head(4), result="failed")
    assert decide(head(5, tree=2), deployed, failed, None, None, False, False, 0).kind == "rollback"


def test_decide_says_failed_when_the_automatic_rollback_failed():
    deployed = _deployment(1, head(1))
    failure = FailureStatus(head(2).commit, 1, None, True, "automatic rollback failed: read-only", failed=True)
    decision = decide(head(2), deployed, deployed, failure, "deployment #2 failed", False, False, 0)
    assert (decision.action, decision.reason) == ("failed", "automatic rollback failed: read-only")


def test_decide_says_failed_after_a_failed_reapply_of_what_runs_until_a_later_run_succeeds():
    deployed = _deployment(1, head(1))
    reapply = _deployment(2, head(1), kind="reapply", result="failed")
    reapply = replace(reapply, outcome="failed on qa-1")
    decision = decide(head(1), deployed, reapply, None, None, False, False, 0)
    assert decision.action == "failed"
    assert decision.reason == (
        f"the reapply of {head(1).commit[:7]} failed (deployment #2: failed on qa-1); "
        "deployment #1 is the last that succeeded: `gitopsd sync qa` re-applies it again"
    )
    assert decide(head(1), deployed, reapply, None, None, False, False, 0, sync=True).kind == "reapply"
    again = _deployment(3, head(1), kind="reapply")
    assert decide(head(1), again, again, None, None, False, False, 0).action == "in-sync"


@pytest.fixture
def notes(world):
    sent: list[dict] = []
    world[0].notify = lambda target, event: sent.append(event)
    return sent


def test_a_refused_head_is_blocked_once_per_commit_and_deploys_when_the_rule_is_met(world, notes, caplog):
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    reconciler.judge.refused[head(2).commit] = "qa only takes trees from main"
    for _ in range(3):  # every sweep looks again: one log line, one notification
        look(reconciler)
    assert len(runner.runs) == 1 and store.deployed("shop", "qa").commit == head(1).commit
    block = store.blocked("shop", "qa")
    assert block.commit == head(2).commit
    assert block.reason == f"qa only takes trees from main: commit {head(2).commit[:7]} is not acceptable."
    assert [e["event"] for e in notes] == ["blocked"] and notes[0]["commit"] == head(2).commit
    assert len([r for r in caplog.records if r.getMessage().startswith("blocked")]) == 1
    assert len(reconciler.judge.calls) == 4, "a refused head is judged again on every look"
    del reconciler.judge.refused[head(2).commit]  # e.g. the source environment deployed that tree meanwhile
    look(reconciler)
    assert store.deployed("shop", "qa").commit == head(2).commit and store.blocked("shop", "qa") is None
    look(reconciler)
    calls = len(reconciler.judge.calls)
    git.heads["qa"] = head(3)
    look(reconciler)
    look(reconciler)
    assert len(reconciler.judge.calls) == calls + 1, "an accepted verdict is remembered"


def test_an_admitted_head_is_deployed_past_a_refusal_and_recorded_as_the_admission_says(world, notes):
    reconciler, store, git, runner, clock, _ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    reconciler.judge.refused[head(2).commit] = "qa only takes trees from main"
    look(reconciler)
    assert store.blocked("shop", "qa") is not None
    store.admit(
        repo="shop",
        env="qa",
        commit=head(2).commit,
        kind="override",
        actor="alice",
        reason="retry --force: hotfix",
        now=clock.now,
    )
    look(reconciler)
    last = store.last("shop", "qa")
    assert (last.commit, last.kind, last.result, last.actor, last.reason) == (
        head(2).commit,
        "deploy",
        "succeeded",
        "alice",
        "retry --force: hotfix",
    )
    assert store.blocked("shop", "qa") is None


def test_deploy_windows_are_left_to_the_hook_only_for_heads_a_push_announced(world):
    reconciler, store, git, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)  # nobody announced it: windows judged here
    reconciler.remember_cause("shop", head(2).commit, Cause("alice", "push"))
    git.heads["qa"] = head(2)
    look(reconciler)
    reconciler.remember_cause("shop", head(3).commit, Cause("bob", "retry"))
    git.heads["qa"] = head(3)
    look(reconciler)
    assert reconciler.judge.calls == [(head(1).commit, True), (head(2).commit, False), (head(3).commit, True)]


def test_a_move_back_to_a_tree_that_ran_long_ago_is_a_deploy_not_a_rollback(world):
    reconciler, store, git, runner, *_ = world
    for n, tree in ((1, 1), (2, 2), (3, 1), (4, 2)):  # T1, T2, rollback to T1, then T2 again
        git.heads["qa"] = head(n, tree=tree)
        look(reconciler)
    assert [r.extravars["gitopsd_kind"] for r in runner.runs] == ["deploy", "deploy", "rollback", "deploy"]


@pytest.fixture
def auto_rollback(world):
    reconciler, store, git, runner, *_ = world
    env = reconciler.config.repositories[0].environments[0]
    from dataclasses import replace

    repo = replace(reconciler.config.repositories[0], environments=(replace(env, auto_rollback=True),))
    reconciler.config = replace(reconciler.config, repositories=(repo,))
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    runner.failing.add(head(2).commit)
    return world


def test_a_failed_automatic_rollback_marks_the_environment_failed_says_why_and_notifies(
    auto_rollback, notes, caplog, monkeypatch
):
    reconciler, store, *_ = auto_rollback

    def unwritable(*args, **kwargs):
        raise GitError(
            "git commit-tree: error: insufficient permission for adding an object to repository database "
            "./objects\nfatal: Unable to add (null) to database"
        )

    monkeypatch.setattr(reconciler.git, "revert", unwritable)
    look(reconciler)
    failure = store.failure("shop", "qa")
    repo_path = reconciler.config.repositories[0].path
    assert failure.failed and failure.reason == (
        f"automatic rollback failed: cannot write the revert to {repo_path}: git commit-tree: error: insufficient "
        "permission for adding an object to repository database ./objects"
    )
    assert [e["event"] for e in notes] == ["deploy-failed", "rollback-failed"]
    assert notes[1]["reason"] == failure.reason and notes[1]["deployment"] == store.last("shop", "qa").id
    [line] = [r for r in caplog.records if "automatic rollback failed" in r.getMessage()]
    assert (line.repo, line.env, line.commit, line.deployment) == ("shop", "qa", head(2).commit[:7], store.last("shop", "qa").id)
    decision = reconciler._look_at(reconciler.config.repositories[0], reconciler.config.repositories[0].environments[0], "t")
    assert (decision.action, decision.reason) == ("failed", failure.reason)
    assert reconciler.running() == {}


def test_a_lost_race_for_the_automatic_rollback_is_said_too(auto_rollback, notes, monkeypatch):
    reconciler, store, *_ = auto_rollback
    monkeypatch.setattr(reconciler.git, "revert", lambda *a, **k: None)
    look(reconciler)
    assert "qa moved away from" in store.failure("shop", "qa").reason
    assert notes[-1]["event"] == "rollback-failed"


def test_an_unexpected_error_on_a_worker_is_logged_with_the_deployments_context(world, caplog, monkeypatch):
    reconciler, store, git, *_ = world
    monkeypatch.setattr(reconciler, "_record", lambda *a, **k: 1 / 0)
    git.heads["qa"] = head(1)
    look(reconciler)
    [line] = [r for r in caplog.records if r.getMessage() == "deployment worker failed"]
    assert (line.repo, line.env, line.deployment) == ("shop", "qa", store.last("shop", "qa").id)
    assert "ZeroDivisionError" in caplog.text and reconciler.running() == {}


def test_after_a_restart_a_look_at_a_head_that_did_not_move_writes_no_head(world, monkeypatch):
    reconciler, store, git, runner, clock, scheduled = world
    git.heads["qa"] = head(1)
    look(reconciler)
    restarted = Reconciler(
        reconciler.config,
        store,
        git,
        Toolbox(run_playbook=runner),
        submit=lambda job: job(),
        schedule=lambda look, at: scheduled.append((look, at)),
        clock=clock,
        rng=random.Random(7),
        judge=FakeJudge(store),
        notify=lambda target, event: None,
    )
    restarted.resume()
    written: list[tuple[str, ...]] = []
    monkeypatch.setattr(store, "record_head", lambda *args: written.append(args))
    look(restarted)
    assert written == [], "the store holds this head already: 3,000 writes before READY at 1,000 repositories"
    git.heads["qa"] = head(2)
    look(restarted)
    assert written == [("shop", "qa", head(2).commit, head(2).tree)]


def test_a_repository_is_settled_only_while_its_last_look_at_every_environment_found_each_in_sync_with_nothing_due(world):
    reconciler, store, git, runner, clock, scheduled = world
    sweep = Look("shop", None, "sweep")
    git.heads["qa"] = head(1)
    reconciler.look(sweep)  # it deploys
    assert "shop" not in reconciler.settled
    reconciler.look(sweep)
    assert "shop" in reconciler.settled, "every environment in sync: a periodic sweep may pass it over"
    look(reconciler)
    assert "shop" not in reconciler.settled, "a look at one environment says nothing of the others"
    reconciler.look(sweep)
    git.heads["qa"] = head(2)
    runner.failing.add(head(2).commit)
    reconciler.look(sweep)  # attempt 1 fails
    reconciler.look(sweep)
    assert store.failure("shop", "qa").next_retry_at > clock.now
    assert "shop" not in reconciler.settled, "a retry is due later: the sweep keeps looking"
