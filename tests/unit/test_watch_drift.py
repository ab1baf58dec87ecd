"""Post-deploy watch and drift detection in the core: the decision's states, the drift baseline, the
reconciler's watch rounds and drift checks with fakes behind its ports, and each engine alone behind its own.

Real: the SQLite store (in a temp folder). Fake: Git, Ansible outcomes, the HTTP and Prometheus checks, time.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gitopsd.core.decide import decide
from gitopsd.core.deployment import Toolbox
from gitopsd.core.drift import heal_delay, judge_drift, outside
from gitopsd.core.reconcile import Look
from gitopsd.core.settings import Drift, PrometheusCheck, Watch
from gitopsd.core.types import (
    Action,
    CheckResult,
    Deployment,
    DriftReport,
    Head,
    Kind,
    RunOutcome,
    TaskChange,
    Trigger,
    WatchWindow,
)
from tests.unit.test_reconciler import head, look, world  # noqa: F401 (the fixture)

NOW = 1_000_000.0


def _deployment(n: int, commit: Head) -> Deployment:
    return Deployment(
        n,
        "shop",
        "qa",
        commit.commit,
        commit.tree,
        None,
        "deploy",
        "succeeded",
        "push",
        "dev",
        None,
        None,
        NOW - 100,
        NOW - 90,
        1,
        None,
        {},
    )


def _watch(deployment_id: int, until: float, state: str = "watching") -> WatchWindow:
    return WatchWindow("shop", "qa", deployment_id, "c" * 40, "t" * 40, None, NOW - 60, until, state, "why")


def change(host: str, task: str, diff: str = "") -> TaskChange:
    return TaskChange(host, task, f"{task}|playbooks/deploy.yml:3", diff)


def ok_run(*changes: TaskChange) -> RunOutcome:
    return RunOutcome(True, "successful", 0, "succeeded on 2 hosts", {"a": "ok", "b": "ok"}, changes=changes)


# -- the decision ------------------------------------------------------------------------------------


def test_decide_says_watching_with_the_minutes_left_while_the_watch_of_the_deployed_deployment_runs():
    h = head(1)
    decision = decide(h, _deployment(5, h), None, None, None, False, False, NOW, watch=_watch(5, NOW + 11 * 60 + 30))
    assert (decision.action, decision.reason) == (Action.WATCHING, "watching, 12 min left")
    decision = decide(h, _deployment(5, h), None, None, None, False, False, NOW, watch=_watch(5, NOW + 40))
    assert decision.reason == "watching, 40 s left"


def test_decide_ignores_a_watch_of_another_deployment_or_one_whose_time_is_over():
    h = head(1)
    assert decide(h, _deployment(6, h), None, None, None, False, False, NOW, watch=_watch(5, NOW + 600)).action == Action.IN_SYNC
    assert decide(h, _deployment(5, h), None, None, None, False, False, NOW, watch=_watch(5, NOW - 1)).action == Action.IN_SYNC


def test_decide_says_watch_failed_after_a_breach_nothing_rolled_back():
    h = head(1)
    decision = decide(h, _deployment(5, h), None, None, None, False, False, NOW, watch=_watch(5, NOW + 600, "breached"))
    assert (decision.action, decision.reason) == (Action.WATCH_FAILED, "why")


def test_decide_says_drifted_only_for_a_drift_report_of_the_deployed_deployment():
    h = head(1)
    report = DriftReport("shop", "qa", 5, NOW, "drifted", "1 host drifted (a): 1 task would change", (change("a", "t"),))
    decision = decide(h, _deployment(5, h), None, None, None, False, False, NOW, drift=report)
    assert decision.action == Action.DRIFTED and "gitopsd drift qa" in (decision.reason or "")
    assert decide(h, _deployment(6, h), None, None, None, False, False, NOW, drift=report).action == Action.IN_SYNC


def test_a_failed_check_mode_run_is_drift_unknown_never_drifted():
    h = head(1)
    report = judge_drift(
        "shop",
        "qa",
        5,
        RunOutcome(False, "failed", 2, "failed on a (failed)", {"a": "failed"}, changes=(change("a", "t"),)),
        None,
        NOW,
    )
    assert report.state == "unknown" and report.changes == ()
    decision = decide(h, _deployment(5, h), None, None, None, False, False, NOW, drift=report)
    assert decision.action == Action.IN_SYNC
    assert decision.reason == "drift unknown: the check-mode run failed: failed on a (failed)"


def test_decide_heals_with_kind_heal_only_when_in_sync_and_not_busy():
    h = head(1)
    assert decide(h, _deployment(5, h), None, None, None, False, False, NOW, heal=True).kind == Kind.HEAL
    assert decide(h, _deployment(5, h), None, None, None, False, True, NOW, heal=True).action == Action.BUSY


# -- the baseline ------------------------------------------------------------------------------------


def test_the_first_successful_check_after_a_deployment_is_the_baseline_and_its_changes_are_not_drift():
    always = change("a", "run a command without changed_when")
    first = judge_drift("shop", "qa", 5, ok_run(always), None, NOW)
    assert first.state == "baseline" and first.changes == (always,)
    assert judge_drift("shop", "qa", 5, ok_run(always), first, NOW).state == "clean"


def test_changes_outside_the_baseline_are_drift_per_host_and_task():
    always = change("a", "always")
    baseline = judge_drift("shop", "qa", 5, ok_run(always, change("b", "always")), None, NOW)
    edited = change("b", "write the config", "--- before\n+++ after\n")
    report = judge_drift("shop", "qa", 5, ok_run(always, change("b", "always"), edited, edited), baseline, NOW)
    assert report.state == "drifted"
    assert report.changes == (edited,) and report.hosts == ["b"]
    assert report.reason == "1 host drifted (b): 1 task would change"
    # The same task on a host where the baseline did not have it is drift there.
    assert outside((change("b", "always"),), (change("a", "always"),)) == (change("b", "always"),)


def test_heals_in_a_row_back_off_doubling_from_one_interval():
    assert [heal_delay(60, n) for n in range(4)] == [0, 60, 120, 240]
    assert heal_delay(3600, 10) == 86400


# -- the reconciler: watch rounds ----------------------------------------------------------------------


class Checks:
    """Fake checks: each Prometheus call answers the next of `answers` (then keeps the last)."""

    def __init__(self, *answers: CheckResult):
        self.answers, self.calls = list(answers), 0

    def prometheus(self, check, commit, env):
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


GOOD = CheckResult(True, "prometheus errors", "1 sample within bounds: 0")
BAD = CheckResult(False, "prometheus errors", "errors = 7 is above the maximum 1")
DOWN = CheckResult(False, "prometheus errors", "http://127.0.0.1:9: cannot connect: refused", inconclusive=True)


@pytest.fixture
def watched(world):  # noqa: F811
    reconciler, store, git, runner, clock, scheduled = world
    notes: list[dict] = []
    reconciler.notify = lambda target, event: notes.append(event)
    env = reconciler.config.repositories[0].environments[0]
    watch = Watch(
        duration=600, interval=30, prometheus=(PrometheusCheck("http://127.0.0.1:9", "errors", max_value=1, retries=2),)
    )
    repo = replace(reconciler.config.repositories[0], environments=(replace(env, auto_rollback=True, watch=watch),))
    reconciler.config = replace(reconciler.config, repositories=(repo,))
    git.heads["qa"] = head(1)
    look(reconciler)
    git.heads["qa"] = head(2)
    look(reconciler)
    return reconciler, store, git, clock, scheduled, notes


def round_(reconciler, checks):
    reconciler.tools = Toolbox(
        run_playbook=reconciler.tools.run_playbook, check_prometheus=checks.prometheus, sleep=lambda _s: None
    )
    reconciler.look(Look("shop", "qa", Trigger.WATCH_CHECK))


def test_a_successful_deployment_starts_its_watch_and_schedules_its_first_round(watched):
    reconciler, store, git, clock, scheduled, notes = watched
    watch = store.watch("shop", "qa")
    assert watch.state == "watching" and watch.commit == head(2).commit and watch.until == clock.now + 600
    assert watch.previous_tree == head(1).tree
    assert (Look("shop", "qa", Trigger.WATCH_CHECK), clock.now + 30) in scheduled


def test_a_breach_rolls_back_through_a_revert_naming_the_watch_and_notifies(watched):
    reconciler, store, git, clock, scheduled, notes = watched
    round_(reconciler, Checks(GOOD))
    assert store.watch("shop", "qa").state == "watching"
    clock.now += 30
    round_(reconciler, Checks(BAD))
    watch = store.watch("shop", "qa")
    assert watch.state == "breached"
    assert git.heads["qa"].tree == head(1).tree  # the revert commit holds the tree that ran before
    assert store.bad_tree("shop", "qa", head(2).tree).startswith("watch of deployment #2")
    assert notes[-1]["event"] == "watch-failed" and notes[-1]["rollback_commit"] == git.heads["qa"].commit
    look(reconciler)  # the rollback deployment records the watch that failed as its reason
    last = store.last("shop", "qa")
    assert last.kind == "rollback" and last.trigger == "auto-rollback"
    assert last.reason.startswith("automatic rollback: watch of deployment #2 (") and "above the maximum 1" in last.reason


def test_an_inconclusive_prometheus_is_asked_again_then_is_a_breach_by_default(watched):
    reconciler, store, *_ = watched
    checks = Checks(DOWN)
    round_(reconciler, checks)
    assert checks.calls == 3  # the first attempt and its 2 retries
    watch = store.watch("shop", "qa")
    assert watch.state == "breached" and "(inconclusive after 3 attempts)" in watch.reason


def test_an_inconclusive_prometheus_that_answers_on_a_retry_is_no_breach(watched):
    reconciler, store, *_ = watched
    round_(reconciler, Checks(DOWN, GOOD))
    assert store.watch("shop", "qa").state == "watching"


def test_inconclusive_pass_ignores_a_prometheus_that_is_down(watched, caplog):
    reconciler, store, *_ = watched
    env = reconciler.config.repositories[0].environments[0]
    repo = replace(reconciler.config.repositories[0], environments=(replace(env, watch=replace(env.watch, inconclusive="pass")),))
    reconciler.config = replace(reconciler.config, repositories=(repo,))
    round_(reconciler, Checks(DOWN))
    assert store.watch("shop", "qa").state == "watching"
    assert "ignored (inconclusive: pass)" in caplog.text


def test_the_watch_passes_when_its_time_is_over_and_status_is_in_sync_again(watched):
    reconciler, store, git, clock, *_ = watched
    for _ in range(20):
        clock.now += 30
        round_(reconciler, Checks(GOOD))
    assert store.watch("shop", "qa").state == "passed"
    assert store.watch("shop", "qa").reason == "no breach in 10m"


def test_a_new_push_during_the_watch_ends_it_and_the_new_deployment_starts_its_own(watched):
    reconciler, store, git, clock, *_ = watched
    git.heads["qa"] = head(3)
    look(reconciler)
    watch = store.watch("shop", "qa")
    assert watch.commit == head(3).commit and watch.state == "watching"


def test_a_restarted_reconciler_resumes_the_watch_recorded_in_the_store(watched):
    reconciler, store, git, clock, scheduled, notes = watched
    scheduled.clear()
    reconciler.resume()
    assert scheduled == [(Look("shop", "qa", Trigger.WATCH_CHECK), clock.now)]


# -- the reconciler: drift checks -----------------------------------------------------------------------


@pytest.fixture
def drifting(world):  # noqa: F811
    reconciler, store, git, runner, clock, scheduled = world
    notes: list[dict] = []
    reconciler.notify = lambda target, event: notes.append(event)
    env = reconciler.config.repositories[0].environments[0]
    repo = replace(reconciler.config.repositories[0], environments=(replace(env, drift=Drift(interval=60, heal=True)),))
    reconciler.config = replace(reconciler.config, repositories=(repo,))
    git.heads["qa"] = head(1)
    look(reconciler)
    return reconciler, store, runner, clock, scheduled, notes


def check_with(reconciler, runner, outcome):
    def run(run, cancel):
        runner.runs.append(run)
        return outcome if run.check_mode else RunOutcome(True, "successful", 0, "succeeded on 1 host", {"qa-1": "ok"})

    reconciler.tools = replace(reconciler.tools, run_playbook=run)
    reconciler.look(Look("shop", "qa", Trigger.DRIFT_CHECK))


def test_a_deployment_schedules_its_baseline_check_which_runs_the_deployed_tree_in_check_mode(drifting):
    reconciler, store, runner, clock, scheduled, notes = drifting
    assert (Look("shop", "qa", Trigger.DRIFT_CHECK), clock.now) in scheduled
    check_with(reconciler, runner, ok_run(change("qa-1", "always")))
    run = runner.runs[-1]
    assert run.check_mode and run.extravars["gitopsd_deploy_id"] == "1" and run.extravars["gitopsd_kind"] == "deploy"
    assert store.drift_report("shop", "qa").state == "baseline"


def test_drift_is_reported_notified_once_and_healed_with_kind_heal(drifting):
    reconciler, store, runner, clock, scheduled, notes = drifting
    check_with(reconciler, runner, ok_run(change("qa-1", "always")))
    drifted = ok_run(change("qa-1", "always"), change("qa-1", "write the config", "-old\n+new\n"))
    check_with(reconciler, runner, drifted)
    assert store.drift_report("shop", "qa").state == "drifted"
    assert store.drifted_hosts() == {("shop", "qa"): 1}
    assert [n["event"] for n in notes] == ["drift-detected"]
    look(reconciler)  # the look after the check heals
    last = store.last("shop", "qa")
    assert (last.kind, last.trigger, last.actor) == ("heal", "heal", "gitopsd")
    assert store.drifted_hosts() == {("shop", "qa"): 0}  # a report about the deployment before the heal


def test_drift_unknown_is_never_drift_nor_healed(drifting):
    reconciler, store, runner, clock, scheduled, notes = drifting
    check_with(reconciler, runner, ok_run())
    check_with(reconciler, runner, RunOutcome(False, "failed", 4, "ansible-playbook ended without final stats"))
    assert store.drift_report("shop", "qa").state == "unknown"
    assert store.drifted_hosts() == {("shop", "qa"): 0}
    look(reconciler)
    assert store.last("shop", "qa").kind == "deploy" and notes == []


# -- the engines alone, without a reconciler ------------------------------------------------------------


def _engine_world(tmp_path, **env_settings):
    """A real store with one successful deployment of head(1) in qa, and qa's settings; the rest is faked."""
    from gitopsd.adapters.store import Store
    from gitopsd.core.settings import Environment, Repository

    env = Environment(
        name="qa",
        branch="qa",
        promote_from="main",
        inventory="environments/qa/hosts.yml",
        playbook="playbooks/deploy.yml",
        **env_settings,
    )
    repo = Repository("shop", tmp_path / "shop.git", (env,))
    store = Store(tmp_path / "state.db")
    deployment = store.begin(
        repo="shop",
        env="qa",
        commit=head(1).commit,
        tree=head(1).tree,
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="dev",
        now=NOW - 100,
    )
    store.finish(deployment, "succeeded", now=NOW - 90)
    return store, repo, env, deployment


def test_the_post_deploy_watch_is_an_engine_of_its_own_that_rolls_back_through_its_revert_port(tmp_path):
    from gitopsd.core.watching import PostDeployWatch

    store, repo, env, deployment = _engine_world(
        tmp_path,
        auto_rollback=True,
        watch=Watch(duration=600, interval=30, prometheus=(PrometheusCheck("http://127.0.0.1:9", "errors", max_value=1),)),
    )
    store.start_watch(
        WatchWindow("shop", "qa", deployment, head(1).commit, head(1).tree, "0" * 40, NOW, NOW + 600, "watching", None)
    )
    reverts, looks, notes = [], [], []
    watch = PostDeployWatch(
        store,
        tools=lambda: Toolbox(run_playbook=None, check_prometheus=Checks(BAD).prometheus),  # type: ignore[arg-type]
        revert=lambda *args: (reverts.append(args), ("f" * 40, None))[1],
        reject=lambda *args: pytest.fail("a revert rejects the tree itself"),
        notify=lambda target, event: notes.append(event),
        look_later=lambda *args: looks.append(args),
        background=lambda work: work(),
        clock=lambda: NOW + 30,
        on_change=lambda: None,
    )
    watch.due(repo, env)
    assert store.watch("shop", "qa").state == "breached"
    assert [r[3] for r in reverts] == ["0" * 40]  # back to the tree that ran before
    assert notes[-1]["event"] == "watch-failed" and notes[-1]["rollback_commit"] == "f" * 40
    assert looks == [("shop", "qa", Trigger.AUTO_ROLLBACK, NOW + 30)]


def test_drift_detection_is_an_engine_of_its_own_that_asks_for_a_heal_once_hosts_drifted(tmp_path):
    from gitopsd.core.drifting import DriftDetection

    store, repo, env, deployment = _engine_world(tmp_path, drift=Drift(interval=60, heal=True))
    outcomes = [ok_run(change("qa-1", "always")), ok_run(change("qa-1", "always"), change("qa-1", "edit"))]
    looks, notes = [], []
    drift = DriftDetection(
        store,
        head=lambda repo, env: head(1),
        run_check=lambda *args: outcomes.pop(0),
        notify=lambda target, event: notes.append(event),
        look_later=lambda *args: looks.append(args),
        background=lambda work: work(),
        clock=lambda: NOW,
        on_change=lambda: None,
    )
    drift.due(repo, env)
    assert (
        store.drift_report("shop", "qa").state == "baseline"
        and drift.heal_asked("shop", "qa", store.deployed("shop", "qa")) is None
    )
    drift.due(repo, env)
    assert store.drift_report("shop", "qa").state == "drifted" and [n["event"] for n in notes] == ["drift-detected"]
    assert drift.heal_asked("shop", "qa", store.deployed("shop", "qa")).startswith("heal: 1 host drifted (qa-1)")
    assert not drift.checking("shop", "qa") and len(looks) == 2  # each check ends with a look: a heal, a head that waited


# -- the configuration ---------------------------------------------------------------------------------


def test_watch_and_drift_settings_are_read_with_durations_and_every_mistake_is_said(tmp_path):
    from gitopsd.config import ConfigError, load
    from tests.unit.test_config import write

    repo = tmp_path / "shop.git"
    import subprocess

    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    good = write(
        tmp_path,
        f"""
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: production
        branch: production
        watch:
          for: 15m
          interval: 30s
          prometheus: {{url: "http://127.0.0.1:9090", query: errors, max: 1}}
          http: [{{url: "http://{{ansible_host}}/health"}}]
        drift: {{interval: 1h, heal: true}}
""",
    )
    env = load(good).repositories[0].environments[0]
    assert (env.watch.duration, env.watch.interval, env.watch.inconclusive) == (900, 30, "fail")
    assert env.watch.prometheus[0].retries == 2 and env.watch.http[0].url == "http://{ansible_host}/health"
    assert (env.drift.interval, env.drift.heal) == (3600, True)
    bad = write(
        tmp_path,
        f"""
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: production
        watch: {{interval: 2h, inconclusive: maybe, prometheus: [{{url: "http://p", query: q}}]}}
        drift: {{interval: soon, heal: 1}}
""",
    )
    with pytest.raises(ConfigError) as caught:
        load(bad)
    said = str(caught.value)
    for words in (
        "watch.for: is missing",
        "watch.interval: is longer than the watch",
        "watch.inconclusive: must be fail or pass, not 'maybe'",
        "watch.prometheus[0]: needs max: or min:",
        "drift.interval: must be a duration like 30s, 15m or 1h, not 'soon'",
        "drift.heal: must be true or false",
    ):
        assert words in said, said
