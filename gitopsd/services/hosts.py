"""`gitopsd hosts trust ENV`: record the SSH host keys of an environment's hosts, deliberately.

Playbook runs accept only the host keys in the service's known_hosts file (config `ssh.known_hosts`,
docs/install.md, "SSH trust"). This reads the environment's inventory from its branch head exactly as a
deployment does (exported, then read by Ansible in the sandbox), asks each SSH host for its keys
with `ssh-keyscan`, prints their fingerprints and whether they are new or changed, and after
confirmation writes them to that file, replacing the host's old keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import runner, sandbox
from ..adapters.gitrepo import GitRepository, resolve_inside
from ..adapters.inventory import InventoryError
from ..base import gitcli
from ..core.constants import EMPTY_TREE
from ..core.errors import StalledError

SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "")  # connections that check host keys (""/unset: ssh)
SCAN_TIMEOUT = 5


class TrustError(Exception):
    """The keys cannot be read or recorded: the message says what to do."""


@dataclass
class Scanned:
    """One inventory host and the keys its SSH server offered."""

    host: str
    name: str  # as known_hosts names it: "addr", or "[addr]:port" when the port is not 22
    lines: list[str]  # known_hosts lines from ssh-keyscan
    fingerprints: list[str]  # "ED25519 SHA256:..."
    state: str = "new"  # new | known | changed | no answer


def known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def ssh_hosts(config: Any, repo: Any, env: Any, work: Path, ref: str | None = None) -> list[tuple[str, str, int]]:
    """(host, address, port) of the environment's SSH hosts, from its branch head or `ref`, read in the sandbox."""
    where = ref or env.branch
    commit = gitcli.rev_parse(repo.path, f"{ref}^{{commit}}") if ref else gitcli.branch_head(repo.path, env.branch)
    if commit is None:
        raise TrustError(
            f"{ref} is not a commit or branch in {repo.path}: name one whose tree has {env.inventory}"
            if ref
            else f"branch {env.branch} does not exist in {repo.path}: push it first"
        )
    if ref is None and gitcli.tree_of(repo.path, commit) == EMPTY_TREE and not gitcli.parents(repo.path, commit):
        # Before its first promotion there is no inventory here; the hosts are those of what would be promoted.
        source = repo.environment(env.promote_from)
        raise TrustError(
            f"{env.branch} is at the placeholder `gitopsd init` left ({commit[:7]}), with no inventory "
            f"until its first promotion from {env.promote_from}: trust the hosts of what would be promoted "
            f"with `gitopsd hosts trust {env.name} --ref {source.branch if source else env.promote_from}"
            f" --repo {repo.name}`"
        )
    tree = work / "tree"
    try:
        GitRepository(repo.path).export(commit, tree)
        inventory = resolve_inside(tree, env.inventory)
    except StalledError as exc:  # ExportError, or an inventory that is missing or leads out of the tree
        raise TrustError(f"cannot read {env.name}'s inventory from {where} ({commit[:7]}): {exc}") from exc
    policy = sandbox.for_config(config)
    try:
        hosts = runner.read_hosts(
            inventory,
            ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_connection"),
            workdir=tree,
            data_dir=work / "inventory",
            marker=f"gitopsd-hosts-{os.getpid()}",
            timeout=min(env.timeout, 120),
            cancel=threading.Event(),
            policy=policy,
        )
    except InventoryError as exc:
        raise TrustError(f"cannot read the inventory {env.inventory} of {where} ({commit[:7]}): {exc}") from exc
    found = []
    for host in hosts:
        if host.vars.get("ansible_connection", "") not in SSH_CONNECTIONS:
            continue
        # The ssh connection takes the last of its variables that is set: the old ansible_ssh_* names win.
        port_var = "ansible_ssh_port" if "ansible_ssh_port" in host.vars else "ansible_port"
        port = host.vars.get(port_var, "22")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise TrustError(f"host {host.name}: {port_var} {port!r} is not a port number")
        found.append((host.name, host.vars.get("ansible_ssh_host") or host.vars["ansible_host"], int(port)))
    return found


def scan(host: str, address: str, port: int) -> Scanned:
    """Ask one SSH server for its host keys and fingerprint them."""
    name = known_name(address, port)
    proc = subprocess.run(
        ["ssh-keyscan", "-T", str(SCAN_TIMEOUT), "-p", str(port), "--", address],
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT * 4,
        stdin=subprocess.DEVNULL,
    )
    lines = sorted(
        {
            line.strip()
            for line in proc.stdout.splitlines()
            if line.strip() and not line.startswith("#") and line.split()[0] == name
        }
    )
    if not lines:
        return Scanned(host, name, [], [], "no answer")
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30
    )
    fingerprints = []
    for line in listing.stdout.splitlines():  # "256 SHA256:abc [addr]:port (ED25519)"
        parts = line.split()
        if len(parts) >= 4:
            fingerprints.append(f"{parts[-1].strip('()')} {parts[1]}")
    return Scanned(host, name, lines, fingerprints)


def _matches(field: str, name: str) -> bool:
    """Does a known_hosts host field (plain patterns or a hashed |1|salt|hash) name exactly `name`?"""
    if field.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(part) for part in field[3:].split("|", 1))
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    return name in field.split(",")


def _entries(lines: list[str], name: str) -> set[tuple[str, str]]:
    """The (key type, key) pairs `lines` record for `name`; markers (@revoked, @cert-authority) are left alone."""
    found = set()
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith(("#", "@")) and _matches(parts[0], name):
            found.add((parts[1], parts[2]))
    return found


def compare(scanned: list[Scanned], existing: list[str]) -> None:
    """Mark each scanned host known (all its keys are recorded), changed (other keys are) or new."""
    for item in scanned:
        if not item.lines:
            continue
        recorded = _entries(existing, item.name)
        offered = {(line.split()[1], line.split()[2]) for line in item.lines}
        item.state = "known" if offered <= recorded else "changed" if recorded else "new"


def record(path: Path, scanned: list[Scanned]) -> None:
    """Replace the keys of the scanned hosts in the known_hosts file `path` (created 0644), atomically."""
    try:
        existing = path.read_text(encoding="utf-8").splitlines()
        keep = path.stat()
    except FileNotFoundError:
        existing, keep = [], None
    names = [s.name for s in scanned]
    lines = [
        line
        for line in existing
        if not (line.split() and not line.startswith(("#", "@")) and any(_matches(line.split()[0], n) for n in names))
    ]
    lines += [line for s in scanned for line in s.lines]
    # As root, what is made here belongs to whoever owns the folder around it (the service user owns its state
    # folder), so the service user may record keys later too; an existing file keeps its owner.
    if not path.parent.exists():
        path.parent.mkdir(mode=0o755, parents=True)
        if os.geteuid() == 0:
            around = path.parent.parent.stat()
            os.chown(path.parent, around.st_uid, around.st_gid)
    owner = keep if keep is not None else path.parent.stat()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            # Public data, read by playbook runs as their own user (nobody, when the daemon is root).
            os.fchmod(fd, 0o644)
            if (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()) and os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def trust(
    config: Any,
    repo: Any,
    env: Any,
    *,
    yes: bool,
    ref: str | None = None,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> int:
    """The `gitopsd hosts trust` command: scan, show, confirm, record. Return the exit code."""
    for tool in ("ssh-keyscan", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise TrustError(f"{tool} is not installed: install openssh-client")
    path = config.known_hosts
    work = Path(tempfile.mkdtemp(prefix="gitopsd-hosts-"))
    try:
        hosts = ssh_hosts(config, repo, env, work, ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not hosts:
        say(
            f"nothing recorded: the inventory of {repo.name}/{env.name} has no hosts reached over SSH, "
            "so there are no host keys to trust"
        )
        return 1
    scanned = [scan(*host) for host in hosts]
    try:
        existing = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        existing = []
    except OSError as exc:
        raise TrustError(f"cannot read {path}: {exc.strerror}; run this as the daemon's user or root") from exc
    compare(scanned, existing)
    for item in scanned:
        shown = item.name.replace("[", "").replace("]", "")
        say(f"{item.host} ({shown}): {item.state}")
        for fingerprint in item.fingerprints:
            say(f"    {fingerprint}")
    missing = [s for s in scanned if not s.lines]
    todo = [s for s in scanned if s.state in ("new", "changed")]
    if not todo:
        say(f"nothing to record in {path}" + (f"; no answer from {', '.join(s.host for s in missing)}" if missing else ""))
        return 1 if missing else 0
    changed = [s.host for s in todo if s.state == "changed"]
    question = (
        f"record the keys of {', '.join(s.host for s in todo)} in {path}"
        + (
            f" (replacing the old keys of {', '.join(changed)}: compare the fingerprints with the hosts' "
            "own `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` first)"
            if changed
            else ""
        )
        + "? [y/N] "
    )
    if not yes:
        try:
            answer = ask(question)
        except EOFError:
            raise TrustError(
                "no answer (stdin is not a terminal): check the fingerprints above, then run again with --yes"
            ) from None
        if answer.strip().lower() not in ("y", "yes"):
            say(f"nothing recorded in {path}: the answer was not yes")
            return 1
    try:
        record(path, todo)
    except OSError as exc:
        raise TrustError(f"cannot write {path}: {exc.strerror}; run this as the daemon's user or root") from exc
    say(
        f"recorded {len(todo)} host{'s' if len(todo) != 1 else ''} in {path}"
        + (f"; no answer from {', '.join(s.host for s in missing)}: not recorded" if missing else "")
    )
    return 1 if missing else 0
