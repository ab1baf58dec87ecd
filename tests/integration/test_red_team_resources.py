"""A run cannot take the deploy server's processes or memory from the daemon and the other environments.

Real: bubblewrap, ansible-runner, ansible-playbook with a local host; the playbook forks until it cannot. The unit
as install-service writes it (into a root folder), checked by systemd-analyze.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

import pytest

from gitopsd.adapters.sandbox import RUN_PROCESSES
from tests.integration.test_install_service import system_root, write_config
from tests.integration.test_sandbox import Server, shell_play
from tests.support import GITOPSD, run, unix_users

RUNNER = "gt-rtres-run"  # the bound is the run user's processes all together: this test's runs have a user of their own


@pytest.mark.skipif(
    shutil.which("bwrap") is None or os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="bubblewrap, and root to run as a user of this test's own (the bound counts every process of that user: "
    "the other tests' runs as nobody would meet it)",
)
def test_a_run_that_forks_without_end_stops_at_its_bound_and_is_the_first_the_kernel_kills_for_memory(tmp_path):
    server = Server(tmp_path)
    out = server.out
    forks = RUN_PROCESSES + 200
    with unix_users((RUNNER,), "gt-rtres"):
        outcome = server.run(
            shell_play(
                f"cat /proc/self/oom_score_adj > {out}/oom; i=0; while [ $i -lt {forks} ]; do "
                f"sleep 120 & i=$((i+1)); echo $i > {out}/forks; done"
            ),
            policy=replace(server.policy(), user=RUNNER),
        )
    server.store.close()
    assert not outcome.ok  # the shell could not fork any more: its task failed
    started = int((out / "forks").read_text())
    assert 10 < started < RUN_PROCESSES, started
    assert (out / "oom").read_text().strip() == "1000"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_service_goes_on_when_the_kernel_kills_a_run_for_memory(tmp_path):
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    run([*GITOPSD, "install-service", "--root", str(root), "--user", "gt-rtres-svc"])
    unit = root / "etc/systemd/system/gitopsd.service"
    assert "OOMPolicy=continue" in unit.read_text().splitlines()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
