"""A restart of a converged daemon redoes no work a previous run already did (issue 28): no state copy at start.

Real: `gitopsd run` as a process, pushes through the installed hook, ansible-playbook, SQLite files.
"""

from __future__ import annotations

from tests.support import Daemon, Sandbox


def test_a_restart_within_the_backup_interval_of_the_newest_copy_makes_no_copy_at_start(short_tmp):
    copies = short_tmp / "copies"
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"backup": {"interval": "1h", "dir": str(copies)}})
    with Daemon(sandbox) as daemon:  # the first start: no copy yet, so one at once
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_for(lambda: "state database copied to" in daemon.log(), 30, "the first copy")
    [copy] = copies.glob("state-*.db")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", new)  # the loop, which makes the copies when due, went round since READY
    assert "state database copied to" not in daemon.log()
    assert list(copies.glob("state-*.db")) == [copy]
