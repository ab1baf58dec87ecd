"""A newer head supersedes a rollout in flight over real SSH (issue 25, item 2): 4 hosts, each a real sshd on its own
loopback address; a fix pushed during batch 2 cancels the rest of the old rollout, which never reaches batch 3, and
the new head rolls out from batch 1, leaving no SSH client behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.test_rollout import batches_of
from tests.sshhosts import inventory_yaml, skip_without_sshd, ssh_clients
from tests.support import Daemon, Sandbox, git

pytestmark = [pytest.mark.slow, skip_without_sshd]
NAMES = ["web-1", "web-2", "web-3", "web-4"]


def test_a_head_pushed_during_batch_2_over_ssh_cancels_the_rest_and_rolls_out_from_batch_1(short_tmp, ssh_hosts):
    hosts = ssh_hosts(NAMES)
    if os.geteuid() == 0:  # playbooks run sandboxed as nobody: the SSH key is that user's, as it would be the service's
        for path in (hosts[0].key, Path(f"{hosts[0].key}.pub")):
            os.chown(path, 65534, 65534)
    sandbox = Sandbox(
        short_tmp,
        {"production": NAMES},
        env_options={"production": {"promote_from": "main", "auto_rollback": True, "rollout": {"batches": [1, "25%", "100%"]}}},
        sandbox_options={"read_only": [str(hosts[0].key.parent)]},
    )
    sandbox.write("environments/production/hosts.yml", inventory_yaml(hosts, group_vars={"ansible_pipelining": True}))
    sandbox.commit("production over ssh")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main")
    sandbox.command("hosts", "trust", "production", "--yes")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=180)
        sandbox.write("app.txt", "v2")
        sandbox.write("SLEEP", "4")
        old = sandbox.commit("v2, slow to roll out")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: "batch 2 of 3" in (sandbox.status()["production"]["reason"] or ""), 180, "batch 2")
        sandbox.remove("SLEEP")
        sandbox.write("app.txt", "v3")
        new = sandbox.commit("v3, the fix")
        sandbox.push("main", "main:production")
        daemon.wait_state("production", "in-sync", new, timeout=300)
    history = sandbox.history("production")
    superseded = next(d for d in history if d["commit"] == old)
    successor = next(d for d in history if d["commit"] == new)
    assert superseded["result"] == "canceled", superseded
    assert superseded["outcome"].startswith(f"superseded by the newer head {new[:7]}: batch 2/3"), superseded
    assert successor["result"] == "succeeded" and successor["id"] > superseded["id"]
    assert f"supersedes deployment #{superseded['id']} (canceled at batch 2/3)" in successor["reason"]
    # The old rollout never reached batch 3; the new one went through every batch over SSH, from the first.
    assert {r.split(".")[0] for r in sandbox.runs() if f".{superseded['id']}:" in r} <= {"web-1", "web-2"}
    assert [b["hosts"] for b in batches_of(successor, sandbox)] == [["web-1"], ["web-2"], ["web-3", "web-4"]]
    assert {r.split(".")[0] for r in sandbox.runs() if f".{successor['id']}:" in r} == set(NAMES)
    assert successor["hosts"] == dict.fromkeys(NAMES, "changed"), successor["hosts"]
    assert ssh_clients(hosts) == []
