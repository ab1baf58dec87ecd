"""Deploying big content keeps the daemon small: files are streamed from Git into the export, never read whole (issue 28).

Real: the daemon as a process, a push through gitopsd's hooks, git's own repack, ansible-runner with the test
playbook; the daemon's memory read from /proc (its own process, not git's or Ansible's beside it).
"""

from __future__ import annotations

from tests.support import Daemon, Sandbox, run

MIB = 1 << 20


def test_deploying_a_100_mib_packed_file_grows_the_daemon_by_far_less_than_the_file(tmp_path):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    with open(
        sandbox.work / "big.bin", "wb"
    ) as big:  # sparse: cheap to make, still 100 MiB to export (read whole, it grew the daemon 3x that)
        big.truncate(100 * MIB)
    commit = sandbox.commit("a big file")
    sandbox.push("main")
    run(["git", "--git-dir", str(sandbox.repo), "repack", "-adq"])  # as `git gc` leaves it: the file in a pack
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"), timeout=120)
        idle = daemon.memory("VmRSS")
        daemon.reset_peak_memory()
        sandbox.push("main:qa")
        daemon.wait_state("qa", "in-sync", commit, timeout=300)
        growth = daemon.memory("VmHWM") - idle
    assert growth < 60 * MIB, f"deploying a 100 MiB file grew the daemon by {growth // MIB} MiB"
    assert f"{commit} deploy qa" in "\n".join(sandbox.runs())
