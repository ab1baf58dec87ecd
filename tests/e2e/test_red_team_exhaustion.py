"""A daemon out of open files: one clear line in its log, never a traceback per look, and it deploys again after.

(The daemon logs at debug here, where the loop's own line about it carries its traceback on purpose.)

Real: `gitopsd run` as a process, git push through the installed hook, ansible-playbook for the deployments; the
daemon's open files limit is lowered (prlimit, as a unit's LimitNOFILE would be) to what it has open at that moment.
"""

from __future__ import annotations

import time

import psutil

from tests.support import Daemon, Sandbox


def test_a_daemon_out_of_open_files_says_so_in_one_line_per_look_and_deploys_once_it_has_them_again(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["stg-1"]}, sweep_interval=2, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        process = psutil.Process(daemon.proc.pid)
        limits = process.rlimit(psutil.RLIMIT_NOFILE)
        process.rlimit(psutil.RLIMIT_NOFILE, (process.num_fds(), limits[1]))  # not one more file
        sandbox.write("app.txt", "while out of files")
        pushed = sandbox.commit("pushed while the daemon is out of files")
        sandbox.push("main", "main:qa")
        daemon.wait_for(lambda: "Too many open files" in daemon.log(), 60, "the daemon out of files")
        time.sleep(6)  # three sweeps
        process.rlimit(psutil.RLIMIT_NOFILE, limits)
        daemon.wait_result("qa", pushed, "succeeded", timeout=120)
        lines = daemon.log().splitlines()
        failed = [n for n, line in enumerate(lines) if "look failed" in line]
        assert failed, lines[-60:]
        assert "Too many open files; the next sweep looks again" in lines[failed[0]]
        assert not any(lines[n + 1].startswith("Traceback") for n in failed), lines[-60:]
        assert daemon.proc.poll() is None
