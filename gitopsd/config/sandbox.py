"""`sandbox:` and `ssh:`: how playbooks are confined, and the host keys they trust."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..adapters.sandbox import SandboxError
from ..adapters.sandbox import check as sandbox_check
from ..adapters.sandbox import default_user as default_sandbox_user
from ..core.settings import SandboxPolicy
from .problems import _Checker, _resolve

SANDBOX_KEYS = {
    "enabled": "run playbooks and CI steps in the sandbox (bubblewrap)",
    "user": "user runs become when the daemon runs as root (root keeps root)",
    "read_only": "extra folders runs may read",
    "writable": "folders runs may write (for ansible_connection=local hosts)",
    "network": "true lets CI steps reach the network",
    "playbook_network": "ssh-only (the default): only the inventory's hosts, over SSH; host: this machine's network",
    "shared_hosts": "SSH hosts (HOST or HOST:PORT) an earlier environment may reach though a later one's inventory names them",
}
SHARED_HOST = re.compile(r"(?P<host>[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?")
PLAYBOOK_NETWORKS = ("ssh-only", "host")
SSH_KEYS = {
    "known_hosts": "known_hosts file runs trust (default state_dir/known_hosts)",
}


def _known_hosts(raw: Any, base: Path, state_dir: Path, check: _Checker) -> Path:
    """The `ssh:` section's known_hosts: the file of host keys ssh accepts, <state_dir>/.ssh/known_hosts by default."""
    data = check.mapping(raw, "ssh", SSH_KEYS)
    default = state_dir / ".ssh" / "known_hosts"
    value = data.get("known_hosts", str(default))
    if not isinstance(value, str) or not value:
        check.add("ssh.known_hosts", f"must be the path of a known_hosts file, not {value!r}")
        return default
    try:
        path = _resolve(base, value)
    except ValueError as exc:
        check.add("ssh.known_hosts", str(exc))
        return default
    try:
        folder = path.is_dir()
    except OSError:  # a reader of the config (the hook, as the git user) may not see into the state folder
        folder = False
    if folder:
        check.add("ssh.known_hosts", f"{path} is a folder; give the path of a file (`gitopsd hosts trust ENV` writes it)")
    return path


def _shared_hosts(value: Any, check: _Checker) -> tuple[tuple[str, int], ...]:
    """`sandbox.shared_hosts`: (host, port) pairs; a port left out is 22."""
    found = []
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        match = SHARED_HOST.fullmatch(item) if isinstance(item, str) else None
        port = int(match.group("port") or 22) if match else 0
        if match is None or not 0 < port < 65536:
            check.add(f"sandbox.shared_hosts[{i}]", f"must be HOST or HOST:PORT (e.g. bastion.example.com:22), not {item!r}")
            continue
        found.append((match.group("host").strip("[]"), port))
    return tuple(found)


def _sandbox(raw: Any, base: Path, check: _Checker) -> SandboxPolicy:
    """The `sandbox:` section: on by default; as root, runs drop to `nobody` unless `user:` says otherwise."""
    data = check.mapping(raw, "sandbox", SANDBOX_KEYS)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        check.add("sandbox.enabled", f"must be true or false, not {enabled!r}")
        enabled = True
    network = data.get("network", False)
    if not isinstance(network, bool):
        check.add("sandbox.network", f"must be true or false (whether CI steps may reach the network), not {network!r}")
        network = False
    playbook_network = data.get("playbook_network", "ssh-only")
    if playbook_network not in PLAYBOOK_NETWORKS:
        check.add(
            "sandbox.playbook_network",
            "must be ssh-only (playbook runs reach only their inventory's hosts, over "
            f"SSH) or host (the deploy server's network), not {playbook_network!r}",
        )
        playbook_network = "ssh-only"
    user = data.get("user", default_sandbox_user())
    if user is not None and not (isinstance(user, str) and re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", user)):
        check.add("sandbox.user", f"must be a user name, not {user!r}")
        user = default_sandbox_user()
    elif isinstance(user, str) and user != "root":
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            check.add("sandbox.user", f"no user {user!r} on this machine (playbooks run as it when the daemon is root)")
    folders: dict[str, tuple[Path, ...]] = {}
    for key in ("read_only", "writable"):
        value = data.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) and v and "\0" not in v for v in value)):
            check.add(f"sandbox.{key}", "must be a list of folder paths the playbook runs may see")
            value = []
        resolved = []
        for i, v in enumerate(value):
            try:
                resolved.append(_resolve(base, v))
            except ValueError as exc:
                check.add(f"sandbox.{key}[{i}]", str(exc))
        folders[key] = tuple(resolved)
    policy = SandboxPolicy(
        enabled=enabled,
        user=user,
        read_only=folders["read_only"],
        writable=folders["writable"],
        network=network,
        playbook_network=playbook_network,
        shared_hosts=_shared_hosts(data.get("shared_hosts", []), check),
    )
    try:
        sandbox_check(policy)
    except SandboxError as exc:
        check.add("sandbox", str(exc))
    return policy
