"""`gitopsd doctor`: hosts that two environments' inventories both name, which no rule of gitopsd can keep apart.

An inventory is repository content: a host in both qa's and production's inventory is deployed to by whoever may push
to qa, whatever the promotion rule says. Sometimes that is meant (a bastion, a shared monitoring host), so it is not
refused; doctor names each such host once, read from each environment's branch head as a deployment reads it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..adapters.sshgate import resolve
from ..config import Config
from ..services.hosts import TrustError, ssh_hosts
from .doctor_report import Finding


def shared_hosts(config: Config) -> list[Finding]:
    """One finding per SSH address that more than one environment of a repository names (by name, IP or alias)."""
    findings = []
    for repo in config.repositories:
        users: dict[tuple[str, int], dict[str, set[str]]] = {}  # address -> environment -> its names for the host
        for env in repo.environments:
            with tempfile.TemporaryDirectory(prefix="gitopsd-doctor-") as work:
                try:
                    found = ssh_hosts(config, repo, env, Path(work))
                except TrustError:  # no branch yet, or gitopsd init's placeholder: nothing deploys there
                    continue
            for name, address, port in found:
                for where in resolve(address, port) or {(address, port)}:
                    users.setdefault(where, {}).setdefault(env.name, set()).add(name)
        order = [env.name for env in repo.environments]
        for (address, port), by_env in sorted(users.items()):
            if len(by_env) < 2:
                continue
            envs = sorted(by_env, key=order.index)
            named = "; ".join(f"{e}: {', '.join(sorted(by_env[e]))}" for e in envs)
            findings.append(
                Finding(
                    False,
                    f"{repo.name}: {address}:{port} is in the inventories of {', '.join(envs)} ({named}): a push to "
                    f"{envs[0]} deploys to it, whatever the promotion rule says of {envs[-1]}",
                    f"if only {envs[-1]} should reach it, take it out of {', '.join(envs[:-1])}'s inventory; if it serves "
                    "them all on purpose, know that a push to the first changes it",
                )
            )
    return findings or [Finding(True, "no SSH host is in two environments' inventories")]
