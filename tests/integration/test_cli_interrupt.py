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

from tests.support import GITOPSD, sigint_as_at_a_terminal

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
        [*argv, "status"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=sigint_as_at_a_terminal,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "importing\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out, err) == (130, "", ""), (sys.executable, err)


def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it_while_importing(tmp_path: Path) -> None:
    """As Python does: a command started in the background of a script (SIGINT ignored) is not ended by a SIGINT."""
    (tmp_path / "argparse.py").write_text(WAITING_ARGPARSE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [*GITOPSD, "status", "--config", str(tmp_path / "none.yml")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "importing\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("x", timeout=60)  # let it go on: it was not ended meanwhile
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode not in (130, -signal.SIGINT), (proc.returncode, out, err)
