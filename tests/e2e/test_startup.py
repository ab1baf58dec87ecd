"""Starting the daemon: signals that come before it is ready, and a state database that was lost.

The daemon is a real process (`gitopsd run`), pushed to and deployed with real ansible-playbook runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox

HUP = 1 << (signal.SIGHUP - 1)


def signal_masks(pid: int) -> dict[str, int]:
    """SigBlk, SigIgn and SigCgt of a process, as bit masks."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))}


@pytest.mark.parametrize("entry", ["python -m gitopsd", "gitopsd", "gitopsd --config FILE run"])
def test_sighup_from_the_first_moment_neither_kills_the_daemon_nor_keeps_it_from_getting_ready(short_tmp, entry):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)  # the start is the subject, not a deployment
    daemon = Daemon.__new__(Daemon)  # as Daemon() does, but started here so the signals can follow at once
    Daemon.started.append(daemon)
    daemon.sandbox, daemon.log_path = sandbox, sandbox.root / "daemon.log"
    daemon._log = open(daemon.log_path, "w")  # noqa: SIM115 (the daemon writes to it until stop)
    argv = [sys.executable, "-m", "gitopsd"] if entry.startswith("python") else [str(Path(sys.executable).parent / "gitopsd")]
    command = (
        ["--config", str(sandbox.config), "run"]
        if entry.endswith("run")  # global options go before it too
        else ["run", "--config", str(sandbox.config)]
    )
    daemon.proc = subprocess.Popen(
        [*argv, *command, "--log-level", "debug"],
        stdout=daemon._log,
        stderr=subprocess.STDOUT,
        env=sandbox.environ(),
        start_new_session=True,
    )
    pid = daemon.proc.pid
    # The process holds SIGHUP (blocked or caught) before it loads the daemon's heavy modules:
    # from then on no SIGHUP can end it. Before that there is only the interpreter's own start.
    # Each look reads the modules loaded, then the masks: heavy modules seen loaded while SIGHUP was still not held
    # are the failure. (Looking at the modules once the signal is held would fail whenever this test was kept off
    # the CPU until the daemon had gone on importing: seen at load 15.)
    while True:
        maps = Path(f"/proc/{pid}/maps").read_text()
        masks = signal_masks(pid)
        if (masks["SigBlk"] | masks["SigCgt"] | masks["SigIgn"]) & HUP:
            break
        assert "pygit2" not in maps and "_sqlite3" not in maps, "SIGHUP was held only after the command line's imports"
        assert daemon.proc.poll() is None, daemon.log()
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:
        os.kill(pid, signal.SIGHUP)
        sent += 1
        time.sleep(0.01)
    assert daemon.proc.poll() is None, f"killed by an early SIGHUP ({daemon.proc.returncode}):\n{daemon.log()}"
    daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    daemon.wait_for(lambda: "gitopsd started" in daemon.log(), 30, "ready")
    assert sent > 50
    code = daemon.stop()
    assert code == 0, f"stopped with {code}:\n{daemon.log()[-4000:]}"
    assert "SIGHUP came while gitopsd was starting: the configuration is read again once it runs" in daemon.log()


def test_a_lost_state_database_never_reuses_deployment_ids_and_every_environment_converges_again(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["staging-1"]}, env_options={"staging": {"promote_from": "main"}})
    with Daemon(sandbox) as daemon:
        for env in ("qa", "staging"):
            daemon.wait_state(env, "in-sync", sandbox.head(env))
    before = sandbox.history()
    folders = sorted(int(p.name) for p in (sandbox.state / "deployments").iterdir() if p.name.isdigit())
    assert folders and max(folders) == max(d["id"] for d in before)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (sandbox.state / name).unlink(missing_ok=True)
    with Daemon(sandbox) as daemon:
        for env in ("qa", "staging"):
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        log = daemon.log()
    assert (
        f"{sandbox.state / 'state.db'} is new or was reset: {len(folders)} earlier deployment folder"
        f"{'s' if len(folders) != 1 else ''} found in {sandbox.state / 'deployments'}; deployment ids continue "
        f"from {max(folders) + 1}; every environment is deployed again as it converges"
    ) in log
    assert "File exists" not in log
    after = sandbox.history()
    assert {d["env"] for d in after if d["result"] == "succeeded"} == {"qa", "staging"}
    assert min(d["id"] for d in after) > max(folders)


@pytest.mark.parametrize("entry", ["python -m gitopsd", "gitopsd"])
def test_gitopsd_run_holds_sighup_from_the_first_line_of_gitopsd_before_the_command_line_is_imported(entry):
    # What runs before gitopsd/__init__.py is only the interpreter's own start (no Python program can hold a signal
    # then); from that line on, until the daemon's handlers are in place, SIGHUP is held, not fatal.
    probe = (
        "import signal, sys; import gitopsd; "
        "print(signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, []), 'gitopsd.cli.main' in sys.modules)"
    )
    argv0 = "-m" if entry.startswith("python") else str(Path(sys.executable).parent / "gitopsd")
    held = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv = [{argv0!r}, 'run']; {probe}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert held == ["True", "False"]
    other = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv = [{argv0!r}, 'status']; {probe}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert other == ["False", "False"]  # other commands keep Ctrl-C and the default SIGHUP


@pytest.mark.parametrize(
    "options", [["--config", "/etc/x.yml"], ["--config=/etc/x.yml"], ["--debug"], ["--debug", "--config", "run"]]
)
def test_gitopsd_run_holds_sighup_from_the_first_line_of_gitopsd_also_after_global_options(options):
    # argparse takes --config and --debug before the command too: `gitopsd --config FILE run` once held SIGHUP only
    # after the command line's imports (about 0.2 s here), and a SIGHUP meanwhile ended the daemon.
    probe = (
        "import signal, sys; import gitopsd; "
        "print(signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, []), 'gitopsd.cli.main' in sys.modules)"
    )
    for command, held in (("run", "True"), ("status", "False")):
        argv = ["-m", *options, command]
        out = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.argv = {argv!r}; {probe}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == [held, "False"], (argv, out)
