"""A damaged, unreadable or busy state database: every command says in one line what is wrong and
what to do, never a traceback; the hook refuses with the real cause. Real SQLite files, damaged for
real; another user through setpriv."""

from __future__ import annotations

import grp
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from gitopsd.adapters.store import Store
from tests.support import GITOPSD, Sandbox, git, run


@pytest.fixture
def sandbox(make_sandbox):
    box = make_sandbox({"qa": ["qa-1"], "staging": ["staging-1"]})
    box.write("a.txt", "1")
    box.commit("one")
    box.push("main")  # main is ahead of qa: `promote main qa` has something to do
    store = Store(box.state / "state.db")
    now = time.time()
    dep = store.begin(
        repo="shop",
        env="qa",
        commit=box.head("qa"),
        tree=box.tree(box.head("qa")),
        previous_commit=None,
        kind="deploy",
        trigger="test",
        actor="test",
        now=now,
    )
    store.finish(dep, "succeeded", now=now)
    store.close()
    return box


COMMANDS = [("status",), ("history",), ("logs", "1"), ("promote", "main", "qa"), ("rollback", "qa"), ("retry", "qa")]


def damage(database) -> None:
    with open(database, "r+b") as f:
        f.write(b"this is not SQLite" * 6)  # over the first 100 bytes: the header


def only_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_damaged_state_database_is_one_line_that_says_what_to_do(sandbox, command):
    database = sandbox.state / "state.db"
    damage(database)
    line = only_line(sandbox.cli(*command, check=False))
    assert line == (
        f"gitopsd: cannot read the state database {database}: file is not a database (corrupt?). "
        "Move it aside and restart the daemon: deployments are recorded again as it converges."
    )


def test_debug_shows_the_traceback(sandbox):
    damage(sandbox.state / "state.db")
    proc = sandbox.cli("--debug", "status", check=False)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "sqlite3.DatabaseError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gitopsd: cannot read the state database")


def test_the_daemon_refuses_to_start_on_a_damaged_state_database_in_one_line(sandbox):
    database = sandbox.state / "state.db"
    damage(database)
    proc = run([*GITOPSD, "run", "--config", str(sandbox.config)], env=sandbox.environ(), check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        f"error: refusing to start: cannot read the state database {database}: file is not a database (corrupt?). Move it aside"
    ) in proc.stderr


needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("groupadd"),
    reason="running as another user needs root, setpriv and groupadd",
)


@needs_setpriv
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_unreadable_state_database_says_which_user_needs_which_group(sandbox, command):
    database = sandbox.state / "state.db"
    sandbox.root.chmod(0o755)
    sandbox.repo.chmod(0o755)
    for path in (sandbox.config, sandbox.state):
        path.chmod(0o755 if path.is_dir() else 0o644)
    subprocess.run(["chmod", "-R", "a+rwX", str(sandbox.repo)], check=True)  # promote writes its commit first
    subprocess.run(["groupadd", "-f", "gitopsd-storetest"], check=True)
    os.chown(database, 0, grp.getgrnam("gitopsd-storetest").gr_gid)
    database.chmod(0o640)  # readable by the daemon's group, which nobody is not in
    env = {
        **sandbox.environ(),
        "HOME": "/tmp",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *GITOPSD, *command, "--config", str(sandbox.config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    line = only_line(proc)
    assert line.startswith(f"gitopsd: cannot open the state database {database}: permission denied for nobody"), line
    assert line.endswith(
        f"it belongs to root:gitopsd-storetest. Run gitopsd as the user that owns {sandbox.state} (the "
        "daemon's); to read it as nobody, nobody needs the group gitopsd-storetest: usermod -aG "
        "gitopsd-storetest nobody, then log in again."
    ), line
    database.chmod(0o000)  # not even the group may read it: joining it would not help
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *GITOPSD, *command, "--config", str(sandbox.config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert only_line(proc).endswith(
        "it belongs to root:gitopsd-storetest without group read. Run gitopsd as the user "
        f"that owns {sandbox.state} (the daemon's); readers need group read access to it "
        "(folder 0750, files 0640, as the service installs them)."
    )


@needs_setpriv
def test_a_reader_in_the_daemons_group_who_runs_a_command_that_writes_is_told_to_run_it_as_the_daemons_user(sandbox):
    """`retry` writes the store: a member of the group that reads it is not told to join that group again."""
    database = sandbox.state / "state.db"
    sandbox.root.chmod(0o755)
    for path in (sandbox.config, sandbox.state, sandbox.repo):
        path.chmod(0o755 if path.is_dir() else 0o644)
    subprocess.run(["groupadd", "-f", "gitopsd-storetest"], check=True)
    gid = grp.getgrnam("gitopsd-storetest").gr_gid
    os.chown(database, 0, gid)
    database.chmod(0o640)  # as the service installs it: the group reads, only the owner writes
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            f"--groups={gid}",
            *GITOPSD,
            "retry",
            "qa",
            "--config",
            str(sandbox.config),
        ],
        capture_output=True,
        text=True,
        env={**sandbox.environ(), "HOME": "/tmp"},
        check=False,
    )
    line = only_line(proc)
    assert line.startswith(f"gitopsd: cannot write the state database {database}: permission denied for nobody"), line
    assert "usermod" not in line and line.endswith(
        f"it belongs to root:gitopsd-storetest, and only its owner writes it. Run gitopsd as the user that owns "
        f"{sandbox.state} (the daemon's)."
    ), line


@needs_setpriv
def test_a_state_database_root_made_in_the_daemons_folder_names_its_owner_and_the_chown_that_fixes_it(sandbox):
    """`gitopsd init` or `db upgrade` as root before the service first started: the daemon's user must be told whose
    file it is and how to give it back, not to run as root."""
    database = sandbox.state / "state.db"
    for path in (sandbox.root, sandbox.repo):
        path.chmod(0o755)
    sandbox.config.chmod(0o644)
    os.chown(sandbox.state, 65534, 65534)  # the daemon's user's folder (nobody here), as install-service makes it
    database.chmod(0o600)  # but the database is root's
    env = {**sandbox.environ(), "HOME": "/tmp"}
    argv = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        *GITOPSD,
        "db",
        "upgrade",
        "--config",
        str(sandbox.config),
    ]
    line = only_line(subprocess.run(argv, capture_output=True, text=True, env=env, check=False))
    assert line.startswith(f"gitopsd: cannot open the state database {database}: permission denied for nobody"), line
    assert line.endswith(
        f"it belongs to root:root, though the state folder {sandbox.state} is nobody's (a command run "
        f"as root made it). Give it back to the daemon's user: chown -R nobody: {sandbox.state}"
    ), line
    subprocess.run(["chown", "-R", "nobody:", str(sandbox.state)], check=True)  # the command it gave
    assert subprocess.run(argv, capture_output=True, text=True, env=env, check=False).returncode == 0


def hook(sandbox: Sandbox, *, user: list[str] = ()) -> subprocess.CompletedProcess[str]:
    """The pre-receive hook as the shim runs it, for a push of main to qa."""
    entry = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.entry").stdout.strip()
    return subprocess.run(
        [
            *user,
            sys.executable,
            "-I",
            "-S",
            entry,
            "--config",
            str(sandbox.config),
            "--database",
            str(sandbox.state / "state.db"),
        ],
        input=f"{sandbox.head('qa')} {sandbox.head('main')} refs/heads/qa\n",
        cwd=sandbox.repo,
        capture_output=True,
        text=True,
        env=sandbox.environ(),
        check=False,
    )


def test_the_hook_says_a_damaged_database_needs_an_operator_not_a_group(sandbox):
    damage(sandbox.state / "state.db")
    proc = hook(sandbox)
    assert proc.returncode == 1
    assert "cannot be read (file is not a database)" in proc.stderr
    assert "The file is damaged. Ask an operator to look at it" in proc.stderr
    assert "usermod" not in proc.stderr


def test_the_hook_says_a_busy_database_needs_another_try(sandbox):
    holder = sqlite3.connect(sandbox.state / "state.db", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")  # held until closed: what a stuck writer does
        proc = hook(sandbox)
    finally:
        holder.close()
    assert proc.returncode == 1, proc.stderr
    assert "cannot be read (database is locked)" in proc.stderr
    assert "Another process holds the file just now. Push again in a moment." in proc.stderr
    assert "usermod" not in proc.stderr
