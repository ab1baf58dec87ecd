"""Test helpers: real bare repositories, real clones and pushes, the real daemon as a process."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GITOPSD = [sys.executable, "-m", "gitopsd"]

# A playbook that records each run per host, fails when the tree has FAIL, sleeps when it has SLEEP. It records with
# `raw` (a shell command, no Python module to send and start): a run of four hosts costs 0.6 s of CPU instead of the
# 2.6 s of `copy`, and the suite's deployments are most of its CPU (perf: ansible was 70 % of what a rollout test used).
# The sleep is in the same command (a task is a fork per host even when skipped: 0.1 s of CPU more per run); `raw` is
# skipped in check mode, as `command` was, and the failure stays a task of its own, which check mode runs too.
TEST_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: record this run, then sleep when asked to
      ansible.builtin.raw: >-
        printf '%s\\n'
        {{ (gitopsd_commit ~ ' ' ~ gitopsd_kind ~ ' ' ~ gitopsd_env ~ ' notify=' ~
        (lookup('ansible.builtin.env', 'NOTIFY_SOCKET') or 'none')) | quote }}
        > {{ (lookup('ansible.builtin.env', 'GITOPSD_TEST_OUT') ~ '/' ~ inventory_hostname ~ '.' ~ gitopsd_deploy_id) | quote }}
        {%- if (gitopsd_workdir + '/SLEEP') is exists %}
        && sleep {{ lookup('ansible.builtin.file', gitopsd_workdir + '/SLEEP') | quote }}{% endif %}
    - name: fail when asked to (FAIL lists the hosts that fail, or says "all")
      ansible.builtin.fail:
        msg: this tree is broken on purpose
      when: >-
        (gitopsd_workdir + '/FAIL') is exists and
        (inventory_hostname in lookup('ansible.builtin.file', gitopsd_workdir + '/FAIL').split()
         or 'all' in lookup('ansible.builtin.file', gitopsd_workdir + '/FAIL').split()
         or 'yes' in lookup('ansible.builtin.file', gitopsd_workdir + '/FAIL').split())
"""

LOCAL_INVENTORY = """\
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  hosts:
{hosts}
"""


def inventory(*hosts: str) -> str:
    return LOCAL_INVENTORY.format(hosts="\n".join(f"    {h}: {{}}" for h in hosts) or "    {}")


def run(
    cmd: list[str],
    cwd: Path | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], cwd=cwd, check=check)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `address` right now (bound and closed at once)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ is ENV for a while, as a child process started with env=ENV would see it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def mounted(target: Path, *options: str) -> Iterator[None]:
    """`mount OPTIONS... target` for the block, unmounted after whatever happens (lazily: SQLite keeps a closed
    connection's file open while another connection of the process holds a lock on that file)."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *options, str(target)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(target)], check=True)


def sigint_as_at_a_terminal() -> None:
    """`preexec_fn` for a command a test interrupts with Ctrl-C: SIGINT at its default, as a terminal's foreground job
    has it. A suite started in the background of a script (`make test &`) hands its children SIGINT ignored, and
    Python then keeps it ignored, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def in_process(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`gitopsd ARGV` through gitopsd.cli.main.main in this process, as `run` would give it: the command's behaviour
    without starting a Python (a wait polls with it). Tests of the console script itself use `run([*GITOPSD, ...])`."""
    from gitopsd.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    stdin, sys.stdin = sys.stdin, io.StringIO("")  # no terminal and nothing to read, as `run` gives a command
    try:
        with (
            environment(os.environ.copy() if env is None else env),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.stdin = stdin
    proc = subprocess.CompletedProcess(["gitopsd", *argv], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"gitopsd {argv} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- servers the tests talk to (Prometheus, Alertmanager, Synapse) ------------------------------------


@contextmanager
def serving(
    name: str, argv: list[str], ready: str, log: Path, timeout: float = 30, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run server `name` (argv, its output in `log`, a session of its own) until the block ends: first wait until
    the URL `ready` answers 200, failing with the log's end if it exits or `timeout` passes; at the end stop it
    (SIGCONT first: a test may have stopped it), killing it after 30 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start ({proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- real Unix users (tests that run as root) ---------------------------------------------------------


def sh(argv: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def setpriv(user: str) -> list[str]:
    """The argv prefix that runs a command as USER with its groups, as a login would (root only)."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]


def remove_users(users: tuple[str, ...], group: str | None = None) -> None:
    """Remove USERS (and GROUP), also what a killed run left: their processes first, or userdel refuses."""
    for user in users:
        sh(["pkill", "-KILL", "-u", user], check=False)
    for user in users:
        for _ in range(20):
            if sh(["userdel", user], check=False).returncode != 8:  # 8: the user is still logged in (a process)
                break
            time.sleep(0.1)
    if group:
        sh(["groupdel", group], check=False)


@contextmanager
def unix_users(users: tuple[str, ...], group: str) -> Iterator[None]:
    """USERS, each with GROUP as a supplementary group, no home and no login; created fresh, removed afterwards."""
    remove_users(users, group)
    try:
        sh(["groupadd", group])
        for user in users:
            sh(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-G", group, user])
        yield
    finally:
        remove_users(users, group)


@contextmanager
def service_users(base: Path, git_user: str, service_user: str, group: str) -> Iterator[None]:
    """docs/install.md's two users (Permissions): SERVICE_USER in GROUP (home base/home-svc, no login), GIT_USER with GROUP as a
    supplementary group (home base/home-git, /bin/sh); created fresh, removed afterwards."""
    remove_users((git_user, service_user), group)
    try:
        sh(["groupadd", group])
        sh(["useradd", "-M", "-d", str(base / "home-svc"), "-s", "/usr/sbin/nologin", "-g", group, service_user])
        sh(["useradd", "-M", "-d", str(base / "home-git"), "-s", "/bin/sh", "-G", group, git_user])
        for user, home, mode in ((git_user, base / "home-git", 0o755), (service_user, base / "home-svc", 0o750)):
            home.mkdir(exist_ok=True)
            home.chmod(mode)
            shutil.chown(home, user, pwd.getpwnam(user).pw_gid)
        yield
    finally:
        remove_users((git_user, service_user), group)


def python_for_everyone(venv: Path) -> Path:
    """A virtualenv every user may run, with the project's packages; return its bin folder.

    The test's own virtualenv lives under /root (mode 0700), which other users cannot enter. So it is
    built from Debian's /usr/bin/python3 (3.11, like the project's), and a .pth file adds the project's
    installed packages (plain Python files and 3.11 extension modules, which Debian's 3.11 loads as
    well). Playbook sandboxes must be shown `sysconfig.get_paths()["purelib"]` read-only.
    """
    system = Path("/usr/bin/python3")
    version = sh([str(system), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], check=False)
    if version.returncode != 0 or version.stdout.strip() != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"no system Python {sys.version_info[0]}.{sys.version_info[1]} with venv for the other users")
    sh([str(system), "-m", "venv", "--without-pip", str(venv)])
    site = sh([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    packages = sysconfig.get_paths()["purelib"]  # the project's venv: its packages, and gitopsd (editable)
    Path(site.strip(), "gitopsd-tests.pth").write_text(f"import site; site.addsitedir({packages!r})\n")
    # The console scripts a `pip install` into /opt/gitopsd would put beside its Python (runs look there).
    for name, module in (
        ("gitopsd", "gitopsd.cli.main"),
        ("ansible-playbook", "ansible.cli.playbook"),
        ("ansible-galaxy", "ansible.cli.galaxy"),
        ("ansible-inventory", "ansible.cli.inventory"),
        ("ansible-vault", "ansible.cli.vault"),
    ):
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return venv / "bin"


@dataclass
class Sandbox:
    """A bare repo with hooks, a clone to push from, a config, and folders for state and test output.

    The repository and the clone are copies of a template this process built the long way once per set of
    environments (`seed`: git init, clone, commit, push, `gitopsd install-hooks`); a copy gets its own
    config, its hook's config snapshot, and the hook settings pointed at them."""

    root: Path
    envs: dict[str, list[str]]
    env_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep_interval: float = 300
    extra: dict[str, Any] = field(default_factory=dict)
    sandbox_options: dict[str, Any] = field(default_factory=dict)  # merged into the config's `sandbox:`
    from_template: bool = True  # False: made the long way, as `seed` does
    # True: a copy of a sandbox whose daemon has already deployed every environment's head once and stopped (its
    # state folder and the ledger's notes come with it), so a test's daemon starts with nothing to deploy
    converged: bool = False

    def __post_init__(self) -> None:
        self.repo = self.root / "shop.git"
        self.work = self.root / "work"
        self.state = self.root / "state"
        self.runtime = self.root / "run"
        self.out = self.root / "out"
        self.config = self.root / "gitopsd.yml"
        self.out.mkdir(parents=True, exist_ok=True)
        self.out.chmod(0o777)  # sandboxed playbooks write here, as `nobody` when the tests run as root
        if self.converged:
            self.copy(_converged_template(self))
        elif self.from_template:
            self.copy(_template(self.envs))
        else:
            self.seed()

    def seed(self) -> None:
        """Make the repository and the clone with git and `gitopsd install-hooks`, as a person would."""
        git(self.root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.repo))
        git(self.root, "clone", "--quiet", str(self.repo), str(self.work))
        git(self.work, "config", "user.email", "dev@example.com")
        git(self.work, "config", "user.name", "Dev")
        git(self.work, "checkout", "--quiet", "-b", "main")
        self.write("playbooks/deploy.yml", TEST_PLAYBOOK)
        for env, hosts in self.envs.items():
            self.write(f"environments/{env}/hosts.yml", inventory(*hosts))
        self.commit("initial content")
        git(self.work, "push", "--quiet", "origin", "main")
        self.write_config()
        self.state.mkdir()  # as a service's StateDirectory would: install-hooks saves the hook's config snapshot there
        run([*GITOPSD, "install-hooks", str(self.repo), "--config", str(self.config)], env=self.environ())
        for env in self.envs:
            git(self.root, "--git-dir", str(self.repo), "branch", env, "main")

    def copy(self, template: Path) -> None:
        """Copy TEMPLATE's repository and clone, then do what install-hooks does that depends on this config."""
        from gitopsd.config import ConfigError, load
        from gitopsd.installers.install_hooks import refresh_settings, write_gate_snapshot

        shutil.copytree(template / "shop.git", self.repo, symlinks=True)
        shutil.copytree(template / "work", self.work, symlinks=True)
        _replace_in(self.work / ".git" / "config", f"url = {template / 'shop.git'}\n", f"url = {self.repo}\n")
        self.write_config()
        if self.converged:
            _copy_state(template, self.root)
        else:
            self.state.mkdir()
        with environment(self.environ()):
            database, _note = write_gate_snapshot(self.config)
        _replace_in(self.repo / "config", f"config = {template / 'gitopsd.yml'}\n", f"config = {self.config.resolve()}\n")
        _replace_in(
            self.repo / "config",
            f"\tdatabase = {template / 'state' / 'state.db'}\n",
            f"\tdatabase = {database}\n" if database else "",
        )
        try:  # what else install-hooks records from the config: the signing key, the shim's stamp (the template's
            loaded = load(self.config)  # names the template's config); a test's deliberately bad config has none
        except ConfigError:
            (self.repo / "gitopsd-gate.stamp").unlink(missing_ok=True)
            return
        with environment(self.environ()):
            refresh_settings(self.repo, self.config, Path(database) if database else loaded.database, loaded)

    def write_config(self, **overrides: Any) -> None:
        environments = []
        for env in self.envs:
            environments.append(
                {
                    "name": env,
                    "retries": 1,
                    "retry_backoff": 1,
                    "retry_backoff_max": 2,
                    "timeout": 120,
                    **self.env_options.get(env, {}),
                }
            )
        data = {
            "state_dir": str(self.state),
            "runtime_dir": str(self.runtime),
            "sweep_interval": self.sweep_interval,
            "stop_grace": 5,
            "sandbox": {"writable": [str(self.out)], **self.sandbox_options},
            "repositories": [{"name": "shop", "path": str(self.repo), "environments": environments}],
            **self.extra,
            **overrides,
        }
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITOPSD_"))}
        env.update(
            {
                "GITOPSD_CONFIG": str(self.config),
                "GITOPSD_TEST_OUT": str(self.out),
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
            }
        )
        env.update(extra)
        return env

    def write(self, path: str, content: str) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)

    def remove(self, path: str) -> None:
        git(self.work, "rm", "--quiet", path)

    def commit(self, message: str) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        return git(self.work, "rev-parse", "HEAD").stdout.strip()

    def push(self, *refspecs: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["git", "push", "origin", *refspecs], cwd=self.work, check=check, env=self.environ())

    def head(self, branch: str) -> str:
        return git(self.root, "--git-dir", str(self.repo), "rev-parse", f"refs/heads/{branch}").stdout.strip()

    def tree(self, rev: str) -> str:
        return git(self.root, "--git-dir", str(self.repo), "rev-parse", f"{rev}^{{tree}}").stdout.strip()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`gitopsd ARGS --config CONFIG` as a process: the console script, as an operator runs it (tests of what a
        command does use `command`: a Python start and gitopsd's imports cost 0.1-0.3 s of CPU each)."""
        return run([*GITOPSD, *args, "--config", str(self.config)], env=self.environ(), check=check)

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`gitopsd ARGS --config CONFIG` in this process (`in_process`), for tests of what a command does."""
        return in_process([*args, "--config", str(self.config)], env=self.environ(), check=check)

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["env"]: row for row in json.loads(self.command("status", "--json").stdout)}

    def history(self, env: str | None = None) -> list[dict[str, Any]]:
        return json.loads(self.command("history", *([env] if env else []), "--json", "--limit", "100").stdout)

    def runs(self) -> list[str]:
        """What the test playbook recorded: 'host.deployment_id: commit kind env', oldest first."""
        files = sorted(self.out.iterdir(), key=lambda p: (int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0, p.name))
        return [f"{p.name}: {p.read_text().strip()}" for p in files if p.is_file()]


_TEMPLATES: dict[str, Path] = {}  # this process's sandbox templates, by environments


def shared_templates(run: str) -> Path:
    """The folder of test run RUN's templates, shared by its pytest-xdist workers (the conftest removes it at the end)."""
    return Path(f"/tmp/gt-sh-{run[:12]}")


def _built_once(kind: str, key: str, build: Callable[[Path], object]) -> Path:
    """The folder BUILD made for template KEY: once per test run when pytest-xdist's workers share it (the first worker
    to ask builds it under a lock, the others wait for it: each worker built the common ones again, a daemon and its
    deployments each time), else once per process and removed when the process ends."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        root = Path(tempfile.mkdtemp(prefix=f"gt-{kind}-", dir="/tmp"))
        atexit.register(shutil.rmtree, root, True)
        build(root)
        return root
    shared = shared_templates(run)
    shared.mkdir(exist_ok=True)
    root = shared / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a worker dies building
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that died building left
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


def _template(envs: dict[str, list[str]]) -> Path:
    """The folder of a sandbox made the long way for ENVS (once per test run or process, `_built_once`)."""
    key = json.dumps(envs, sort_keys=True)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _built_once("tpl", key, lambda root: Sandbox(root, envs, from_template=False))
    return _TEMPLATES[key]


PERSON_GATES = {"approvals", "require_signoff"}  # an environment with these waits for a person before its first deployment
UNDEPLOYED_SETTINGS = {"api", "web"}  # config sections no deployment depends on
_CONVERGED: dict[str, Path] = {}  # this process's converged templates, by environments and options
ROOT_MARK = "<sandbox root>"  # a converged template's key: where a path named the sandbox's root


def _converged_template(sandbox: Sandbox) -> Path:
    """The folder of a sandbox like SANDBOX whose daemon deployed each environment's head and stopped (once per
    process and set of environments and options), removed when the process ends."""
    # What the API and the dashboard say changes no deployment: a sandbox with its own port and tokens
    # file shares the converged state of one without them.
    extra = {k: v for k, v in sandbox.extra.items() if k not in UNDEPLOYED_SETTINGS}
    options = {
        "env_options": sandbox.env_options,
        "sweep_interval": sandbox.sweep_interval,
        "extra": extra,
        "sandbox_options": sandbox.sandbox_options,
    }
    # A path in the sandbox's own root (a notify command's output file) is written as ROOT_MARK: the template names its
    # own root there, and the copy its own (the copy's config is written from its own options). This Python is everyone's.
    key = re.sub(f'"{re.escape(str(sandbox.root))}(?=[/"])', f'"{ROOT_MARK}', json.dumps([sandbox.envs, options], sort_keys=True))
    if '"/' in key.replace(json.dumps(sys.executable), '""'):
        raise AssertionError(
            f"a converged sandbox is shared by tests: its deployments' settings can name paths in its root only ({key})"
        )
    if key not in _CONVERGED:
        _CONVERGED[key] = _built_once("conv", key, lambda root: _converge(root, sandbox.envs, key))
    return _CONVERGED[key]


def _converge(root: Path, envs: dict[str, list[str]], key: str) -> None:
    """Make in ROOT the sandbox KEY names, let its daemon deploy every environment's head, and stop it."""
    box = Sandbox(root, envs, **json.loads(key.replace(f'"{ROOT_MARK}', f'"{root}'))[1])
    # Each environment deployed; one that waits for a person (approvals, sign-offs) blocked, once the others are.
    waits = {env for env, opts in box.env_options.items() if PERSON_GATES & set(opts)}
    with Daemon(box) as daemon:
        daemon.wait_for(
            lambda: all(row["state"] == ("blocked" if env in waits else "in-sync") for env, row in box.status().items()),
            120,
            "every environment deployed or waiting for a person",
        )
    Daemon.started.remove(daemon)
    with contextlib.closing(sqlite3.connect(box.state / "state.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _copy_state(template: Path, root: Path) -> None:
    """Copy TEMPLATE's state folder (its store and the deployments' folders; not its lock, backups or log) into ROOT,
    with the deployments' folders renamed and the template's hook snapshot left out (the copy saves its own)."""
    shutil.copytree(
        template / "state",
        root / "state",
        symlinks=True,
        ignore=shutil.ignore_patterns("daemon.lock", "backups", "state.db-wal", "state.db-shm"),
    )
    with contextlib.closing(sqlite3.connect(root / "state" / "state.db")) as db, db:
        db.execute("UPDATE deployments SET workdir = replace(workdir, ?, ?)", (f"{template}/", f"{root}/"))
        for (table,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'gate\\_%' ESCAPE '\\'"
        ).fetchall():
            db.execute(f"DELETE FROM {table}")  # noqa: S608 (a table name the store made)


def _replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise AssertionError(f"{path} has no {old!r}:\n{text}")
    path.write_text(text.replace(old, new))


class Daemon:
    """`gitopsd run` as a real process."""

    started: list[Daemon] = []  # stopped by the conftest after each test, whatever happened

    def __init__(self, sandbox: Sandbox, **env: str):
        Daemon.started.append(self)
        self.sandbox = sandbox
        self.log_path = sandbox.root / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (the daemon writes to it until stop)
        self.proc = subprocess.Popen(
            [*GITOPSD, "run", "--config", str(sandbox.config), "--log-level", "debug"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=sandbox.environ(**env),
            start_new_session=True,
        )
        if sandbox.converged:  # its state says in-sync already: a test's waits would not wait for the daemon
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the daemon has made its first sweep and takes requests (its control socket answers)."""

        def answers() -> bool:
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(self.sandbox.runtime / "control.sock"))
                except OSError:
                    return False
                return True

        self.wait_for(answers, timeout, "the daemon's first sweep")

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
        """PREDICATE's first true value, asked again after 0.05 s, then less and less often up to every 0.4 s: a look
        is a `gitopsd status` or `history` in this process (10-30 ms of CPU), and at a fixed 0.1 s the waits of four
        test workers took half a core from the daemons they waited for."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}")
            time.sleep(pause)
            pause = min(0.4, pause * 1.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()}")

    def wait_state(self, env: str, state: str, commit: str | None = None, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.sandbox.status()[env]
            ok = row["state"] == state and (commit is None or row["deployed"] == commit or row["desired"] == commit)
            return row if ok else None

        return self.wait_for(check, timeout, f"{env} {state} {commit or ''}")

    def wait_result(self, env: str, commit: str, result: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for a deployment of `commit` in `env` to end with `result`; return its history row."""
        return self.wait_for(
            lambda: next((d for d in self.sandbox.history(env) if d["commit"] == commit and d["result"] == result), None),
            timeout,
            f"{env} {commit[:7]} {result}",
        )

    def memory(self, field: str = "VmRSS") -> int:
        """A figure of the daemon's /proc/PID/status in bytes (VmRSS now, VmHWM its peak): its own, not its children's."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak_memory(self) -> None:
        """Make VmHWM the current RSS again (Linux's clear_refs 5), so that the next peak read is what came after."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
