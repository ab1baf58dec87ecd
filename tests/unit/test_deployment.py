"""What a deployment's record says happened to each host (core/deployment.py), with a faked Ansible.

Faked: the playbook runs (RunOutcome values as the runner judges them) and the inventory. Real: the
batches, the stop at the first failing batch, and the host states that reach `history --json`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gitopsd.core.deployment import HOST_STATES, Toolbox, execute
from gitopsd.core.settings import Environment, Rollout
from gitopsd.core.types import HostInfo, PlaybookRun, RunOutcome, TaskChange

HOSTS = ["p-1", "p-2", "p-3", "p-4"]


def rollout(tmp_path: Path, outcomes: list[RunOutcome], cancel: threading.Event | None = None) -> dict[str, str]:
    """Deploy to HOSTS in batches of 1, 1, then the rest, each batch's run ending as the next of `outcomes` says."""
    env = Environment("production", "production", "staging", "i", "p", rollout=Rollout(batches=(1, 1, "100%")))
    run = PlaybookRun(
        marker="m",
        workdir=tmp_path,
        playbook=tmp_path / "p",
        inventory=tmp_path / "i",
        data_dir=tmp_path / "run",
        timeout=10,
        extravars={},
    )
    left = list(outcomes)
    tools = Toolbox(
        run_playbook=lambda _run, _cancel: left.pop(0), hosts_of=lambda _run, _names, _cancel: [HostInfo(h, {}) for h in HOSTS]
    )
    attempt = execute(env, run, "deploy", tools, cancel or threading.Event())
    assert set(attempt.hosts.values()) <= set(HOST_STATES)
    return attempt.hosts


def test_a_host_whose_run_changed_something_is_changed_and_one_that_changed_nothing_is_ok(tmp_path):
    changed = RunOutcome(True, "successful", 0, "succeeded on 1 host", {"p-1": "ok"}, changes=(TaskChange("p-1", "copy", "k"),))
    same = RunOutcome(True, "successful", 0, "succeeded on 1 host", {"p-2": "ok"})
    rest = RunOutcome(
        True, "successful", 0, "succeeded on 2 hosts", {"p-3": "ok", "p-4": "ok"}, changes=(TaskChange("p-4", "copy", "k"),)
    )
    assert rollout(tmp_path, [changed, same, rest]) == {"p-1": "changed", "p-2": "ok", "p-3": "ok", "p-4": "changed"}


def test_a_batch_that_timed_out_fails_its_hosts_and_later_batches_hosts_are_skipped(tmp_path):
    first = RunOutcome(True, "successful", 0, "succeeded on 1 host", {"p-1": "ok"})
    timed_out = RunOutcome(False, "timeout", 254, "run timed out")  # no final stats: no word per host
    assert rollout(tmp_path, [first, timed_out]) == {"p-1": "ok", "p-2": "failed", "p-3": "skipped", "p-4": "skipped"}


def test_an_unreachable_host_stays_unreachable_and_later_batches_are_skipped(tmp_path):
    dark = RunOutcome(False, "failed", 4, "failed on p-1 (unreachable)", {"p-1": "unreachable"})
    assert rollout(tmp_path, [dark]) == {"p-1": "unreachable", "p-2": "skipped", "p-3": "skipped", "p-4": "skipped"}


def test_a_canceled_batch_says_canceled_and_later_batches_hosts_are_skipped(tmp_path):
    first = RunOutcome(True, "successful", 0, "succeeded on 1 host", {"p-1": "ok"})
    canceled = RunOutcome(False, "canceled", 254, "run was canceled")
    assert rollout(tmp_path, [first, canceled]) == {"p-1": "ok", "p-2": "canceled", "p-3": "skipped", "p-4": "skipped"}
