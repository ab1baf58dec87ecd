"""The service layout of docs/install.md's Permissions section, with real Unix users.

Real: the users gt-git (pushes) and gt-svc (the daemon) and their group gt-gitopsd, created here
and removed afterwards; a repository owned by gt-git; the daemon as a process running as gt-svc;
pushes as gt-git through the real hook; `gitopsd doctor` as root.

The test's own virtualenv lives under /root (mode 0700), which other users cannot enter. So a
virtualenv is built from Debian's /usr/bin/python3 (3.11, like the project's) in a folder every
user may read, and a .pth file there adds the project's installed packages (plain Python files
and 3.11 extension modules, which Debian's 3.11 loads as well); the playbook sandbox is shown
that folder read-only (sandbox.read_only).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import TEST_PLAYBOOK, inventory, python_for_everyone, service_users, sh

GIT_USER, SVC_USER, GROUP = "gt-git", "gt-svc", "gt-gitopsd"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "userdel")),
    reason="real Unix users need root, setpriv, useradd and groupadd",
)


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Path]]:
    """The users, their homes, and a Python every user may run, in a folder every user may enter."""
    base = Path(tempfile.mkdtemp(prefix="gt-perm-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with service_users(base, GIT_USER, SVC_USER, GROUP):
            yield {"base": base, "bin": python_for_everyone(base / "venv")}
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Server:
    """A deploy server: config, state and runtime folders, one repository owned by gt-git, a daemon as gt-svc."""

    def __init__(self, world: dict[str, Path], name: str):
        self.root = world["base"] / name
        self.bin = world["bin"]
        self.root.mkdir(mode=0o755)
        self.repo, self.config = self.root / "shop.git", self.root / "etc" / "gitopsd.yml"
        self.state, self.runtime, self.out = self.root / "state", self.root / "run", self.root / "out"
        for folder in (self.state, self.runtime):  # as systemd's StateDirectory= and RuntimeDirectory= make them
            folder.mkdir(mode=0o750)
            shutil.chown(folder, SVC_USER, GROUP)
        self.out.mkdir()
        self.out.chmod(0o777)  # the playbook runs as gt-svc
        self.config.parent.mkdir()
        self.home_git = Path(pwd.getpwnam(GIT_USER).pw_dir)
        self.work = self.home_git / f"{name}-work"
        self.daemon: subprocess.Popen[str] | None = None
        self.write_config()
        sh(["git", "init", "-q", "--bare", "--initial-branch=main", str(self.repo)])
        sh(["chown", "-R", f"{GIT_USER}:{GIT_USER}", str(self.repo)])  # as a git server makes it: the git user's
        self.as_git(["git", "clone", "-q", str(self.repo), str(self.work)])
        self.as_git(["git", "-C", str(self.work), "checkout", "-q", "-b", "main"])
        self.write("playbooks/deploy.yml", TEST_PLAYBOOK)
        self.write("environments/qa/hosts.yml", inventory("qa-1"))
        self.commit_and_push("initial content", "main", "main:qa")

    def write_config(self, **top: Any) -> None:
        data = {
            "state_dir": str(self.state),
            "runtime_dir": str(self.runtime),
            "sweep_interval": 300,
            "stop_grace": 5,
            "sandbox": {"writable": [str(self.out)], "read_only": [sysconfig.get_paths()["purelib"]]},
            "repositories": [
                {
                    "name": "shop",
                    "path": str(self.repo),
                    "environments": [{"name": "qa", "auto_rollback": True, "retries": 1, "retry_backoff": 1, "timeout": 120}],
                }
            ],
            **top,
        }
        self.config.write_text("# the deploy server's gitopsd config\n" + yaml.safe_dump(data, sort_keys=False))
        shutil.chown(self.config, "root", GROUP)
        self.config.chmod(0o640)

    def env(self, user: str) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": pwd.getpwnam(user).pw_dir,
            "LANG": "C.UTF-8",
            "GITOPSD_TEST_OUT": str(self.out),
            "GIT_AUTHOR_NAME": "Dev",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Dev",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
        }

    def as_user(self, user: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        entry = pwd.getpwnam(user)
        return sh(
            ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *argv],
            check=check,
            env=self.env(user),
            cwd="/",
        )

    def as_git(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.as_user(GIT_USER, argv, check)

    def gitopsd(self, *args: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / "gitopsd"), *args, "--config", str(self.config)]
        if user == "root":  # root's HOME is a folder of the test: its ~/.gitconfig is not touched
            return sh(argv, check=check, env={**self.env("root"), "HOME": str(self.root)})
        return self.as_user(user, argv, check)

    def doctor(self) -> subprocess.CompletedProcess[str]:
        return self.gitopsd("doctor", "--git-user", GIT_USER, "--service-user", SVC_USER, check=False)

    def write(self, path: str, content: str) -> None:
        self.as_git(["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"', "-", str(self.work / path), content])

    def commit_and_push(self, message: str, *refspecs: str) -> str:
        self.as_git(["git", "-C", str(self.work), "add", "-A"])
        self.as_git(["git", "-C", str(self.work), "commit", "-q", "--allow-empty", "-m", message])
        self.as_git(["git", "-C", str(self.work), "push", "-q", "origin", *refspecs])
        return self.as_git(["git", "-C", str(self.work), "rev-parse", "HEAD"]).stdout.strip()

    def head(self, branch: str) -> str:
        return self.as_git(["git", "-C", str(self.repo), "rev-parse", branch]).stdout.strip()

    def status(self) -> dict[str, Any]:
        rows = json.loads(self.gitopsd("status", "--json", user=SVC_USER).stdout)
        return {row["env"]: row for row in rows}

    def start(self) -> None:
        entry = pwd.getpwnam(SVC_USER)
        self.log = self.root / "daemon.log"
        self.daemon = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
                str(self.bin / "python"),
                "-m",
                "gitopsd",
                "run",
                "--config",
                str(self.config),
                "--log-level",
                "debug",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.env(SVC_USER),
            cwd="/",
            start_new_session=True,
        )
        self.wait_for(lambda: (self.runtime / "nudge.sock").exists(), "the daemon's socket")

    def wait_for(self, predicate: Any, what: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.daemon is None or self.daemon.poll() is None, f"daemon exited:\n{self.log.read_text()}"
            time.sleep(0.2)
        runs = "".join(p.read_text()[-1500:] for p in sorted(self.state.glob("deployments/*/*/artifacts/run/stdout")))
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text() if self.daemon else ''}\n{runs}")

    def wait_state(self, env: str, state: str, desired: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.status()[env]
            return row if row["state"] == state and row["desired"] == desired else None

        return self.wait_for(check, f"{env} {state} at {desired[:7]}")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()


@pytest.fixture
def server(world: dict[str, Path], request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(world, request.node.name[5:40])
    yield s
    s.stop()


def problems(doctor: subprocess.CompletedProcess[str]) -> list[str]:
    """Each PROBLEM line of doctor's output, with its fix line."""
    lines = doctor.stdout.splitlines()
    return [
        f"{line}\n{lines[i + 1]}" if i + 1 < len(lines) and "fix:" in lines[i + 1] else line
        for i, line in enumerate(lines)
        if line.startswith("PROBLEM")
    ]


def test_the_daemon_as_its_user_deploys_pushes_of_the_git_user_and_rolls_back_and_doctor_names_each_fault(server):
    installed = server.gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    assert f"permissions: {server.repo} belongs to {GIT_USER}:{GROUP}, group-writable, setgid folders" in installed.stdout
    assert "warning" not in installed.stdout, installed.stdout
    server.start()
    first = server.head("qa")
    server.wait_state("qa", "in-sync", first)
    assert "Traceback" not in server.log.read_text()

    # A push as the git user, through the hook (which reads the state and nudges the daemon as gt-git).
    server.write("a.txt", "1")
    second = server.commit_and_push("second", "main", "main:qa")
    row = server.wait_state("qa", "in-sync", second)
    assert row["deployed"] == second

    # A failing push: the daemon (gt-svc) writes the revert commit into gt-git's repository.
    server.write("FAIL", "yes")
    bad = server.commit_and_push("broken", "main", "main:qa")
    revert = server.wait_for(lambda: (h := server.head("qa")) != bad and h, "the automatic rollback's revert")
    server.wait_state("qa", "in-sync", revert)
    assert server.as_git(["git", "-C", str(server.repo), "log", "-1", "--format=%an %s", revert]).stdout.startswith(
        'gitopsd Revert "broken"'
    )
    assert server.as_git(["git", "-C", str(server.repo), "fsck", "--no-dangling"]).returncode == 0  # readable by both
    history = json.loads(server.gitopsd("history", "qa", "--json", user=SVC_USER).stdout)
    assert history[0]["kind"] == "rollback" and history[0]["result"] == "succeeded"

    doctor = server.doctor()
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1] == "all ok"

    # One fault at a time: doctor names it and the command that fixes it; nothing ends in a traceback.
    sh(["gpasswd", "-d", GIT_USER, GROUP])
    doctor = server.doctor()
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert (
        f"PROBLEM  {GIT_USER} is in the daemon's group {GROUP} (reads the state, sends nudges)\n"
        f"         fix: usermod -aG {GROUP} {GIT_USER}"
    ) in problems(doctor)
    sh(["usermod", "-aG", GROUP, GIT_USER])

    (server.repo / "objects").chmod(0o755)
    doctor = server.doctor()
    found = "\n".join(problems(doctor))
    assert f"PROBLEM  {SVC_USER} cannot write {server.repo / 'objects'} (drwxr-xr-x {GIT_USER}:{GROUP})" in found
    assert (
        f"fix: {server.bin / 'gitopsd'} install-hooks {server.repo} --config {server.config} --git-user {GIT_USER} "
        f"--service-user {SVC_USER}   # as root"
    ) in found
    server.gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    assert server.doctor().returncode == 0

    hidden = str(Path(sys.executable))  # the project's venv, under /root: gt-git cannot run it
    sh(["git", "config", "--file", str(server.repo / "config"), "gitopsd.python", hidden])
    doctor = server.doctor()
    found = "\n".join(problems(doctor))
    assert f"PROBLEM  the hook's Python {hidden} cannot run" in found and f"as {GIT_USER}" in found, doctor.stdout
    assert f"fix: {server.bin / 'gitopsd'} install-hooks {server.repo} --config {server.config}" in found
    sh(["git", "config", "--file", str(server.repo / "config"), "gitopsd.python", str(server.bin / "python")])

    # Item 14: a stale database path (state_dir changed since install-hooks); the daemon fixes it on reload.
    sh(["git", "config", "--file", str(server.repo / "config"), "gitopsd.database", "/var/lib/old/state.db"])
    found = "\n".join(problems(server.doctor()))
    assert (
        f"PROBLEM  the hook's gitopsd.database is /var/lib/old/state.db, but the config says {server.state / 'state.db'}"
    ) in found
    os.kill(server.daemon.pid, signal.SIGHUP)
    server.wait_for(lambda: "hook settings updated: gitopsd.database=" in server.log.read_text(), "the refresh")
    assert server.doctor().returncode == 0
    assert "Traceback" not in server.log.read_text()


def test_the_daemon_refreshes_the_hooks_database_at_start_after_state_dir_changed(server):
    server.gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    moved = server.root / "state2"
    moved.mkdir(mode=0o750)
    shutil.chown(moved, SVC_USER, GROUP)
    server.state = moved
    server.write_config()
    server.start()
    server.wait_for(lambda: "hook settings updated" in server.log.read_text(), "the refresh")
    recorded = sh(["git", "config", "--file", str(server.repo / "config"), "gitopsd.database"]).stdout.strip()
    assert recorded == str(moved / "state.db")
    # The push now finds the daemon's snapshot where the hook looks: no YAML parse (the fast path).
    server.write("b.txt", "2")
    pushed = server.commit_and_push("after the move", "main", "main:qa")
    server.wait_state("qa", "in-sync", pushed)


def test_a_daemon_that_cannot_write_the_repository_says_once_which_command_fixes_its_hook_settings(server):
    server.gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    sh(["git", "config", "--file", str(server.repo / "config"), "gitopsd.database", "/var/lib/old/state.db"])
    server.repo.chmod(0o755)  # the repository folder itself is not the group's to write: no config.lock
    server.start()
    server.wait_for(lambda: "this daemon cannot write" in server.log.read_text(), "the warning")
    log = server.log.read_text()
    assert log.count("this daemon cannot write") == 1
    assert f"until root runs: {server.bin / 'gitopsd'} install-hooks {server.repo} --config {server.config}" in log


def test_init_and_install_hooks_as_root_and_as_the_git_user_never_crash_on_the_git_users_repository(server):
    """root adopts gt-git's repository (git would refuse it: another owner); gt-git re-runs install-hooks."""
    init = server.gitopsd("init", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER, check=False)
    assert init.returncode == 0, init.stderr
    assert "created branch staging at an empty placeholder" in init.stdout and "Traceback" not in init.stderr
    assert f"git clone {GIT_USER}@" in init.stdout
    again = server.gitopsd("install-hooks", str(server.repo), user=GIT_USER, check=False)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert f"{server.repo}/hooks/pre-receive: already installed" in again.stdout
    # gt-git may not write /etc/gitopsd's file: one line that says so, not a traceback
    refused = server.gitopsd("init", str(server.repo), "--name", "other", user=GIT_USER, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"gitopsd: error: cannot write {server.config}"), refused.stderr


def test_doctor_reports_missing_users_and_folders_as_problems_not_tracebacks(server):
    server.write_config(state_dir=str(server.root / "nowhere"))
    doctor = server.gitopsd("doctor", "--git-user", "gt-nosuchuser", "--service-user", "gt-nosuchsvc", check=False)
    assert doctor.returncode == 1 and doctor.stderr == "", doctor.stderr
    assert "PROBLEM  service user gt-nosuchsvc does not exist" in doctor.stdout
    doctor = server.gitopsd("doctor", "--git-user", "gt-nosuchuser", "--service-user", SVC_USER, check=False)
    assert doctor.returncode == 1 and doctor.stderr == "", doctor.stderr
    assert "PROBLEM  the git user gt-nosuchuser does not exist" in doctor.stdout


def test_init_keeps_the_configs_comments_mode_and_group_deploys_only_qa_and_its_next_steps_work(server):
    server.write("environments/staging/hosts.yml", inventory("staging-1"))
    server.commit_and_push("staging's hosts", "main", "main:qa")
    server.gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    config = server.config.with_name("fresh.yml")
    config.write_text(
        f"# written by hand: keep this\nstate_dir: {server.state}   # the state\n"
        f"runtime_dir: {server.runtime}\nsandbox:\n  writable: [{server.out}]\n"
        f"  read_only: [{sysconfig.get_paths()['purelib']}]\nrepositories: []   # init adds them\n"
    )
    shutil.chown(config, "root", GROUP)
    config.chmod(0o640)
    server.config = config
    init = server.gitopsd("init", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    text = config.read_text()
    assert text.startswith("# written by hand: keep this\n") and "# the state" in text and "# init adds them" in text
    info = config.stat()
    assert (oct(info.st_mode & 0o7777), info.st_uid, grp.getgrgid(info.st_gid).gr_name) == ("0o640", 0, GROUP)
    assert "created branch staging at an empty placeholder" in init.stdout
    assert "nothing is deployed to production until its first promotion from staging" in init.stdout
    steps = init.stdout.split("next steps:\n")[1].splitlines()
    trust = next(s for s in steps if "safe.directory" in s).split("#")[0].split()
    server.start()
    main = server.head("main")
    server.wait_state("qa", "in-sync", main)
    time.sleep(2)  # qa has run main's tree: a branch at main would now pass the rule and deploy
    for env in ("staging", "production"):  # main was never promoted there: nothing is deployed
        row = server.status()[env]
        assert row["state"] == "waiting-for-promotion" and row["deployed"] is None, row  # since 7cb8bb5
    # (a placeholder is waiting, not blocked: the daemon logs nothing about staging, so look at deploying lines)
    assert not [line for line in server.log.read_text().splitlines() if "deploying" in line and "[shop/staging" in line]
    # The next steps, as printed: a push of main to qa, then a promotion as root.
    assert "  git push origin main main:qa" in steps
    server.write("c.txt", "3")
    pushed = server.commit_and_push("a change", "main", "main:qa")
    server.wait_state("qa", "in-sync", pushed)
    sh(trust, env={**server.env("root"), "HOME": str(server.root)})
    promote = next(s for s in steps if " promote qa staging" in s).split()
    assert promote[-2:] == ["--config", str(config)]
    server.gitopsd(*promote[1:-2])
    server.wait_state("staging", "in-sync", server.head("staging"))
    assert server.status()["production"]["deployed"] is None
