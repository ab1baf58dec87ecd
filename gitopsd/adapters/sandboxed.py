"""The other Ansible commands a run needs, each in the run's sandbox: ansible-galaxy for the tree's requirements,
ansible-vault for the values a preview must hide.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import GitopsdError
from ..core.runfiles import one_line, read_own
from ..core.settings import SandboxPolicy
from ..core.types import PlaybookRun
from . import sandbox
from .processes import MARKER, path_with_interpreter_bin, reap
from .sshkeys import AgentError, identity_files, start_agent, stop_agent

REQUIREMENTS = ("requirements.yml", "roles/requirements.yml", "collections/requirements.yml")


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
        return {
            "ANSIBLE_ROLES_PATH": f"{self.folder / 'roles'}:{project / 'roles'}:"
            "~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles",
            "ANSIBLE_COLLECTIONS_PATH": f"{self.folder / 'collections'}:{project / 'collections'}:"
            "~/.ansible/collections:/usr/share/ansible/collections",
        }


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
    """Install the tree's requirements with ansible-galaxy in the sandbox, once per tree and content (cached by hash).

    None when the tree has none. Raise RequirementsError saying what ansible-galaxy said.
    """
    files = requirements_files(run.workdir)
    if not files:
        return None
    cache = (
        policy.requirements_cache if policy is not None and policy.requirements_cache else run.data_dir.parent / "requirements"
    )
    # The tree is part of the key: what galaxy installs depends on more of it than the requirements files (a tarball
    # named by a relative path, ansible.cfg's galaxy server), and a tree someone pushed to qa must not decide what
    # another tree with the same requirements runs in production. Environments still share it: promotion moves trees.
    digest = hashlib.sha256(b"tree\0" + str(run.extravars.get("gitopsd_tree") or uuid.uuid4()).encode() + b"\0")
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
            proc = run_sandboxed(command, run, policy, cancel, f"galaxy-{kind}-{name.replace('/', '-')}")
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
        if not folder.is_dir():  # another deployment of the same requirements won the race: use its copy
            shutil.copytree(staging, folder, symlinks=True)
    return Requirements(folder)


def run_sandboxed(
    command: list[str], run: PlaybookRun, policy: SandboxPolicy | None, cancel: threading.Event, label: str
) -> str | None:
    """Run a command in the run's sandbox, in the tree, time-limited and reaped. Return None, or why it failed.

    It gets the run's ssh-agent, as the playbook does: roles and collections may come from private Git over SSH.
    """
    agent = None
    if policy is not None and policy.enabled:
        identities = identity_files()
        command = (
            sandbox.command_prefix(
                policy, project=run.workdir, run_dir=run.data_dir, agent=run.data_dir / "agent.sock" if identities else None
            )
            + command
        )
        if identities:
            try:
                agent = start_agent(run.data_dir, run.marker, sandbox.run_as(policy), identities)
            except AgentError as exc:
                return str(exc)
    env = {**os.environ, MARKER: run.marker, "PATH": path_with_interpreter_bin(), "ANSIBLE_NOCOLOR": "True"}
    log = run.data_dir / f"{label}.log"
    try:
        # Read back through this descriptor, never by name: the command may replace the name with a link to what the
        # sandbox hides from it (a vault password), and its last line becomes the deployment's reason.
        with open(log, "w+b") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=run.workdir,
                start_new_session=True,
            )
            deadline = time.monotonic() + run.timeout
            while proc.poll() is None:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    return "canceled" if cancel.is_set() else f"stopped after {run.timeout}s (time limit)"
                time.sleep(0.05)
            out.seek(0)
            output = out.read().decode("utf-8", errors="replace")
    finally:
        if agent is not None:
            stop_agent(*agent)
        reap(run.marker)
    if proc.returncode == 0:
        return None
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return one_line((errors or lines or [f"exit code {proc.returncode}"])[-1].strip())


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
            failed = run_sandboxed(
                [
                    vault_cli,
                    "decrypt",
                    "--vault-password-file",
                    str(password),
                    "--output",
                    "-",
                    str(work.data_dir / f"{n}.vault"),
                ],
                work,
                policy,
                cancel,
                label,
            )
            log_file = work.data_dir / f"{label}.log"
            plain = read_own(work.data_dir, log_file) if failed is None else ""
            log_file.unlink(missing_ok=True)
            for line in plain.splitlines():
                value = _YAML_VALUE.match(line)
                for candidate in (line.strip(), value.group(1).strip("'\"") if value else ""):
                    if (
                        len(candidate) >= 4
                        and candidate not in ("---", "...", "Decryption successful")
                        and not candidate.startswith("#")
                    ):
                        values.add(candidate)
    finally:
        shutil.rmtree(work.data_dir, ignore_errors=True)
    return tuple(sorted(values, key=len, reverse=True))
