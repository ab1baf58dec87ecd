"""A production rollout over real SSH: 4 hosts, each a real sshd on its own loopback address, one of
which goes down in the middle of the rollout. The batch fails however ansible-playbook exits, the
automatic rollback runs, and no process of the deployment survives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sshhosts import inventory_yaml, skip_without_sshd, ssh_clients
from tests.support import Daemon, Sandbox

pytestmark = [pytest.mark.slow, skip_without_sshd]
NAMES = ["web-1", "web-2", "web-3", "web-4"]


def test_a_host_going_down_mid_rollout_fails_its_batch_and_the_rollback_runs(short_tmp, ssh_hosts):
    hosts = ssh_hosts(NAMES)
    if os.geteuid() == 0:  # playbooks run sandboxed as nobody: the SSH key is that user's, as it would be the service's
        for path in (hosts[0].key, Path(f"{hosts[0].key}.pub")):
            os.chown(path, 65534, 65534)
    # production takes trees from main: the branch is moved past the hooks below, and the daemon re-judges it.
    sandbox = Sandbox(
        short_tmp,
        {"production": NAMES},
        env_options={
            "production": {
                "promote_from": "main",
                "auto_rollback": True,
                "rollout": {"batches": [1, 1, "100%"]},
                "retries": 3,
                "retry_backoff": 1,
            }
        },
        sandbox_options={"read_only": [str(hosts[0].key.parent)]},
    )
    sandbox.write("environments/production/hosts.yml", inventory_yaml(hosts, group_vars={"ansible_pipelining": True}))
    sandbox.commit("production over ssh")
    sandbox.push("main")
    from tests.support import git

    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main")
    sandbox.command("hosts", "trust", "production", "--yes")  # host keys are checked whatever the inventory says
    with Daemon(sandbox) as daemon:
        good = sandbox.head("production")
        daemon.wait_state("production", "in-sync", good, timeout=120)
        sandbox.write("SLEEP", "3")
        bad = sandbox.commit("v2, slow enough to pull a plug")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: "rolling out: batch 1/3" in daemon.log(), 60, "batch 1")
        hosts[2].stop()  # web-3 goes down while batch 1 runs
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 120, "automatic revert")
        hosts[2].start()  # it comes back; the rollback (retried if needed) reaches it
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert, timeout=120)
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
    assert failed["result"] == "failed" and "batch 3/3 failed" in failed["outcome"]
    assert "web-3 (unreachable)" in failed["outcome"]
    assert sandbox.history("production")[0]["kind"] == "rollback"
    assert sandbox.tree(revert) == sandbox.tree(good)
    # Every host now runs the good tree again (the last run on each was the rollback).
    rollback_id = sandbox.history("production")[0]["id"]
    assert {r.split(".")[0] for r in sandbox.runs() if f".{rollback_id}:" in r} == set(NAMES)
    assert ssh_clients(hosts) == []
