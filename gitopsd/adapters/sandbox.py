"""The sandbox every playbook run and every inventory evaluation runs in (bubblewrap).

Repository content is code that runs on the deploy server: playbooks, `delegate_to: localhost`
tasks, lookups, plugins shipped in the tree, inventory scripts. It must not read or write
gitopsd's own state (the deployment records the promotion rule trusts), its configuration, its
runtime folder, the repositories, or other deployments' exports. So a run sees, like AWX's job
isolation, a hide list over an explicit show list:

- shown read-only: the system (/usr, /etc, /opt), the Python that runs Ansible and gitopsd's
  package, the exported tree of this deployment, and `sandbox.read_only` from the config;
- shown writable: this run's own folder (ansible-runner's private data dir, which holds the
  run's private HOME and TMPDIR) and `sandbox.writable` (e.g. the folders of local hosts);
- hidden even where a shown folder contains them: the state and runtime folders, the config file
  (and its folder when that is gitopsd's own, like /etc/gitopsd), every repository;
- not there at all: /home, /root, /srv, /var, /tmp (a fresh one), /run (a fresh one).

The service's SSH private keys are never shown: the run's `~/.ssh` holds only the daemon's
`known_hosts` and `config` (read-only), and a playbook run uses the keys through an ssh-agent that
lives only for the run (runner.py starts it) and whose socket alone is shown. CI steps and inventory
reads get no agent, and no network unless `sandbox.network` gives CI steps one: nothing they run
can reach the daemon's API, dashboard or any other service on this machine. Playbook runs have no network
either (`sandbox.playbook_network: ssh-only`): their ssh gets out through the run's forwarder (sshgate.py),
shown as SSH_GATE_SOCKET, to the inventory's SSH servers only.

It has its own process-ID namespace: when the run ends (or is canceled, or times out, or the
daemon dies), the kernel kills every process it started, also ones that detached with `setsid`.
Where the daemon runs as root, the run drops to `sandbox.user` (default `nobody`) inside the
sandbox, with no capabilities and no way to regain privileges.

This module only builds the argument list; runner.py (and sandboxed.py, for galaxy and vault) starts the processes.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import gitopsd

from ..core.errors import ConfigurationError
from ..core.runfiles import write_own
from ..core.settings import SandboxPolicy

BWRAP = "bwrap"
SYSTEM_READ_ONLY = ("/usr", "/etc", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SSH_SHOWN = ("known_hosts", "config")  # of the daemon's ~/.ssh, the only files a run sees: no private key
AGENT_SOCKET = "/run/gitopsd-agent/agent.sock"  # where a playbook run finds its ssh-agent (SSH_AUTH_SOCK)
SSH_GATE_SOCKET = "/run/gitopsd-ssh/gate.sock"  # where a playbook run's ssh finds its forwarder (sshgate.py)
# Where a playbook run's ssh keeps its control sockets (its `cp` folder, shown there): a socket's path fits 107 bytes,
# and a run's folder under a long state_dir would not leave room for ssh's 40 characters.
SSH_CONTROL_DIR = "/run/gitopsd-ssh/cp"
RUN_PROCESSES = 1024  # a run's processes at most (RLIMIT_NPROC): Ansible with forks=100 over SSH uses a few hundred
# The largest file a run may write (RLIMIT_FSIZE; a bigger write ends the process with SIGXFSZ): its folder lies in the
# state folder, and a `dd` or one gigantic event there would fill the disk the daemon's records need.
RUN_FILE_SIZE = 4 << 30


class SandboxError(ConfigurationError):
    """The sandbox cannot be set up (bubblewrap missing, unknown user)."""


def default_user() -> str | None:
    """`nobody` when the daemon runs as root, else None (the run keeps the daemon's user)."""
    return "nobody" if os.geteuid() == 0 else None


def run_as(policy: SandboxPolicy) -> tuple[int, int] | None:
    """The (uid, gid) a run drops to, or None when it keeps the daemon's user. Raise SandboxError."""
    if os.geteuid() != 0 or policy.user in (None, "root"):
        return None
    try:
        entry = pwd.getpwnam(policy.user)
    except KeyError as exc:
        raise SandboxError(f"sandbox.user {policy.user!r} does not exist on this machine") from exc
    return entry.pw_uid, entry.pw_gid


def python_paths() -> list[Path]:
    """What a Python run inside needs: this interpreter's prefixes, and gitopsd's package folder."""
    paths = {
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(sys.executable).resolve().parent,
        Path(gitopsd.__file__).resolve().parent,
    }
    return sorted(paths)


def hidden_paths(config_file: Path, state_dir: Path, runtime_dir: Path, repositories: list[Path]) -> tuple[Path, ...]:
    """gitopsd's own paths, which no run may see."""
    hide = [config_file, state_dir, runtime_dir, *repositories]
    if "gitopsd" in config_file.parent.name:  # a folder of its own, like /etc/gitopsd: tokens may live beside it
        hide.append(config_file.parent)
    return tuple(sorted({Path(p) for p in hide}))


# Fields of the config (at any depth) that name a file holding a secret: vault passwords, tokens, keys.
SECRET_FIELDS = (
    "vault_password_file",
    "tokens_file",
    "proxy_secret_file",
    "secret_file",
    "token_file",
    "password_file",
    "identity_file",
    "signing_key",
)


def secret_files(value: Any) -> set[Path]:
    """Every file the config names that holds a secret: a qa run must not read production's vault password (a run
    gets its own copy in its folder), the API's tokens or gitopsd's signing key, wherever the administrator keeps them."""
    found: set[Path] = set()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if field.name in SECRET_FIELDS and isinstance(item, Path):
                found.add(item)
            else:
                found |= secret_files(item)
    elif isinstance(value, tuple | list):
        for item in value:
            found |= secret_files(item)
    return found


def for_config(config: Any) -> SandboxPolicy:
    """What playbook runs, inventory reads and CI steps may see: the config's sandbox, with gitopsd's own paths and
    every secret file it names hidden."""
    hide = hidden_paths(config.source, config.state_dir, config.runtime_dir, [r.path for r in config.repositories])
    hide = tuple(sorted({*hide, *secret_files(config)}))
    listens = ((config.api.host, config.api.port),) if config.api is not None else ()
    policy: SandboxPolicy = replace(config.sandbox, hide=hide, daemon_addresses=listens)
    return policy


def bwrap_args(  # noqa: C901 (the sandbox's mounts: one branch per optional part of the run)
    policy: SandboxPolicy,
    *,
    project: Path,
    run_dir: Path,
    uid: int,
    read_only: tuple[Path, ...] = (),
    network: bool = True,
    agent: Path | None = None,
    ssh_gate: Path | None = None,
    ssh_control: Path | None = None,
) -> list[str]:
    """The bubblewrap options (without the command) for one run whose tree is `project`.

    The order matters: later mounts cover earlier ones, so the hidden paths come after every
    shown folder (no shown parent can reveal them), then the run's private home, then this run's own
    folders (which may lie beneath that home), then `read_only`: what gitopsd shows this run from
    inside its own hidden folders (known_hosts, installed requirements). Without `network` the run
    has a network namespace of its own (loopback only, nothing listens); `agent` is the socket of
    the run's ssh-agent, shown as AGENT_SOCKET; `ssh_gate` the socket of its SSH forwarder, shown as SSH_GATE_SOCKET
    (the run's ssh config is then the one command_prefix writes: the daemon's, and ssh sent through the forwarder);
    `ssh_control` the folder of ssh's control sockets, shown as SSH_CONTROL_DIR.
    """
    args = [
        "--die-with-parent",
        "--unshare-pid",
        "--new-session",
        *([] if network else ["--unshare-net"]),
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--tmpfs",
        "/dev/shm",  # noqa: S108 (a mount point or a folder the unit hides, not a temporary file)
        "--proc",
        "/proc",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",  # noqa: S108 (a mount point or a folder the unit hides, not a temporary file)
        "--tmpfs",
        "/run",
    ]
    shown = [*python_paths(), *policy.read_only, *policy.writable, project, run_dir]
    # bubblewrap makes missing parents of a mount point 0700 (root's): make them traversable first.
    for parent in _parents(shown):
        args += ["--perms", "0755", "--dir", parent]
    for system in SYSTEM_READ_ONLY:
        if os.path.isdir(system):
            args += ["--ro-bind", system, system]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    for path in [*python_paths(), *policy.read_only]:
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    for path in policy.writable:
        if path.exists():
            args += ["--bind", str(path), str(path)]
    for path in policy.hide:
        if path.is_dir():
            args += ["--tmpfs", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    # The run's user gets the run's private folder as its home (Ansible and ssh look the home up in
    # the user database, not in $HOME), with the daemon's known_hosts and ssh config in it, never a key.
    # The home goes first: the service user's home is its state folder (install-service), so this run's folder
    # and tree lie beneath it, and a home mounted after them would cover them.
    home = home_of(uid)
    extra = [path for path in read_only if path.exists()]
    for parent in _parents([Path(home)]):  # again: a hidden folder above it is a fresh tmpfs now
        args += ["--perms", "0755", "--dir", parent]
    args += ["--bind", str(run_dir / "home"), home]
    for parent in _parents([project, run_dir, *extra]):  # again: the home or a hidden folder may cover them now
        args += ["--perms", "0755", "--dir", parent]
    # A CI step's tree lies inside its run folder, which is bound after it: its build writes there.
    args += [
        "--ro-bind",
        str(project),
        str(project),
        "--bind",
        str(run_dir),
        str(run_dir),
        "--chdir",
        str(project),
        "--setenv",
        "HOME",
        home,
        "--setenv",
        "TMPDIR",
        str(run_dir / "tmp"),
    ]
    ssh = Path(os.path.expanduser("~")) / ".ssh"
    for name in SSH_SHOWN:
        if (ssh / name).is_file() and not (ssh_gate and name == "config"):
            args += ["--ro-bind", str(ssh / name), f"{home}/.ssh/{name}"]
    if ssh_gate is not None:  # ssh runs ProxyCommand with $SHELL, and a run's user may have nologin
        args += [
            "--ro-bind",
            str(run_dir / RUN_SSH_CONFIG),
            f"{home}/.ssh/config",
            "--perms",
            "0755",
            "--dir",
            os.path.dirname(SSH_GATE_SOCKET),
            "--bind",
            str(ssh_gate),
            SSH_GATE_SOCKET,
            "--setenv",
            "SHELL",
            "/bin/sh",
        ]
    if ssh_control is not None:  # the run's folder for ssh's control sockets, at a path short enough for them
        args += ["--perms", "0755", "--dir", os.path.dirname(SSH_CONTROL_DIR), "--bind", str(ssh_control), SSH_CONTROL_DIR]
    if agent is not None:
        args += [
            "--perms",
            "0755",
            "--dir",
            os.path.dirname(AGENT_SOCKET),  # else root's 0700: `nobody` cannot reach it
            "--bind",
            str(agent),
            AGENT_SOCKET,
            "--setenv",
            "SSH_AUTH_SOCK",
            AGENT_SOCKET,
        ]
    else:  # the daemon's own agent, if it has one, is not this run's
        args += ["--unsetenv", "SSH_AUTH_SOCK"]
    for path in extra:
        args += ["--ro-bind", str(path), str(path)]
    return args


def home_of(uid: int) -> str:
    """Where a run as `uid` has its private home: the user database's home of another user, else the daemon's $HOME."""
    return pwd.getpwuid(uid).pw_dir if uid != os.geteuid() else os.path.expanduser("~")


RUN_SSH_CONFIG = "ssh_config"  # in the run's folder, the daemon's: shown read-only as the run's ~/.ssh/config


def ssh_config(daemons: str) -> str:
    """A run's ssh config with a forwarder: the daemon's ~/.ssh/config and the system's first, as ssh reads them
    (it keeps the first value it reads, so their ProxyJump and the inventory's ssh args win), then the forwarder as
    every other connection's ProxyCommand."""
    helper = Path(__file__).resolve().parent.parent / "libexec" / "ssh-proxy"
    return (
        f"{daemons.rstrip()}\n\n"
        "# gitopsd: this playbook run reaches SSH hosts only through its forwarder (sandbox.playbook_network)\n"
        f"Match all\n{system_ssh_config()}\n"
        f'Host *\n  ProxyCommand "{sys.executable}" -I -S "{helper}" %h %p "{SSH_GATE_SOCKET}"\n'
    )


SYSTEM_SSH_CONFIG = Path("/etc/ssh/ssh_config")


def system_ssh_config(path: Path = SYSTEM_SSH_CONFIG, depth: int = 0) -> str:
    """The system's ssh config written out in full, its Includes inlined: ssh reads no system config with -F, and an
    `Include` of it from the run's config fails where the run's user namespace shows root's files as nobody's
    ("Bad owner or permissions on /etc/ssh/ssh_config": the service runs unprivileged)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].lower() == "include" and depth < 4:
            for pattern in words[1:]:
                full = pattern if pattern.startswith("/") else str(path.parent / pattern)
                for name in sorted(glob.glob(os.path.expanduser(full))):
                    lines.append(system_ssh_config(Path(name), depth + 1))
        else:
            lines.append(line)
    return "\n".join(lines)


def _parents(paths: list[Path]) -> list[str]:
    """Every folder above `paths` (not /), shallowest first."""
    return sorted(
        {str(parent) for path in paths for parent in Path(path).parents if str(parent) != "/"}, key=lambda p: (p.count("/"), p)
    )


def command_prefix(
    policy: SandboxPolicy,
    *,
    project: Path,
    run_dir: Path,
    read_only: tuple[Path, ...] = (),
    network: bool = True,
    agent: Path | None = None,
    ssh_gate: Path | None = None,
    ssh_control: Path | None = None,
) -> list[str]:
    """The argv that enters the sandbox for one run; the command to run inside goes after it.

    Creates the run's private HOME (with its .ssh; with `ssh_gate`, an ssh config that sends ssh through the
    run's forwarder) and TMPDIR and the folders ansible-runner's callback writes its events to (ident `run`);
    when the run drops to another user, hands it the run's folder.
    """
    uid_gid = run_as(policy)
    # ansible-runner's callback, inside, writes events and facts under artifacts/<ident>.
    for sub in ("home", "home/.ssh", "tmp", "artifacts/run/job_events", "artifacts/run/fact_cache"):
        (run_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if uid_gid is not None:
        for folder, _dirs, files in os.walk(run_dir):
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(name, *uid_gid, follow_symlinks=False)
    if ssh_gate is not None:  # after the walk: the daemon's file, which the run cannot change
        daemons = Path(os.path.expanduser("~")) / ".ssh" / "config"
        text = ssh_config(daemons.read_text(encoding="utf-8", errors="replace") if daemons.is_file() else "")
        write_own(run_dir / RUN_SSH_CONFIG, text.encode(), 0o644)
    prefix = [
        BWRAP,
        *bwrap_args(
            policy,
            project=project,
            run_dir=run_dir,
            uid=uid_gid[0] if uid_gid else os.geteuid(),
            read_only=read_only,
            network=network,
            agent=agent,
            ssh_gate=ssh_gate,
            ssh_control=ssh_control,
        ),
    ]
    if uid_gid is not None:
        uid, gid = uid_gid
        prefix += [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    # A fork bomb stops at RUN_PROCESSES, leaving the daemon and other runs room to fork (not for a run kept as root);
    # a file stops growing at RUN_FILE_SIZE; a run that eats memory is the kernel's first pick when memory runs out,
    # never the daemon (unit: OOMPolicy=continue).
    prefix += ["prlimit", f"--nproc={RUN_PROCESSES}", f"--fsize={RUN_FILE_SIZE}", "--", "choom", "-n", "1000", "--"]
    return prefix


def write_argv(path: Path, argv: list[str]) -> None:
    """Save an argv for the launcher, NUL-separated (no argument can contain NUL)."""
    for arg in argv:
        if "\0" in arg:
            raise SandboxError(f"a sandbox argument contains a NUL byte: {arg!r}")
    write_own(path, b"".join(a.encode() + b"\0" for a in argv))


def launcher() -> Path:
    """The executable ansible-runner starts instead of ansible-playbook: it enters the sandbox."""
    return Path(__file__).resolve().parent.parent / "libexec" / "sandboxed-ansible-playbook"


def check(policy: SandboxPolicy) -> None:
    """Raise SandboxError unless runs can be sandboxed as configured (bubblewrap, launcher, user)."""
    if not policy.enabled:
        return
    import shutil

    if shutil.which(BWRAP) is None:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap), or set "
            "`sandbox: {enabled: false}` to run playbooks unsandboxed (they can then forge the "
            "deployment records)"
        )
    for tool in ("prlimit", "choom"):
        if shutil.which(tool) is None:
            raise SandboxError(f"{tool} is not installed (it bounds each run's processes): install util-linux")
    if not os.access(launcher(), os.X_OK):
        raise SandboxError(f"{launcher()} is not executable: reinstall gitopsd")
    run_as(policy)
