"""A daemon whose runtime folder was removed is still running: the command line says so, and what to do.

Real: `gitopsd run` as a process with its state and runtime folders, the command line as processes beside it,
and the runtime folder removed by the test (as a tmpfiles cleanup or a careless `rm -r /run/gitopsd` would).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import Daemon, Sandbox


def test_commands_that_talk_to_the_daemon_say_its_runtime_folder_is_missing_not_that_it_is_not_running(short_tmp: Path) -> None:
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        shutil.rmtree(sandbox.runtime)
        missing = f"the runtime folder {sandbox.runtime} is missing: the daemon (pid {daemon.proc.pid}) was started"
        for args in (("approve", "r1", "--note", "ok"), ("signoff", "qa", "--note", "tested"), ("ci", "rerun", "shop", "main")):
            proc = sandbox.cli(*args, check=False)
            assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
            assert missing in proc.stderr and "systemctl restart gitopsd" in proc.stderr
            assert "not running" not in proc.stderr and "Traceback" not in proc.stderr
        sandbox.write("app.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main")
        for args in (("sync", "qa"), ("promote", "main", "qa")):
            proc = sandbox.cli(*args)
            assert missing in proc.stdout and "not running" not in proc.stdout, proc.stdout
    # Stopped, it is not running: that is what is said then.
    proc = sandbox.cli("approve", "r1", "--note", "ok", check=False)
    assert proc.returncode == 1 and "the daemon is not running" in proc.stderr and "runtime folder" not in proc.stderr
