"""Running repository content: ansible-runner and psutil live here and nowhere else.

A run gets a fresh private data dir (ansible-runner keeps `env/*` files that would leak into the
next run), its extra vars as a file of `!unsafe` values (Jinja never evaluates them), and a marker
in its environment so that every process it started can be found and reaped, even after the
daemon itself was killed. Playbook runs and inventory reads go through the sandbox (sandbox.py):
ansible-runner starts the sandbox's launcher instead of ansible-playbook.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import ansible_runner
import psutil

from . import sandbox, sshgate
from ..core.errors import GitopsdError
from ..core.settings import SandboxPolicy
from ..core.types import HostInfo, PlaybookRun, RunOutcome, TaskChange
from .inventory import InventoryError

__all__ = ["PlaybookRun", "RunOutcome", "judge", "processes_of", "reap", "read_hosts", "run_playbook",
           "scrub_environment", "vault_values"]

MARKER = "GITOPSD_DEPLOYMENT"
# Variables that belong to the daemon's own supervisor, never to Ansible.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


# ansible-runner's own settings, which a repository's ansible.cfg cannot change (environment variables win
# over ansible.cfg): its callback writes the events gitopsd judges, and host keys are always checked.
SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"   # Ansible's default ssh_args, kept
REQUIREMENTS = ("requirements.yml", "roles/requirements.yml", "collections/requirements.yml")


def extravars_file(path: Path, values: dict[str, Any]) -> None:
    """Write extra vars as JSON strings marked unsafe: data that Jinja never evaluates.

    JSON with `__ansible_unsafe` keeps every value a string; ansible-core 2.19 reads YAML
    `!unsafe "0123"` as the integer 83 and `!unsafe ""` as None. A mapping (gitopsd_artifacts)
    stays a mapping, each of its values marked so.
    """
    for key in values:
        if not key.isidentifier():
            raise ValueError(f"bad extra var name {key!r}")

    def unsafe(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): unsafe(v) for k, v in value.items()}
        return {"__ansible_unsafe": str(value)}
    path.write_text(json.dumps({k: unsafe(v) for k, v in values.items()}, indent=1) + "\n", encoding="utf-8")


def artifact_files(extravars: dict[str, Any]) -> tuple[Path, ...]:
    """The files of `gitopsd_artifacts`, which the sandbox shows the run read-only (they live in the hidden state folder)."""
    artifacts = extravars.get("gitopsd_artifacts") or {}
    return tuple(sorted({Path(a["path"]) for a in artifacts.values()}))


def judge(stats: dict[str, Any] | None, no_hosts_matched: bool, status: str, rc: int | None) -> tuple[bool, str, dict[str, str]]:
    """Given the final `playbook_on_stats` data, return (ok, reason, per-host result)."""
    if status in ("timeout", "canceled"):
        return False, f"run {'timed out' if status == 'timeout' else 'was canceled'}", {}
    if stats is None:
        return False, f"ansible-playbook ended without final stats (exit code {rc}): syntax error or missing file?", {}
    hosts: dict[str, str] = {}
    for host in stats.get("processed", {}):
        hosts[host] = "ok"
    for host in stats.get("failures", {}):
        hosts[host] = "failed"
    for host in stats.get("dark", {}):
        hosts[host] = "unreachable"
    if no_hosts_matched or not hosts:
        return False, "no hosts matched: the inventory or the play's hosts pattern selects nothing", hosts
    bad = sorted(h for h, r in hosts.items() if r != "ok")
    if bad:
        fine = len(hosts) - len(bad)   # say the others were fine: "failed on prod-1" alone reads as all failed
        return False, ("failed on " + ", ".join(f"{h} ({hosts[h]})" for h in bad)
                       + (f"; {fine} of {len(hosts)} hosts ok" if fine else "")), hosts
    if status != "successful":
        return False, f"ansible-playbook reported {status} (exit code {rc})", hosts
    return True, f"succeeded on {len(hosts)} host{'s' if len(hosts) != 1 else ''}", hosts


def ssh_envvars(known_hosts: Path | None) -> dict[str, str]:
    """Ansible settings that make ssh check host keys (ansible-runner turns checking off).

    With `known_hosts`, ssh accepts only the keys recorded there (and in /etc/ssh/ssh_known_hosts)
    and never writes to it. They go in ssh_args, which come first on ssh's command line, and ssh
    keeps the first value of an option: ssh_common_args or ssh_extra_args cannot turn checking off.
    """
    envvars = {"ANSIBLE_HOST_KEY_CHECKING": "True"}
    if known_hosts is not None:
        envvars["ANSIBLE_SSH_ARGS"] = (f"{SSH_ARGS} -o StrictHostKeyChecking=yes -o UpdateHostKeys=no "
                                       f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))}")
    return envvars


def run_playbook(run: PlaybookRun, cancel: threading.Event, policy: SandboxPolicy | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Run the playbook (in the sandbox of `policy`) to the end, a timeout or `cancel`; reap every process it started."""
    run.data_dir.mkdir(parents=True, exist_ok=False)
    vars_path = run.data_dir / "gitopsd-vars.json"
    extravars_file(vars_path, run.extravars)
    stats: dict[str, Any] | None = None
    no_hosts = False
    unreachable: dict[str, str] = {}   # host -> why, from Ansible's events
    changes: list[TaskChange] = []

    def handle(event: dict[str, Any]) -> bool:
        nonlocal stats, no_hosts
        kind = event.get("event")
        data = event.get("event_data", {})
        if kind == "runner_on_ok" and reports_changed(event):
            changes.append(task_change(data, run.workdir))
        if kind == "playbook_on_stats":
            stats = data
        elif kind == "playbook_on_no_hosts_matched":
            no_hosts = True
        elif kind == "runner_on_unreachable" and data.get("host"):
            unreachable[str(data["host"])] = str((data.get("res") or {}).get("msg", ""))
        if on_event is not None:
            on_event(event)
        return True

    known_hosts = policy.known_hosts if policy is not None else None
    try:
        requirements = install_requirements(run, policy, cancel)
    except RequirementsError as exc:
        if cancel.is_set():
            return RunOutcome(False, "canceled", None, "run was canceled")
        return RunOutcome(False, "failed", None, str(exc), permanent=exc.permanent)

    # ssh's ControlPersist masters rename themselves ("ssh: .../cp/... [mux]"), which hides the marker in
    # their environment; a control path inside the run's folder lets the reaper find them by name.
    control_dir = run.data_dir / "cp"
    control_dir.mkdir()
    envvars = {MARKER: run.marker, "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "True",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir), "PATH": _path_with_interpreter_bin(),
               **ssh_envvars(known_hosts), **(requirements.envvars(run.workdir) if requirements else {})}
    cmdline = f"-e @{shlex.quote(str(vars_path))}"
    if run.limit:
        cmdline += f" --limit {shlex.quote(run.limit)}"
    # Handlers notified before a failing task run all the same: else the retry of a failed tree finds its
    # changes made ("ok", nothing notified) and succeeds with the handlers never run. A play may say
    # `force_handlers: false`.
    cmdline += " --force-handlers"
    if run.check_mode:   # drift detection: what would change, and how, without changing it
        cmdline += " --check --diff"
    if run.verbose:
        cmdline += " -v"
    vault = None
    if run.vault_password_file is not None:
        # A private copy in the run's folder: the run's user (nobody, as root) can read it, nothing else sees it.
        vault = run.data_dir / "vault-password"
        try:
            shutil.copyfile(run.vault_password_file, vault)
        except OSError as exc:   # retrying cannot help until an operator puts the file back
            return RunOutcome(False, "failed", None,
                              f"vault_password_file {run.vault_password_file} cannot be read "
                              f"({exc.strerror or exc}): the tree's Ansible Vault content cannot be decrypted; "
                              "restore the file (readable by the daemon's user), then `gitopsd retry`",
                              permanent=True)
        os.chmod(vault, 0o500 if os.access(run.vault_password_file, os.X_OK) else 0o400)
        cmdline += f" --vault-password-file {shlex.quote(str(vault))}"
    binary = None
    agent: tuple[subprocess.Popen[bytes], Path] | None = None
    gate = None
    try:
        if policy is not None and policy.enabled:
            argv_file = run.data_dir / "sandbox.argv"
            shown = tuple(p for p in (known_hosts, requirements.folder if requirements else None) if p is not None)
            shown += artifact_files(run.extravars)
            identities = identity_files()
            if policy.playbook_network != "host":
                gate = ssh_gate(run, policy, cancel)
            prefix = sandbox.command_prefix(policy, project=run.workdir, run_dir=run.data_dir, read_only=shown,
                                            agent=run.data_dir / "agent.sock" if identities else None,
                                            network=gate is None, ssh_gate=gate.path if gate else None)
            if identities:   # after command_prefix: it hands the run's folder, where the socket goes, to the run's user
                try:
                    agent = start_agent(run.data_dir, run.marker, sandbox.run_as(policy), identities)
                except AgentError as exc:
                    return RunOutcome(False, "failed", None, str(exc), permanent=True)
            if gate is not None:   # ssh finds the user's config by the user database's home, which a kept user's $HOME is not
                config = f"{sandbox.home_of(uid_gid[0] if (uid_gid := sandbox.run_as(policy)) else os.geteuid())}/.ssh/config"
                envvars["ANSIBLE_SSH_ARGS"] = f"{envvars.get('ANSIBLE_SSH_ARGS', SSH_ARGS)} -F {shlex.quote(config)}"
            sandbox.write_argv(argv_file, prefix)
            envvars["GITOPSD_SANDBOX_ARGV"] = str(argv_file)
            binary = str(sandbox.launcher())
            cmdline += f" {shlex.quote(str(run.playbook))}"   # with its own `binary`, ansible-runner adds no playbook
        result = ansible_runner.run(
            private_data_dir=str(run.data_dir), project_dir=str(run.workdir), playbook=str(run.playbook),
            inventory=str(run.inventory), cmdline=cmdline, envvars=envvars, timeout=run.timeout,
            ident="run", quiet=True, event_handler=handle, cancel_callback=cancel.is_set, binary=binary,
            settings={"suppress_ansible_output": True})
        status, rc = result.status, result.rc
    finally:
        if agent is not None:
            stop_agent(*agent)
        reap(run.marker, also=str(control_dir))
        if gate is not None:
            gate.__exit__()
        if vault is not None:
            vault.unlink(missing_ok=True)
    ok, reason, hosts = judge(stats, no_hosts, status, rc)
    stdout = run.data_dir / "artifacts" / "run" / "stdout"
    permanent = False
    if stats is None and status == "failed" and rc == 4:
        invalid = content_error(stdout, run.workdir)
        if invalid:
            reason, permanent = f"invalid content: {invalid}", True
    keys = host_key_problems(unreachable, run.extravars)
    if keys:   # ssh refuses these hosts until someone trusts their keys: retrying cannot help, a human must look
        reason, permanent = f"{reason}: {'; '.join(keys)}", True
    return RunOutcome(ok, status, rc, reason, hosts, stdout if stdout.exists() else None, permanent, tuple(changes))


def ssh_gate(run: PlaybookRun, policy: SandboxPolicy, cancel: threading.Event) -> sshgate.Forwarder:
    """Start the forwarder of a playbook run without a network (sandbox.playbook_network: ssh-only): the hosts of
    its inventory, read in the sandbox at its first SSH connection, are all its ssh may reach."""
    def targets() -> set[tuple[str, int]]:
        # Its own marker: the reaper at the end of the read must leave the playbook's processes alone.
        hosts = read_hosts(run.inventory, sshgate.VARIABLES, workdir=run.workdir, data_dir=run.data_dir / "ssh-hosts",
                           marker=f"{run.marker}-ssh-hosts", timeout=run.timeout, cancel=cancel, policy=policy)
        return sshgate.targets(hosts)
    forwarder = sshgate.Forwarder(run.data_dir / sshgate.SOCKET_NAME, targets, set(policy.daemon_addresses),
                                  run.marker, sandbox.run_as(policy))
    return forwarder.__enter__()


MAX_DIFF = 20_000   # characters of one task's diff kept for `gitopsd drift`


def reports_changed(event: dict[str, Any]) -> bool:
    """Whether a runner_on_ok event says `changed`. A no_log result keeps nothing in the event's data, not even
    `changed`: then the line Ansible printed for it says ("changed: [host]")."""
    res = (event.get("event_data") or {}).get("res")
    if not isinstance(res, dict):
        return False
    if "censored" in res and "changed" not in res:
        return re.sub(r"\x1b\[[0-9;]*m", "", str(event.get("stdout") or "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


def task_change(data: dict[str, Any], workdir: Path) -> TaskChange:
    """A `changed` task result (a runner_on_ok event's data) as a TaskChange: no_log results keep no diff."""
    res = data.get("res") or {}
    task = str(data.get("task") or data.get("task_action") or "?")
    path = str(data.get("task_path") or "")
    root = str(workdir) + "/"
    if path.startswith(root):   # each run exports the tree afresh: the place in the tree names the task
        path = path[len(root):]
    no_log = bool(res.get("_ansible_no_log")) or "censored" in res
    diffs: list[Any] = []
    if not no_log:
        diffs += res["diff"] if isinstance(res.get("diff"), list) else [res.get("diff")]
        for item in res.get("results") or []:
            if isinstance(item, dict) and not item.get("_ansible_no_log") and "censored" not in item:
                diffs += item["diff"] if isinstance(item.get("diff"), list) else [item.get("diff")]
    text = "".join(render_diff(d) for d in diffs if d)
    if len(text) > MAX_DIFF:
        text = text[:MAX_DIFF] + "\n[diff cut at 20000 characters]\n"
    return TaskChange(str(data.get("host", "?")), task, f"{task}|{path}", text, no_log)


def render_diff(diff: Any) -> str:
    """One of Ansible's diffs (before/after with headers, or a prepared text) as unified diff text."""
    import difflib
    if not isinstance(diff, dict):
        return ""
    prepared = diff.get("prepared")
    if isinstance(prepared, str):
        return prepared if prepared.endswith("\n") else prepared + "\n"
    before, after = diff.get("before", ""), diff.get("after", "")
    if not isinstance(before, str):
        before = json.dumps(before, indent=2, sort_keys=True) + "\n"
    if not isinstance(after, str):
        after = json.dumps(after, indent=2, sort_keys=True) + "\n"
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"before: {diff.get('before_header', '')}".rstrip(),
                                        f"after: {diff.get('after_header', '')}".rstrip()))


def content_error(stdout: Path, workdir: Path) -> str | None:
    """Ansible's parse error in a run's output (exit code 4, no stats), with where it is in the tree; else None.

    ansible-playbook exits 4 without running a play when it cannot load the playbook: invalid YAML,
    an unknown module or attribute, a missing role or file. Retrying the same tree cannot help.
    """
    try:
        lines = stdout.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    error = next((i for i, line in enumerate(lines) if line.startswith(("[ERROR]: ", "ERROR! "))), None)
    if error is None:
        return None
    text = lines[error].split(" ", 1)[1].strip()
    origin = next((line for line in lines[error + 1:error + 4] if line.startswith("Origin: ")), None)
    if origin:
        where = origin[len("Origin: "):].strip()
        root = str(workdir.resolve()) + "/"
        text += f" ({where[len(root):] if where.startswith(root) else where})"
    return text


_SSH_HOST = re.compile(r"(?:Host key for|host key is known for) (\S+?)(?: has changed| and you have)")


def host_key_problems(unreachable: dict[str, str], extravars: dict[str, str]) -> list[str]:
    """One line per host ssh refused for its host key: which host, where, and the command to trust it."""
    command = f"gitopsd hosts trust {extravars.get('gitopsd_env', 'ENV')}"
    if extravars.get("gitopsd_repo"):
        command += f" --repo {extravars['gitopsd_repo']}"
    problems = []
    for host, msg in sorted(unreachable.items()):
        if "Host key verification failed" not in msg:
            continue
        found = _SSH_HOST.search(msg)
        address = found.group(1) if found else "?"
        if address.startswith("[") and "]:" in address:
            address = address[1:].replace("]:", ":", 1)
        if "has changed" in msg or "IDENTIFICATION HAS CHANGED" in msg:
            what = (f"host key of {host} ({address}) changed: ssh refused to connect (someone may be intercepting "
                    f"the connection, or the host was reinstalled), run `{command}` after checking it")
        else:
            what = (f"host key of {host} ({address}) is not trusted yet: ssh refused to connect, "
                    f"run `{command}` after checking it")
        problems.append(what)
    return problems


IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")   # the daemon's keys in ~/.ssh that a playbook run may use


class AgentError(GitopsdError):
    """The run's ssh-agent could not be started or would not take the service's key."""


def identity_files() -> list[Path]:
    """The daemon's SSH private keys (IDENTITIES in ~/.ssh) that exist."""
    ssh = Path(os.path.expanduser("~")) / ".ssh"
    return [ssh / name for name in IDENTITIES if (ssh / name).is_file()]


def start_agent(run_dir: Path, marker: str, run_as: tuple[int, int] | None, keys: list[Path]) -> tuple[subprocess.Popen[bytes], Path]:
    """Start an ssh-agent for one run, holding `keys`, its socket `<run_dir>/agent.sock`; return (process, socket).

    Like AWX's machine credentials: the run can use the keys, never read them. The agent runs as the
    run's user (ssh-agent answers only its own user and root), carries the run's marker in its
    environment and in its command line (ssh-agent makes its environment unreadable to the daemon's
    user), so the reaper finds it after a crash. Raise AgentError in one line saying what to do.
    """
    binary, adder = shutil.which("ssh-agent"), shutil.which("ssh-add")
    if binary is None or adder is None:
        raise AgentError("ssh-agent and ssh-add are not installed, so the run cannot use the service's SSH key "
                         f"{keys[0]}: install openssh-client (apt-get install openssh-client), then `gitopsd retry`")
    socket_path = run_dir / "agent.sock"
    # Relative to the run's folder: a socket's path is limited to 107 bytes, a run's folder is not.
    argv = [binary, "-D", "-a", socket_path.name]
    if run_as is not None:
        argv = ["setpriv", f"--reuid={run_as[0]}", f"--regid={run_as[1]}", "--clear-groups", "--", *argv]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER: marker}
    log = run_dir / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen([f"ssh-agent [{MARKER}={marker}]", *argv[1:]], executable=argv[0], cwd=run_dir,
                                 env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
                                 start_new_session=True)
    deadline = time.monotonic() + 10
    while not socket_path.is_socket():
        if agent.poll() is not None or time.monotonic() > deadline:
            stop_agent(agent, socket_path)
            detail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["it did not start"]
            raise AgentError(f"the run's ssh-agent did not start ({detail[-1]}): run `gitopsd doctor` as root")
        time.sleep(0.01)
    add_env = {"PATH": env["PATH"], "SSH_AUTH_SOCK": socket_path.name, "SSH_ASKPASS_REQUIRE": "never"}
    for key in keys:
        try:
            added = subprocess.run([adder, "-q", str(key)], cwd=run_dir, env=add_env, stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=10, check=False)
            why = (added.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {added.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            added, why = None, "ssh-add did not answer in 10s"
        if added is None or added.returncode != 0:
            stop_agent(agent, socket_path)
            raise AgentError(f"the service's SSH key {key} cannot be given to the run's ssh-agent ({why}): the key must "
                             "be readable by the daemon and have no passphrase (ssh-keygen -p -N '' -f KEY); "
                             "then `gitopsd retry`")
    return agent, socket_path


def stop_agent(agent: subprocess.Popen[bytes], socket_path: Path) -> None:
    """End a run's ssh-agent and remove its socket: the keys are gone from memory with it."""
    if agent.poll() is None:
        agent.kill()
    agent.wait()
    socket_path.unlink(missing_ok=True)


class RequirementsError(GitopsdError):
    """The tree's requirements.yml could not be installed."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Requirements:
    """Roles and collections installed from a tree's requirements, in a folder shared by trees with the same files."""

    folder: Path

    def envvars(self, project: Path) -> dict[str, str]:
        """Search the installed requirements first, then the tree's roles/ and collections/, then Ansible's defaults."""
        return {"ANSIBLE_ROLES_PATH": f"{self.folder / 'roles'}:{project / 'roles'}:"
                                      "~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles",
                "ANSIBLE_COLLECTIONS_PATH": f"{self.folder / 'collections'}:{project / 'collections'}:"
                                            "~/.ansible/collections:/usr/share/ansible/collections"}


def requirements_files(workdir: Path) -> list[str]:
    """The tree's requirements files (REQUIREMENTS), as regular files inside the tree."""
    found = []
    root = workdir.resolve()
    for name in REQUIREMENTS:
        path = workdir / name
        if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root):
            found.append(name)
    return found


def _lists_roles_only(path: Path) -> bool:
    """Whether a requirements file is the classic format, a list of roles at the top (`collection install` refuses it).

    Read from the first line of content, not parsed: the daemon does not load repository YAML.
    """
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        content = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if content.startswith("---"):
            content = content[3:].strip()
        if content and not content.startswith("%"):
            return content == "-" or content.startswith(("- ", "["))
    return False


def install_requirements(run: PlaybookRun, policy: SandboxPolicy | None, cancel: threading.Event) -> Requirements | None:
    """Install the tree's requirements with ansible-galaxy in the sandbox, once per content (cached by hash).

    None when the tree has none. Raise RequirementsError saying what ansible-galaxy said.
    """
    files = requirements_files(run.workdir)
    if not files:
        return None
    cache = policy.requirements_cache if policy is not None and policy.requirements_cache else run.data_dir.parent / "requirements"
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (run.workdir / name).read_bytes() + b"\0")
    folder = cache / digest.hexdigest()[:32]
    if folder.is_dir():
        return Requirements(folder)
    staging = run.data_dir / "requirements"
    staging.mkdir()
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    if not os.access(galaxy, os.X_OK):
        galaxy = shutil.which("ansible-galaxy") or "ansible-galaxy"
    for name in files:
        # A dict may list both and each command skips what is not its own; the classic list form is roles only.
        kinds = ("role",) if _lists_roles_only(run.workdir / name) else ("role", "collection")
        for kind in kinds:
            out = "roles" if kind == "role" else "collections"
            command = [galaxy, kind, "install", "-r", str(run.workdir / name), "-p", str(staging / out)]
            proc = _sandboxed(command, run, policy, cancel, f"galaxy-{kind}-{name.replace('/', '-')}")
            if proc is not None:
                raise RequirementsError(f"installing {name} ({kind}s) with ansible-galaxy failed: {proc}")
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache, 0o755)  # noqa: S103 (read by the sandboxed run as another user; nothing secret in it)
    for sub in ("roles", "collections"):
        (staging / sub).mkdir(exist_ok=True)
    # The run's user wrote it; the daemon's user owns the cached copy, which later runs only read.
    for dirpath, dirnames, filenames in os.walk(staging):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            if os.geteuid() == 0:
                os.chown(name, 0, 0, follow_symlinks=False)
            if not os.path.islink(name):
                os.chmod(name, os.lstat(name).st_mode & 0o755)
    try:
        os.rename(staging, folder)
    except OSError:
        if not folder.is_dir():   # another deployment of the same requirements won the race: use its copy
            shutil.copytree(staging, folder, symlinks=True)
    return Requirements(folder)


def _sandboxed(command: list[str], run: PlaybookRun, policy: SandboxPolicy | None, cancel: threading.Event,
               label: str) -> str | None:
    """Run a command in the run's sandbox, in the tree, time-limited and reaped. Return None, or why it failed.

    It gets the run's ssh-agent, as the playbook does: roles and collections may come from private Git over SSH.
    """
    agent = None
    if policy is not None and policy.enabled:
        identities = identity_files()
        command = sandbox.command_prefix(policy, project=run.workdir, run_dir=run.data_dir,
                                         agent=run.data_dir / "agent.sock" if identities else None) + command
        if identities:
            try:
                agent = start_agent(run.data_dir, run.marker, sandbox.run_as(policy), identities)
            except AgentError as exc:
                return str(exc)
    env = {**os.environ, MARKER: run.marker, "PATH": _path_with_interpreter_bin(), "ANSIBLE_NOCOLOR": "True"}
    log = run.data_dir / f"{label}.log"
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=run.workdir, start_new_session=True)
            deadline = time.monotonic() + run.timeout
            while proc.poll() is None:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    return "canceled" if cancel.is_set() else f"stopped after {run.timeout}s (time limit)"
                time.sleep(0.05)
    finally:
        if agent is not None:
            stop_agent(*agent)
        reap(run.marker)
    if proc.returncode == 0:
        return None
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or [f"exit code {proc.returncode}"])[-1].strip()


VAULT_HEADER = "$ANSIBLE_VAULT;"
_INLINE_VAULT = re.compile(r"!vault\s*\|[-+]?[ \t]*\n((?:[ \t]+\S.*\n?)+)")
_YAML_VALUE = re.compile(r"^\s*(?:-\s+)?(?:[^:#'\"]+:\s+)?(.*?)\s*$")


def vault_values(run: PlaybookRun, cancel: threading.Event, policy: SandboxPolicy | None = None) -> tuple[str, ...]:
    """The decrypted values of the Ansible Vault content in the inventory's and the playbook's vars, so a preview can
    hide them wherever a template put one (a file's diff). Decrypted by ansible-vault in the run's sandbox.

    Whole vaulted files and inline `!vault` values of the inventory and its group_vars/host_vars (and those next
    to the playbook); each value and each line of it counts. Nothing when the run has no vault password file.
    """
    if run.vault_password_file is None:
        return ()
    root = run.workdir.resolve()
    folders = {run.inventory if run.inventory.is_dir() else run.inventory.parent, run.playbook.parent}
    files = {run.inventory} if run.inventory.is_file() else set()
    for folder in folders:
        for sub in ("group_vars", "host_vars", "vars"):
            files.update(p for p in (folder / sub).rglob("*") if p.is_file())
        if folder.is_dir() and folder == run.inventory:
            files.update(p for p in folder.iterdir() if p.is_file())
    blobs: list[bytes] = []
    for path in sorted(files):
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.lstrip().startswith(VAULT_HEADER):
            blobs.append(text.encode())
        for found in _INLINE_VAULT.finditer(text):
            blobs.append("\n".join(line.strip() for line in found.group(1).splitlines()).encode() + b"\n")
    if not blobs:
        return ()
    work = replace(run, data_dir=run.data_dir.parent / "vault")
    work.data_dir.mkdir(parents=True, exist_ok=True)
    password = work.data_dir / "vault-password"
    shutil.copyfile(run.vault_password_file, password)
    os.chmod(password, 0o500 if os.access(run.vault_password_file, os.X_OK) else 0o400)
    vault_cli = str(Path(sys.executable).parent / "ansible-vault")
    if not os.access(vault_cli, os.X_OK):
        vault_cli = shutil.which("ansible-vault") or "ansible-vault"
    values: set[str] = set()
    try:
        for n, blob in enumerate(blobs):
            (work.data_dir / f"{n}.vault").write_bytes(blob)
            label = f"vault-{n}"
            failed = _sandboxed([vault_cli, "decrypt", "--vault-password-file", str(password), "--output", "-",
                                 str(work.data_dir / f"{n}.vault")],
                                work, policy, cancel, label)
            log_file = work.data_dir / f"{label}.log"
            plain = log_file.read_text(encoding="utf-8", errors="replace") if failed is None else ""
            log_file.unlink(missing_ok=True)
            for line in plain.splitlines():
                value = _YAML_VALUE.match(line)
                for candidate in (line.strip(), value.group(1).strip("'\"") if value else ""):
                    if len(candidate) >= 4 and candidate not in ("---", "...", "Decryption successful") \
                            and not candidate.startswith("#"):
                        values.add(candidate)
    finally:
        shutil.rmtree(work.data_dir, ignore_errors=True)
    return tuple(sorted(values, key=len, reverse=True))


def read_hosts(inventory: Path, variables: tuple[str, ...], *, workdir: Path, data_dir: Path, marker: str,
               timeout: float, cancel: threading.Event, policy: SandboxPolicy | None = None) -> list[HostInfo]:
    """The hosts of an inventory with the given variables templated, read by Ansible in the sandbox.

    An inventory is repository content (templates, lookups, scripts), so it is read by a child
    process in the deployment's sandbox, killed at `timeout` or on `cancel` with everything it
    started. Raise InventoryError with Ansible's reason, or when it timed out or was canceled.
    """
    data_dir.mkdir(parents=True, exist_ok=False)
    command = [sys.executable, "-I", "-m", "gitopsd.adapters.inventory", str(inventory), *variables]
    if policy is not None and policy.enabled:   # no network: a lookup cannot reach the API or anything else
        command = sandbox.command_prefix(policy, project=workdir, run_dir=data_dir, network=False) + command
    env = {**os.environ, MARKER: marker, "PATH": _path_with_interpreter_bin()}
    out_path = data_dir / "hosts.json"
    with open(out_path, "wb") as out, open(data_dir / "stderr", "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise InventoryError(f"reading the inventory was {'canceled' if cancel.is_set() else 'stopped'}"
                                         f"{'' if cancel.is_set() else f' after {timeout:g}s (time limit)'}")
                time.sleep(0.02)
        finally:
            reap(marker)
    try:
        answer = json.loads(out_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        detail = (data_dir / "stderr").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise InventoryError(f"reading the inventory failed (exit code {proc.returncode})"
                             + (f": {detail[-1]}" if detail else "")) from None
    if "error" in answer:
        raise InventoryError(str(answer["error"]))
    return [HostInfo(str(name), {str(k): str(v) for k, v in values.items()}) for name, values in answer["hosts"]]


def _path_with_interpreter_bin() -> str:
    """PATH with the folder of this Python first, so the matching ansible-playbook is found."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return path if path.split(":")[0] == bindir else f"{bindir}:{path}"


def scrub_environment() -> None:
    """Drop the supervisor's variables from this process so no child ever inherits them."""
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)


def processes_of(marker: str, also: str | None = None) -> list[psutil.Process]:
    """Every live process carrying this deployment's marker (or naming `also` in its command line).

    The marker is in a process's environment, or in its command line where the environment cannot be
    read (the run's ssh-agent hides its own).
    """
    wanted = marker
    named = f"{MARKER}={marker}]"
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            try:
                mine = proc.environ().get(MARKER) == wanted
            except psutil.AccessDenied:
                mine = False
            if mine or (also and also in " ".join(proc.cmdline())) or named in " ".join(proc.cmdline()[:1]):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def reap(marker: str, grace: float = 2.0, also: str | None = None, settle: float = 10.0) -> int:
    """Terminate, then kill, every process of a deployment, until none is left. Return how many there were.

    A run counts as reaped only when no process of it remains: what it started while being killed, and what
    dropped the marker from its environment but is still a descendant of one that has it (a sandbox's pid 1,
    whose end takes its whole pid namespace with it), are looked for again; `settle` seconds at most."""
    seen: set[int] = set()
    deadline = time.monotonic() + 2 * grace + settle
    while True:
        procs = _with_descendants(processes_of(marker, also))
        if not procs:
            break
        seen.update(proc.pid for proc in procs)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        alive = _wait_gone(procs, grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        _wait_gone(alive, max(0.1, min(grace, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    return len(seen)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for `procs` to end; return those still running. A zombie has ended (a sandbox's pid 1
    becomes one only after its namespace is empty), whether or not its parent collects it."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        if not alive or time.monotonic() >= deadline:
            return alive
        procs = alive
        time.sleep(0.02)


def _with_descendants(procs: list[psutil.Process]) -> list[psutil.Process]:
    """`procs` and every live descendant of them (zombies are gone already: nothing to wait for)."""
    found = {proc.pid: proc for proc in procs}
    for proc in procs:
        try:
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    live = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc)
        except psutil.Error:
            continue
    return live
