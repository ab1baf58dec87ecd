"""Suspend and sync in the one decision function and the reconciler core (fakes as in test_reconciler), and the
words a partial failure is reported with."""

from __future__ import annotations

import threading

from gitopsd.adapters.runner import PlaybookRun, RunOutcome, judge
from gitopsd.config import Environment
from gitopsd.core.decide import decide
from gitopsd.core.deployment import Toolbox, execute
from tests.unit.test_reconciler import head, look, world  # noqa: F401  (the fixture)


def test_a_suspended_environment_starts_nothing_until_resumed(world):  # noqa: F811
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    store.suspend("shop", "qa", actor="alice", reason="db migration", now=0)
    git.heads["qa"] = head(2)
    look(reconciler)
    assert len(runner.runs) == 1
    assert (
        decide(head(2), store.deployed("shop", "qa"), None, None, None, False, False, 0, suspended_reason="x").action
        == "suspended"
    )
    assert store.resume("shop", "qa")
    look(reconciler)
    assert [r.extravars["gitopsd_commit"] for r in runner.runs] == [head(1).commit, head(2).commit]


def test_sync_reapplies_the_deployed_commit_once_as_the_operators_doing(world):  # noqa: F811
    reconciler, store, git, runner, *_ = world
    git.heads["qa"] = head(1)
    look(reconciler)
    store.request_sync("shop", "qa", commit=head(1).commit, actor="alice", reason="host rebuilt", now=0)
    look(reconciler)
    look(reconciler)
    assert [r.extravars["gitopsd_kind"] for r in runner.runs] == ["deploy", "reapply"]
    last = store.last("shop", "qa")
    assert (last.kind, last.actor, last.trigger, last.reason) == ("reapply", "alice", "sync", "host rebuilt")
    assert store.sync_request("shop", "qa") is None


def test_a_partial_failure_says_which_hosts_failed_and_that_the_others_were_fine(tmp_path):
    ok, reason, _hosts = judge({"processed": {"prod-1": 1, "prod-2": 1}, "failures": {"prod-1": 1}}, False, "failed", 2)
    assert not ok and reason == "failed on prod-1 (failed); 1 of 2 hosts ok"
    env = Environment("production", "production", "staging", "i", "p")
    run = PlaybookRun(
        marker="m",
        workdir=tmp_path,
        playbook=tmp_path / "p",
        inventory=tmp_path / "i",
        data_dir=tmp_path / "run",
        timeout=10,
        extravars={},
    )
    tools = Toolbox(
        run_playbook=lambda _run, _cancel: RunOutcome(False, "failed", 2, reason, {"prod-1": "failed", "prod-2": "ok"})
    )
    attempt = execute(env, run, "deploy", tools, threading.Event())
    assert attempt.reason == "failed on prod-1 (failed); 1 of 2 hosts ok"
