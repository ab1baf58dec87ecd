"""Production rollout in batches, automatic rollback, unreachable and hanging hosts: the real daemon, real
ansible-playbook runs on local hosts. The checks that fail a batch are in test_rollout_checks.py."""

from __future__ import annotations

import time

import psutil

from tests.rollout_support import HOSTS, batches_of, rollout_sandbox
from tests.support import Daemon, Sandbox, git, inventory


def test_batches_of_1_then_25_percent_then_the_rest_run_in_order(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("app.txt", "v2")
        sandbox.write("SLEEP", "1")
        new = sandbox.commit("v2")
        sandbox.push("main", "main:production")
        # `gitopsd status` shows the rollout in progress.
        row = daemon.wait_for(
            lambda: (r := sandbox.status()["production"])["state"] == "deploying" and "batch 2 of 3" in (r["reason"] or "") and r,
            60,
            "batch 2 in status",
        )
        assert row["reason"] == f"rolling out {new[:7]}: batch 2 of 3"
        daemon.wait_state("production", "in-sync", new)
        assert "rolling out: batch 3/3" in daemon.log()
    last = sandbox.history("production")[0]
    assert [b["hosts"] for b in batches_of(last, sandbox)] == [["p-1"], ["p-2"], ["p-3", "p-4"]]
    assert "in 3 batches" in last["outcome"]
    logs = sandbox.command("logs", str(last["id"])).stdout
    assert "# batch 1: passed on p-1" in logs and "# batch 3: passed on p-3, p-4" in logs


def test_a_failing_first_batch_stops_the_rollout_and_rolls_back_automatically(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        sandbox.write("FAIL", "p-1")
        bad = sandbox.commit("breaks p-1")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert)
        time.sleep(2)  # the failed tree is not retried
    history = sandbox.history("production")
    failed = next(d for d in history if d["commit"] == bad)
    assert [d["commit"] for d in history].count(bad) == 1
    assert [(b["hosts"], b["result"]) for b in batches_of(failed, sandbox)] == [(["p-1"], "failed")]
    assert failed["outcome"].startswith("batch 1/3 failed")
    # Batch 2 never started: no host but p-1 ever ran the bad commit.
    bad_runs = [r for r in sandbox.runs() if bad in r]
    assert {r.split(".")[0] for r in bad_runs} == {"p-1"}
    # The rollback went to every host, and the branch's tree is the good one.
    rollback = history[0]
    assert rollback["kind"] == "rollback" and rollback["result"] == "succeeded"
    assert {r.split(".")[0] for r in sandbox.runs() if f".{rollback['id']}:" in r} == set(HOSTS)
    assert sandbox.tree(revert) == sandbox.tree(good)


def test_a_failed_deployment_and_its_automatic_rollback_each_get_a_note_saying_how_they_ended(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        sandbox.write("FAIL", "p-1")
        bad = sandbox.commit("breaks p-1")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert)
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)

    def note(commit: str) -> str:
        return git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", commit).stdout

    assert note(bad).splitlines() == [
        f"gitopsd: deploy to production failed (deployment #{failed['id']}, push by {failed['actor']}) at "
        f"{failed['finished_at'][:16].replace('T', ' ')} UTC: batch 1/3 failed: failed on p-1 (failed)"
    ]
    assert "rollback to production succeeded" in note(revert)


def test_an_unreachable_host_fails_its_batch(short_tmp):
    # No rollback: the rollbacks are tested above; this test is about the batch's outcome.
    sandbox = rollout_sandbox(short_tmp, auto_rollback=False, rollout={"batches": [2, "100%"]})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        broken_inventory = inventory("p-1", "p-3", "p-4").replace(
            "    p-1: {}", "    p-1: {}\n    p-2: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1}"
        )
        sandbox.write("environments/production/hosts.yml", broken_inventory)
        bad = sandbox.commit("p-2 is unreachable")
        sandbox.push("main", "main:production")
        failed = daemon.wait_result("production", bad, "failed")
    assert "p-2 (unreachable)" in failed["outcome"]


def test_a_timed_out_batch_leaves_no_process_behind(short_tmp):
    # One batch and no rollback: the hang is the point, not the batches (room for a busy machine in the timeout; the
    # hang, 41 s, still outlasts it).
    sandbox = rollout_sandbox(short_tmp, timeout=15, auto_rollback=False, rollout={"batches": ["100%"]})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("SLEEP", "41")
        bad = sandbox.commit("hangs")
        sandbox.push("main", "main:production")
        failed = daemon.wait_result("production", bad, "failed")
        time.sleep(0.5)
        assert not [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "41"]]
    # That row, not the newest of the commit: on a busy machine its retry began before the daemon stopped.
    assert "timed out" in failed["outcome"], failed


# One environment per plan: (its batches, its number of hosts, the batch sizes they make). Each batch is an Ansible
# run (0.7 s of CPU): the rounding and repeating of every kind of spec are tests/unit/test_rollout.py's; here real
# inventories are split as they say, a percentage (of 3 hosts: at least one, repeated), a count, and everything.
PLANS = {
    "whole": (["100%"], 4, [4]),
    "quarter": (["25%"], 3, [1, 1, 1]),
    "pair": ([2, "100%"], 5, [2, 3]),
}


def test_batch_sizes_split_real_inventories(short_tmp):
    # All three under one daemon: one start and one sandbox instead of three; each plan has its own environment.
    envs = {env: [f"{env}-{i}" for i in range(1, hosts + 1)] for env, (_, hosts, _) in PLANS.items()}
    sandbox = Sandbox(
        short_tmp, envs, env_options={env: {"rollout": {"batches": batches}} for env, (batches, _, _) in PLANS.items()}
    )
    with Daemon(sandbox) as daemon:
        for env in PLANS:
            daemon.wait_state(env, "in-sync", sandbox.head(env), timeout=180)
    for env, (_, _, expected) in PLANS.items():
        first = sandbox.history(env)[0]
        assert [len(b["hosts"]) for b in batches_of(first, sandbox)] == expected, env


def test_an_empty_inventory_fails_the_rollout_without_running_anything(short_tmp):
    sandbox = rollout_sandbox(short_tmp, auto_rollback=False, rollout={"batches": [1, "100%"]})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("environments/production/hosts.yml", "all:\n  hosts: {}\n")
        empty = sandbox.commit("no hosts left")
        sandbox.push("main", "main:production")
        row = daemon.wait_state("production", "stalled", empty)
    failed = next(d for d in sandbox.history("production") if d["commit"] == empty)
    assert "no hosts matched" in failed["outcome"]
    assert not [r for r in sandbox.runs() if empty in r]
    assert row["deployed"] != empty
