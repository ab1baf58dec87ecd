"""A pushed inventory that runs code while it is read: the real daemon, two environments at once.

The inventory is read in the deployment's sandbox, in a child process with the deployment's time
limit: it can fail its own deployment, never hold up another environment, the daemon's stop, or
leave a process behind.
"""

from __future__ import annotations

import time

import psutil
import pytest

from tests.support import Daemon, Sandbox

pytestmark = pytest.mark.slow

# An inventory script: Ansible runs it while it reads the inventory (and `sleep 317` when asked to).
SCRIPT = """#!/bin/sh
{sleep}
echo '{{"all": {{"hosts": ["qa-1"], "vars": {{"ansible_connection": "local"}}}}, "_meta": {{"hostvars": {{}}}}}}'
"""


def sleepers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "317" in p.info["cmdline"]]


def test_a_wedged_inventory_fails_its_own_deployment_only_and_never_survives(short_tmp):
    # Two environments that both take trees from main; both roll out in batches, so both read their inventory. Only
    # qa's time limit is short (its inventory is what must be stopped): dev's run took over 6 s at load 15.
    rollout = {"rollout": {"batches": ["100%"]}, "promote_from": "main", "timeout": 6, "retries": 0}
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "dev": ["dev-1"]},
        env_options={"qa": {**rollout, "inventory": "environments/qa/inventory.sh"}, "dev": {**rollout, "timeout": 120}},
    )
    script = sandbox.work / "environments" / "qa" / "inventory.sh"
    sandbox.write("environments/qa/inventory.sh", SCRIPT.format(sleep=""))
    script.chmod(0o755)
    sandbox.commit("qa's inventory is a script")
    sandbox.push("main", "main:qa", "main:dev")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_state("dev", "in-sync", sandbox.head("dev"))
        sandbox.write("environments/qa/inventory.sh", SCRIPT.format(sleep="sleep 317"))
        wedged = sandbox.commit("qa's inventory runs a command while it is read")
        sandbox.push("main", "main:qa", "main:dev")
        daemon.wait_for(sleepers, 30, "qa's inventory lookup running")
        # dev deploys the same commit meanwhile: qa's inventory holds no lock anyone else needs.
        daemon.wait_state("dev", "in-sync", wedged, timeout=30)
        assert sleepers(), "qa's inventory was still being read while dev deployed"
        failed = daemon.wait_result("qa", wedged, "failed", timeout=30)
        assert "reading the inventory was stopped after 6s" in failed["outcome"]
        assert sleepers() == []
        sandbox.write("SLEEP", "2")
        slow = sandbox.commit("again, and stop the daemon while it reads")
        sandbox.push("main", "main:qa")
        daemon.wait_for(sleepers, 30, "qa's inventory lookup running again")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 15  # stop_grace is 5 s: canceled, not waited out
    assert sleepers() == []
    assert slow != wedged
