"""Ctrl-C at any moment of a command: no traceback, exit 130.

Real: the installed `gitopsd` script and `python -m gitopsd` as processes, a real SIGINT. To stop the command while it
is still importing, a module it imports first (argparse) is found first on PYTHONPATH: it says so and waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support import GITOPSD

WAITING_ARGPARSE = """\
import os, sys
sys.stdout.write("importing\\n")
sys.stdout.flush()
os.read(0, 1)  # until the test's Ctrl-C
"""


@pytest.mark.parametrize("launcher", ["script", "module"])
def test_ctrl_c_while_the_command_is_still_importing_prints_no_traceback_and_exits_130(tmp_path: Path, launcher: str) -> None:
    (tmp_path / "argparse.py").write_text(WAITING_ARGPARSE)
    argv = [str(Path(sysconfig.get_path("scripts")) / "gitopsd")] if launcher == "script" else list(GITOPSD)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [*argv, "status"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "importing\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out, err) == (130, "", ""), (sys.executable, err)
