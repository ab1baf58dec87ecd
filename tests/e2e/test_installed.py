"""What we ship is what we test: the built wheel, installed as docs/install.md says, runs the whole pipeline as its service.

Real: the sdist and wheel `python -m build` makes; a virtualenv at a system path (/opt) made by the system's
Python, with the wheel and its dependencies installed by pip; `gitopsd install-service`, which creates the
service user and its state folder (its home) as on a real server; `init`, `install-hooks`, `token create`,
`hosts trust` and `doctor` as root; the daemon started as the written unit's ExecStartPre/ExecStart say
(its User=, Group=, UMask=, a NOTIFY_SOCKET for Type=notify, the folders the unit would make); a developer
pushing over a real sshd as a git-shell account; built-in CI and every deployment in the sandbox (bubblewrap)
as the service user, to a real sshd host; a CI job's status POST with the token `token create` wrote; two more
Unix users signing off and approving over the daemon's control socket; production deploying what they approved.

Not real: systemd as PID 1 (not here: the unit's process settings are applied by hand, namespaces are not),
so install-service writes its unit into a private mount of /etc/systemd/system: a gitopsd service already on
this machine is never touched. Paths and users are this test's own (gitopsd-e2e, gi-*), removed before and after.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dist import build_dist
from tests.e2e.test_real_team import Developer, git_server
from tests.sshhosts import SshHost, skip_without_sshd, stop_all
from tests.support import free_port, remove_users, sh

NAME = "gitopsd-e2e"
OPT, ETC, SRV = Path("/opt") / NAME, Path("/etc") / NAME, Path("/srv") / NAME
STATE, RUNTIME = Path("/var/lib") / NAME, Path("/run") / NAME
GIT_USER, SVC_USER, TESTER, APPROVER = "gi-git", "gi-svc", "gi-tina", "gi-paula"
PEOPLE = (GIT_USER, TESTER, APPROVER)

CAN_INSTALL = (
    os.geteuid() == 0
    and all(shutil.which(t) for t in ("setpriv", "useradd", "userdel", "git-shell", "bwrap", "unshare", "mount"))
    and Path("/usr/bin/python3").exists()
)
# .ci/run sets GITOPSD_REQUIRE_INSTALL=1: in CI this test must run, never skip.
pytestmark = [
    pytest.mark.slow,
    skip_without_sshd,
    pytest.mark.skipif(
        not CAN_INSTALL and os.environ.get("GITOPSD_REQUIRE_INSTALL") != "1",
        reason="installing a service needs root, setpriv, useradd, git-shell, bubblewrap, unshare and /usr/bin/python3",
    ),
]

PLAYBOOK = """\
- name: the shop
  hosts: all
  gather_facts: false
  tasks:
    - name: environment folder
      ansible.builtin.file: {path: "{{ shop_root }}/{{ gitopsd_env }}", state: directory, mode: "0755"}
    - name: release file
      ansible.builtin.copy:
        dest: "{{ shop_root }}/{{ gitopsd_env }}/release"
        content: "{{ gitopsd_commit }} {{ lookup('ansible.builtin.file', gitopsd_workdir + '/VERSION') }}\\n"
"""
# The built-in CI step: it passes only where gitopsd's own files are out of sight (the sandbox is on).
CHECK = f"""\
import os, pathlib, sys
assert pathlib.Path("VERSION").read_text().strip(), "VERSION is empty"
for secret in ("{STATE}/state.db", "{ETC}/tokens.yml", "{ETC}/gitopsd.yml"):   # missing, or /dev/null in its place
    try:
        seen = open(secret, "rb").read(1)
    except OSError:
        continue
    if seen:
        sys.exit(f"{{secret}} is readable by a CI step")
print("ok", pathlib.Path("VERSION").read_text().strip())
"""


def _clean() -> None:
    """What a killed earlier run may have left: its users' processes (a daemon), users, group and folders."""
    remove_users((*PEOPLE, SVC_USER), SVC_USER)
    for path in (OPT, ETC, SRV, STATE, RUNTIME):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The wheel, built from this checkout, installed in a fresh virtualenv at /opt as docs/install.md's Install says."""
    _clean()
    _sdist, wheel = build_dist()
    OPT.mkdir(mode=0o755)
    venv = OPT / "venv"
    sh(["/usr/bin/python3", "-m", "venv", str(venv)])
    proc = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield venv / "bin"
    finally:
        _clean()


class Server:
    """The deploy server: gitopsd run as root, as a person, and as the service its unit describes."""

    def __init__(self, bin_dir: Path, base: Path):
        self.bin, self.base = bin_dir, base
        self.config, self.repo = ETC / "gitopsd.yml", SRV / "shop.git"
        self.root_home = base / "root-home"  # root's HOME: its ~/.gitconfig is this test's, not the machine's
        self.root_home.mkdir()
        self.units = base / "systemd-system"  # what install-service writes as /etc/systemd/system
        self.units.mkdir()
        self.log = base / "daemon.log"
        self.daemon: subprocess.Popen[str] | None = None
        self.notify: socket.socket | None = None
        self.notes: list[str] = []
        self.ssh: list[SshHost] = []

    def env(self, home: Path) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
        }

    def gitopsd(self, *args: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / "gitopsd"), *args, "--config", str(self.config)]
        if user != "root":
            entry = pwd.getpwnam(user)
            argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *argv]
        home = self.root_home if user == "root" else Path(pwd.getpwnam(user).pw_dir)
        proc = sh(argv, check=False, env=self.env(home), cwd="/")
        assert "Traceback" not in proc.stderr, proc.stderr
        if check:
            assert proc.returncode == 0, f"gitopsd {' '.join(args)} as {user}: {proc.stdout}\n{proc.stderr}"
        return proc

    def install_service(self) -> subprocess.CompletedProcess[str]:
        """`gitopsd install-service` for real, with /etc/systemd/system a private mount of this test's folder."""
        mount = 'mount --bind "$0" /etc/systemd/system && exec "$@"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            mount,
            str(self.units),
            str(self.bin / "gitopsd"),
            "install-service",
            "--config",
            str(self.config),
            "--user",
            SVC_USER,
        ]
        proc = sh(argv, env=self.env(self.root_home), cwd="/")
        assert "Traceback" not in proc.stderr and "warning" not in proc.stderr, proc.stderr
        return proc

    def unit(self) -> dict[str, list[str]]:
        settings: dict[str, list[str]] = {}
        for line in (self.units / "gitopsd.service").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings.setdefault(key, []).append(value)
        return settings

    def start(self) -> None:
        """Start the daemon as the unit's ExecStartPre and ExecStart, with its User=, Group= and UMask=."""
        unit = self.unit()
        (user,), (group,), (umask,) = unit["User"], unit["Group"], unit["UMask"]
        assert (user, group) == (SVC_USER, SVC_USER), unit
        entry = pwd.getpwnam(user)
        assert Path(entry.pw_dir) == STATE and STATE.stat().st_uid == entry.pw_uid  # install-service made both
        # StateDirectory= and RuntimeDirectory= are this config's folders (never /var/lib/gitopsd, /run/gitopsd):
        # systemd would make the runtime folder at every start; it is made the same way here.
        assert (unit["StateDirectory"], unit["RuntimeDirectory"]) == ([STATE.name], [RUNTIME.name]), unit
        RUNTIME.mkdir(mode=0o750, exist_ok=True)
        shutil.chown(RUNTIME, user, group)
        RUNTIME.chmod(0o750)
        notify = self.base / "notify"
        notify.mkdir(mode=0o755)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify / "sock"))
        (notify / "sock").chmod(0o777)
        threading.Thread(target=self._read_notifications, daemon=True).start()  # as systemd reads its socket
        as_service = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--",
            "/bin/sh",
            "-c",
            'umask "$0" && exec "$@"',
            umask,
        ]
        env = {**self.env(STATE), "USER": user, "LOGNAME": user, "SHELL": entry.pw_shell}
        (pre,), (start,) = unit["ExecStartPre"], unit["ExecStart"]
        checked = sh([*as_service, *pre.split()], check=False, env=env, cwd="/")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.daemon = subprocess.Popen(
            [*as_service, *start.split(), "--log-level", "debug"],
            cwd="/",
            env={**env, "NOTIFY_SOCKET": str(notify / "sock")},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_for(lambda: "READY=1" in self.notified(), "READY=1 from the daemon")

    def _read_notifications(self) -> None:
        assert self.notify is not None
        while True:
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except OSError:  # closed at the end of the test
                return

    def notified(self) -> str:
        return "\n".join(self.notes)

    def stop(self) -> int | None:
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        return self.daemon.returncode

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.daemon is None or self.daemon.poll() is None, f"the daemon exited:\n{self.log.read_text()}"
            time.sleep(0.5)
        runs = "".join(
            f"\n--- {p}:\n{p.read_text(errors='replace')[-2000:]}"
            for p in [*sorted(STATE.glob("ci/*/*.log")), *sorted(STATE.glob("deployments/*/*/artifacts/run/stdout"))]
        )
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-8000:]}{runs}")

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["env"]: row for row in json.loads(self.gitopsd("status", "--json", user=SVC_USER).stdout)}

    def wait_in_sync(self, env: str, tree: str) -> dict[str, Any]:
        """ENV's branch is at a commit with TREE and that commit is deployed."""

        def check() -> dict[str, Any] | None:
            row = self.status()[env]
            assert row["state"] != "stalled", f"{env} stalled: {row}\n{self.log.read_text()[-4000:]}"
            head = row.get("desired") or ""
            return row if row["state"] == "in-sync" and head and self.tree(head) == tree else None

        return self.wait_for(check, f"{env} in sync at tree {tree[:7]}")

    def git(self, *args: str) -> str:
        return sh(["git", "--git-dir", str(self.repo), *args], env=self.env(self.root_home)).stdout.strip()

    def tree(self, rev: str) -> str:
        return self.git("rev-parse", f"{rev}^{{tree}}")


@pytest.fixture
def server(installed: Path) -> Iterator[Server]:
    base = Path(tempfile.mkdtemp(prefix="gi-e2e-", dir="/tmp"))  # every user may enter it (sshd reads keys as them)
    base.chmod(0o755)
    srv = Server(installed, base)
    try:
        yield srv
    finally:
        srv.stop()
        stop_all(srv.ssh)
        if srv.notify is not None:
            srv.notify.close()
        shutil.rmtree(base, ignore_errors=True)


def test_the_installed_wheel_runs_the_pipeline_as_its_service_from_a_push_over_ssh_to_an_approved_production(
    server: Server, ssh_hosts: Any
) -> None:
    gitopsd, tmp_path = server.gitopsd, server.base
    (web,) = ssh_hosts(["web-1"])  # the one target host: each environment deploys to its own folder on it
    shop_root = tmp_path / "hosts"
    shop_root.mkdir()
    for user in PEOPLE:  # the git-shell account (sh until sshd's first check) and two people
        sh(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", user])
    assert gitopsd("--version").stdout.strip().startswith("gitopsd ")

    # -- Set up a server (README), with this test's paths: the config first, then init, install-service, install-hooks.
    ETC.mkdir(mode=0o755)
    port = free_port()
    server.config.write_text(
        f"state_dir: {STATE}\nruntime_dir: {RUNTIME}\nsweep_interval: 300\nstop_grace: 5\n"
        f'api: {{listen: "127.0.0.1:{port}", tokens_file: tokens.yml}}\n'
        f"groups: {{approvers: [{APPROVER}]}}\nrepositories: []\n"
    )
    SRV.mkdir(mode=0o755)
    init = gitopsd("init", str(server.repo), "--git-user", GIT_USER)
    assert "main does not exist yet" in init.stdout
    out = server.install_service().stdout
    assert f"create system user {SVC_USER} (home {STATE}" in out and f"give {STATE} and all in it to {SVC_USER}" in out
    assert (STATE.stat().st_uid, STATE.stat().st_mode & 0o777) == (pwd.getpwnam(SVC_USER).pw_uid, 0o750)
    hooks = gitopsd("install-hooks", str(server.repo), "--git-user", GIT_USER).stdout
    assert f"belongs to {GIT_USER}:{SVC_USER}" in hooks and f"safe.directory: {server.repo}" in hooks, hooks
    for user in PEOPLE:
        sh(["usermod", "-aG", SVC_USER, user])  # docs/install.md: the hook and the people reach the sockets through the group

    # -- alice pushes the content over SSH, as the git-shell account; init then makes the environment branches.
    alice = Developer("alice", tmp_path / "dev" / "alice")
    git_host = git_server(tmp_path, {"alice": alice}, user=GIT_USER, first_octet=41)
    server.ssh.append(git_host)
    url = f"ssh://{GIT_USER}@{git_host.address}:{git_host.port}{server.repo}"
    alice.git("clone", "-q", url, str(alice.work))
    alice.git("checkout", "-q", "-b", "main")
    inventory = yaml.safe_dump(
        {
            "all": {
                "vars": {"ansible_user": web.user, "ansible_python_interpreter": "/usr/bin/python3", "shop_root": str(shop_root)},
                "hosts": {web.name: {"ansible_host": web.address, "ansible_port": web.port}},
            }
        }
    )
    alice.write(
        {
            "playbooks/deploy.yml": PLAYBOOK,
            "check.py": CHECK,
            "VERSION": "1\n",
            **{f"environments/{env}/hosts.yml": inventory for env in ("qa", "staging", "production")},
        }
    )
    alice.commit("the shop, version 1")
    alice.git("push", "-q", "origin", "main")
    init = gitopsd("init", str(server.repo), "--git-user", GIT_USER)
    assert "created branch qa at main" in init.stdout, init.stdout
    trust_root = next(s for s in init.stdout.splitlines() if "safe.directory" in s and "git config" in s)
    sh(trust_root.split("#")[0].split(), env=server.env(server.root_home))  # the printed step, as root

    # The pipeline: built-in CI, qa automatic after it, staging after an external check, production approved.
    data = yaml.safe_load(server.config.read_text())
    (repo,) = data["repositories"]
    repo["ci"] = {"steps": [{"name": "test", "run": "python3 check.py", "timeout": 120}]}
    options = {
        "qa": {"require_checks": ["gitopsd/test"], "auto_promote": True},
        "staging": {"require_checks": ["ci/external"], "signoff_by": [TESTER]},
        "production": {
            "require_signoff": {"env": "staging", "count": 1},
            "approvals": {"required": 1, "approvers": ["group:approvers"], "forbid_self_approval": True},
        },
    }
    for entry in repo["environments"]:
        entry.update({"retries": 1, "retry_backoff": 1, **options[entry["name"]]})
    server.config.write_text(yaml.safe_dump(data, sort_keys=False))
    gitopsd("check-config")

    # The service's SSH key in its home (its state folder), its known_hosts by `hosts trust`, a token for the CI job.
    ssh_dir = STATE / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    shutil.copy(web.key, ssh_dir / "id_ed25519")
    for path in (ssh_dir, ssh_dir / "id_ed25519"):
        shutil.chown(path, SVC_USER, SVC_USER)
    trusted = gitopsd("hosts", "trust", "qa", "--yes").stdout
    assert f"{web.name} ({web.address}:{web.port}): new" in trusted, trusted
    secret = gitopsd("token", "create", "jenkins", "--scope", "statuses:write").stdout.splitlines()[0]

    # -- The daemon, as its unit starts it; then doctor proves the layout as each user uses it.
    server.start()
    first = server.git("rev-parse", "refs/heads/main")
    server.wait_in_sync("qa", server.tree(first))
    doctor = gitopsd("doctor", "--git-user", GIT_USER, check=False)
    assert doctor.returncode == 0 and doctor.stdout.splitlines()[-1] == "all ok", doctor.stdout
    for line in (
        f"{SVC_USER} reads the API's tokens file {ETC / 'tokens.yml'}",
        f"{SVC_USER} writes the state folder",
        f"{SVC_USER} runs a playbook in the sandbox",
        f"{SVC_USER} runs a CI step in the sandbox",
    ):
        assert line in doctor.stdout, doctor.stdout

    # -- A change to main: CI in the sandbox, then qa by itself, deployed in the sandbox over SSH. The daemon judges the
    # push for the shim (daemon/judge.py) across the two users: the hook's Python, watched here, never starts.
    watched = tmp_path / "hook-python"
    watched.mkdir(mode=0o777)
    watched.chmod(0o777)
    python = server.git("config", "gitopsd.python")
    (watched / "python").write_text(f'#!/bin/sh\necho started >> {watched}/started\nexec {python} "$@"\n')
    (watched / "python").chmod(0o755)
    before = (server.repo / "config").stat()
    server.git("config", "gitopsd.python", str(watched / "python"))
    os.chown(server.repo / "config", before.st_uid, before.st_gid)  # as root wrote it: the layout's owner again
    (server.repo / "config").chmod(before.st_mode & 0o7777)
    alice.write({"VERSION": "2\n"})
    change = alice.commit("version 2")
    pushed = alice.git("push", "origin", "main")
    assert "Traceback" not in pushed.stderr
    assert not (watched / "started").exists(), pushed.stderr
    qa = server.wait_in_sync("qa", server.tree(change))
    assert (shop_root / "qa" / "release").read_text() == f"{qa['desired']} 2\n"
    checks = gitopsd("ci", "status", change).stdout
    assert "gitopsd/test" in checks and "success" in checks, checks

    # -- The CI job reports with the token `token create` wrote: the daemon (as its user) reads the tokens file.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/repos/shop/statuses/{change}",
        method="POST",
        data=json.dumps({"state": "success", "context": "ci/external", "description": "acceptance tests"}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback, this test's daemon)
        assert answer.status == 201
    promoted = gitopsd("promote", "qa", "staging")
    assert "Traceback" not in promoted.stderr
    server.wait_in_sync("staging", server.tree(change))

    # -- tina signs off and makes the release candidate; paula approves: identities from the control socket.
    signed = gitopsd("signoff", "staging", "--note", "checkout tested by hand", user=TESTER)
    assert f"{TESTER} signed off staging's tree" in signed.stdout + signed.stderr
    gitopsd("rc", "create", "--name", "r1", user=TESTER)
    approved = gitopsd("approve", "r1", "--note", "release notes read", user=APPROVER)
    assert f"rc/r1 approved by {APPROVER}" in approved.stdout + approved.stderr
    gitopsd("promote", "rc/r1", "production")
    production = server.wait_in_sync("production", server.tree(change))
    assert (shop_root / "production" / "release").read_text() == f"{production['desired']} 2\n"

    # -- Every run was sandboxed, nothing went wrong on the way, and the service stops as systemd would stop it.
    log = server.log.read_text()
    assert "Traceback" not in log and "Permission denied" not in log, log[-6000:]
    assert server.stop() == 0
    assert "STOPPING=1" in server.notified()
