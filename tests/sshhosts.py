"""Real SSH target hosts on this machine, for tests that deploy over SSH.

Each host is one `/usr/sbin/sshd -D -e -f <config>` process listening on its own loopback address
(127.0.0.11, 127.0.0.12, ...) on a free high port, with its own host key; one client key pair per
`start_hosts` call is the only way in (public key only, `AllowUsers` the current user). Everything
lives in `<tmp>/sshhosts/`: keys, authorized_keys, and per host its sshd_config, pid file and log.

    hosts = start_hosts(tmp_path, ["web-1", "web-2"])      # returns once each runs `ssh ... true`
    (tmp_path / "hosts.yml").write_text(inventory_yaml(hosts, {"web-1": {"app_port": 18001}}))
    hosts[0].stop()      # the host is unreachable (listener and every session of it killed)
    hosts[0].start()     # same address and port again
    stop_all()           # every host this module started (or stop_all(hosts))

As root (CI), sshd needs its privilege separation folder /run/sshd, which only the service unit
or tmpfiles creates, so it is created here when missing; `PermitRootLogin prohibit-password` lets
the key log in as root. As another user, sshd runs unprivileged and only that user can log in.
`UsePAM no` is the default; an account whose password is locked ('!' in /etc/shadow) is then
refused by sshd itself, so for such an account PAM is used instead (see `_account_locked`).
Sessions get SHLVL=1 (`SetEnv`), so a bash login shell does not source the account's ~/.bashrc
before every command: the targets behave the same whatever the tester's shell setup is.

`sshd_processes()` finds this module's sshd processes, even reparented: the listener by its
command line (which names its sshd_config) and each connection's processes by their socket on the
host's address and port. (An environment variable cannot tag them: sshd's setproctitle overwrites
the memory /proc/<pid>/environ shows.) sshd is started with a minimal environment, so it never
carries gitopsd's deployment marker.
"""

from __future__ import annotations

import atexit
import functools
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.support import free_port

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
FIRST_OCTET = 11
VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"

# Skips a test where sshd is not installed (`make deps` installs openssh-server, so CI runs it).
# GITOPSD_REQUIRE_SSHD=1 turns the skip into a failure.
skip_without_sshd = pytest.mark.skipif(
    not (SSHD.exists() and shutil.which("ssh") and shutil.which("ssh-keygen")) and os.environ.get("GITOPSD_REQUIRE_SSHD") != "1",
    reason="needs openssh-server and openssh-client (/usr/sbin/sshd, ssh, ssh-keygen): run `make deps`",
)

_started: list[SshHost] = []


def interpreter() -> str:
    """The Python that targets use for Ansible modules: the project's venv, else this one."""
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def keygen(path: Path, comment: str) -> Path:
    """An ed25519 key pair at path and path.pub (kept if already there)."""
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return path


def _account_locked(user: str) -> bool:
    """Is the user's password locked ('!...')? Without PAM, sshd refuses such an account.

    Debian installed without a root password has `root:!:` or `root:!*:` in /etc/shadow, and
    OpenSSH (UsePAM no) then logs "User root not allowed because account is locked".
    """
    try:
        lines = Path("/etc/shadow").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1].startswith("!")
    return False


@functools.cache
def _sshd_version() -> tuple[int, int]:
    proc = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, timeout=10)
    text = (proc.stderr or proc.stdout).strip()  # "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL ..."
    try:
        major, minor = text.split("_", 1)[1].split(",")[0].split()[0].split("p")[0].split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def ensure_privsep_dir() -> None:
    """sshd started as root refuses to run without /run/sshd (root-owned, not group/world writable)."""
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(PRIVSEP_DIR, 0o755)


def sshd_processes(hosts: list[SshHost] | None = None) -> list[psutil.Process]:
    """Live sshd processes of these hosts (default: every host this module started): listeners,
    found by their sshd_config in the command line, and the processes of each connection, found
    by their TCP socket on a host's address and port."""
    hosts = list(_started if hosts is None else hosts)
    configs = {str(h.config) for h in hosts}
    endpoints = {(h.address, h.port) for h in hosts}
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if not (proc.info["name"] or "").startswith("sshd") or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(arg in configs for arg in proc.info["cmdline"] or ()) or any(
                c.laddr and (c.laddr.ip, c.laddr.port) in endpoints for c in proc.net_connections("tcp")
            ):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def ssh_clients(hosts: list[SshHost] | None = None) -> list[psutil.Process]:
    """Live ssh client processes connected to these hosts (default: every host this module started).

    Ansible's ControlPersist masters ("ssh: ~/.ansible/cp/... [mux]") stay up to 60 s after a
    run, and gitopsd's reaper cannot tell them apart by environment: ssh's setproctitle overwrites
    the memory /proc/<pid>/environ shows. Stopping a host ends them.
    """
    endpoints = {(h.address, h.port) for h in (_started if hosts is None else hosts)}
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "ssh" and any(
                c.raddr and (c.raddr.ip, c.raddr.port) in endpoints for c in proc.net_connections("tcp")
            ):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _is_sshd(proc: psutil.Process) -> bool:
    try:
        return proc.name().startswith("sshd")
    except psutil.Error:
        return False


def _gone(proc: psutil.Process) -> bool:
    """Dead or a zombie: a killed session stays a zombie until whoever inherited it reaps it."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _kill(procs: list[psutil.Process], sig: int = signal.SIGTERM, grace: float = 2.0) -> None:
    """Send sig, wait up to grace seconds, then SIGKILL whatever is left."""
    for attempt in (sig, signal.SIGKILL):
        for proc in procs:
            try:
                proc.send_signal(attempt)
            except psutil.Error:
                pass
        deadline = time.monotonic() + grace
        while True:
            procs = [p for p in procs if not _gone(p)]
            if not procs or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not procs:
            return


class SshHost:
    """One sshd on its own loopback address: a target host that can be taken down and brought back."""

    def __init__(
        self, name: str, address: str, port: int, folder: Path, key: Path, user: str, authorized_keys: Path, use_pam: bool = False
    ) -> None:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad host name {name!r}")
        if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
            raise ValueError(f"{address} is not a loopback address")
        self.name = name
        self.address = address
        self.port = port
        self.folder = folder  # sshd_config, host key, pid file and log of this host
        self.key = key  # the client's private key
        self.user = user
        self.authorized_keys = authorized_keys
        self.use_pam = use_pam
        self.config = folder / "sshd_config"
        self.host_key = folder / "ssh_host_ed25519_key"
        self.pidfile = folder / "sshd.pid"
        self.log = folder / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SshHost({self.name!r}, {self.address}:{self.port}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """The listening sshd's pid, or None while the host is down."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def write_config(self) -> None:
        lines = [
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pidfile}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            f"UsePAM {'yes' if self.use_pam else 'no'}",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AuthenticationMethods publickey",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            "LoginGraceTime 30",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
            # bash sources ~/.bashrc for every command sshd runs, unless SHLVL says it is nested:
            # the account's shell setup (e.g. `pyenv init`, ~0.3 s and a lock file) stays out of
            # every Ansible task. sshd >= 8.7 sets SetEnv variables in each session.
            "SetEnv SHLVL=1",
        ]
        if _sshd_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # else refused connections get 127.0.0.1 penalized
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart) sshd on the same address and port; return once a login works."""
        if self.running:
            return
        ensure_privsep_dir()
        if not self.host_key.exists():
            keygen(self.host_key, f"host {self.name}")
        if not self.config.exists():
            self.write_config()
        self.pidfile.unlink(missing_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                close_fds=True,
            )
        if self not in _started:
            _started.append(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def ssh_argv(self, *command: str) -> list[str]:
        """argv of an ssh client that logs in to this host without any user configuration."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            f"{self.user}@{self.address}",
            *command,
        ]

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until sshd listens and `ssh ... true` succeeds; fail with the end of its log."""
        deadline = time.monotonic() + timeout
        while True:  # listening?
            if not self.running:
                raise RuntimeError(f"sshd of {self.name} exited ({self._proc and self._proc.returncode}):\n{self.log_tail()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"sshd of {self.name} does not listen on {self.address}:{self.port}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.02)
        while True:  # a login works?
            proc = subprocess.run(
                self.ssh_argv("true"), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline or not self.running:
                raise RuntimeError(
                    f"ssh to {self.name} ({self.user}@{self.address}:{self.port}) fails: "
                    f"{proc.stderr.strip()}\nsshd log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill the listening sshd and every session it has open: the host becomes unreachable.

        sshd processes (the listener, then each connection's) get SIGKILL at once: a session can sit
        out SIGTERM for seconds. Commands still running in a session get SIGTERM first, so their
        clean-up traps run (a shell killed outright in `pyenv rehash` leaves a lock behind that
        stalls every later shell for 60 s), and SIGKILL after 2 s. Killing the sessions also ends
        the ssh ControlPersist masters Ansible keeps connected to the host (see `ssh_clients`).
        """
        descendants: list[psutil.Process] = []
        if self._proc is not None and self._proc.poll() is None:
            try:
                descendants = psutil.Process(self._proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            self._proc.kill()
            self._proc.wait()
        # Sessions whose listener was already gone were reparented; their sockets give them away.
        sessions = sshd_processes([self])
        for proc in sessions:
            try:
                descendants += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        unique = {p.pid: p for p in descendants}
        sshd = [p for p in unique.values() if _is_sshd(p)]
        _kill(sshd, signal.SIGKILL)
        _kill([p for p in unique.values() if p not in sshd], signal.SIGTERM)
        self.pidfile.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_hosts(
    tmp: Path, names: list[str], *, first_octet: int = FIRST_OCTET, user: str | None = None, timeout: float = 15.0
) -> list[SshHost]:
    """Start one sshd per name on 127.0.0.<first_octet + i>, each on a free port; wait until each
    accepts a login with the client key `<tmp>/sshhosts/id_ed25519`. Stops them all on failure."""
    if not SSHD.exists() and os.environ.get("GITOPSD_REQUIRE_SSHD") != "1":
        pytest.skip(f"{SSHD} is missing: install openssh-server (make deps)")
    if first_octet + len(names) > 255:
        raise ValueError("too many hosts for 127.0.0.x")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate host names in {names}")
    user = user or getpass.getuser()
    base = Path(tmp).absolute() / "sshhosts"
    base.mkdir(parents=True, exist_ok=True)
    key = keygen(base / "id_ed25519", f"gitopsd-test@{socket.gethostname()}")
    authorized = base / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text(encoding="utf-8"), encoding="utf-8")
    use_pam = _account_locked(user)
    hosts: list[SshHost] = []
    try:
        for i, name in enumerate(names):
            address = f"127.0.0.{first_octet + i}"
            folder = base / name
            folder.mkdir(exist_ok=True)
            for attempt in range(3):  # a free port can be taken before sshd binds it
                host = SshHost(name, address, free_port(address), folder, key, user, authorized, use_pam)
                host.config.unlink(missing_ok=True)
                try:
                    host.start(timeout=timeout)
                    break
                except RuntimeError as exc:
                    if attempt == 2 or "Address already in use" not in str(exc):
                        raise
            hosts.append(host)
    except BaseException:
        stop_all(hosts)
        raise
    return hosts


def stop_all(hosts: list[SshHost] | None = None) -> None:
    """Stop the given hosts, or every host this module started in this process."""
    for host in list(_started if hosts is None else hosts):
        host.stop()


atexit.register(stop_all)


def inventory_yaml(
    hosts: list[SshHost], extra_host_vars: dict[str, dict[str, Any]] | None = None, group_vars: dict[str, Any] | None = None
) -> str:
    """An Ansible YAML inventory reaching each host over SSH, plus per-host and group variables."""
    extra_host_vars = extra_host_vars or {}
    unknown = set(extra_host_vars) - {h.name for h in hosts}
    if unknown:
        raise ValueError(f"extra_host_vars for unknown hosts: {sorted(unknown)}")
    entries: dict[str, dict[str, Any]] = {}
    for host in hosts:
        entries[host.name] = {
            "ansible_connection": "ssh",
            "ansible_host": host.address,
            "ansible_port": host.port,
            "ansible_user": host.user,
            "ansible_ssh_private_key_file": str(host.key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_python_interpreter": interpreter(),
            **extra_host_vars.get(host.name, {}),
        }
    inventory: dict[str, Any] = {"all": {"hosts": entries}}
    if group_vars:
        inventory["all"]["vars"] = dict(group_vars)
    return yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)


@pytest.fixture
def ssh_hosts(tmp_path):
    """Factory fixture: `ssh_hosts(["a", "b"])` starts hosts under tmp_path; all stopped afterwards,
    and no sshd of theirs may be left. Import it into a test module (or a conftest) to use it."""
    started: list[SshHost] = []

    def start(names: list[str], **kwargs: Any) -> list[SshHost]:
        hosts = start_hosts(tmp_path, names, **kwargs)
        started.extend(hosts)
        return hosts

    yield start
    stop_all(started)
    assert sshd_processes(started) == []
