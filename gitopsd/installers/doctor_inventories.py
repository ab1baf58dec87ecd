"""`gitopsd doctor`: hosts that two environments' inventories both name, as their branch heads have them.

An inventory is repository content: qa's may name production's hosts. A qa run is refused a host of a later
environment's inventory unless that environment's own tree also gives it to qa, or sandbox.shared_hosts names it
(adapters/guarded.py). doctor says which shared hosts are shared on purpose (a push to qa deploys to them) and which
an earlier environment names without that (its runs are refused them: a mistake, or a push that tried).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..adapters.sshgate import resolve
from ..config import Config, Environment, Repository
from ..services.hosts import TrustError, ssh_hosts
from .doctor_report import Finding


def shared_hosts(config: Config) -> list[Finding]:
    """One finding per SSH address that more than one environment of a repository names (by name, IP or alias)."""
    if not config.sandbox.enabled:  # an inventory is code: doctor (often root) runs none of it outside the sandbox
        return [Finding(True, "hosts shared by environments' inventories: not read, the sandbox is off (sandbox.enabled)")]
    findings = []
    for repo in config.repositories:
        users: dict[tuple[str, int], dict[str, set[str]]] = {}  # address -> environment -> its names for the host
        for env in repo.environments:
            for where, name in _addresses(config, repo, env):
                users.setdefault(where, {}).setdefault(env.name, set()).add(name)
        order = [env.name for env in repo.environments]
        shared = {a for host, port in config.sandbox.shared_hosts for a in resolve(host, port) or {(host, port)}}
        given: dict[str, set[tuple[str, int]]] = {}  # the first environment's inventory, as the last one's tree has it
        for (address, port), by_env in sorted(users.items()):
            if len(by_env) < 2:
                continue
            first, *_, last = envs = sorted(by_env, key=order.index)
            named = "; ".join(f"{e}: {', '.join(sorted(by_env[e]))}" for e in envs)
            key = f"{first} {last}"
            if key not in given:
                given[key] = {a for a, _n in _addresses(config, repo, repo.environments[order.index(first)], last)}
            if (address, port) in shared or (address, port) in given[key]:
                why = "sandbox.shared_hosts names it" if (address, port) in shared else f"{last}'s own tree gives it to {first}"
                what = f"{repo.name}: {address}:{port} serves {', '.join(envs)} ({named}) on purpose ({why}): a push to {first} deploys to it"
                findings.append(Finding(True, what))
                continue
            findings.append(
                Finding(
                    False,
                    f"{repo.name}: {first}'s inventory names {address}:{port}, a host of {last}'s ({named}): "
                    f"{first}'s runs are refused it",
                    f"if it should serve both, promote the change to {last} (its tree then gives it to {first} too) or "
                    f"name it in sandbox.shared_hosts; else take it out of {first}'s inventory",
                )
            )
    return findings or [Finding(True, "no SSH host is in two environments' inventories")]


def _addresses(config: Config, repo: Repository, env: Environment, branch: str | None = None) -> set[tuple[tuple[str, int], str]]:
    """((address, port), host name) of the environment's SSH hosts, as its branch head (or `branch`'s) has its inventory."""
    with tempfile.TemporaryDirectory(prefix="gitopsd-doctor-") as work:
        try:
            found = ssh_hosts(config, repo, env, Path(work), ref=branch)
        except TrustError:  # no branch yet, gitopsd init's placeholder, no such inventory there: nothing deploys there
            return set()
    return {(where, name) for name, address, port in found for where in resolve(address, port) or {(address, port)}}


def unguarded(config: Config) -> list[Finding]:
    """Where a run of an earlier environment can reach a later one's hosts in ways no inventory shows: runs on an
    execution node (no sandbox, no forwarder there), the deploy server's network (playbook_network: host), and the
    hops after a run's first SSH connection (ProxyJump, ProxyCommand, a forwarded agent), which the forwarder never sees."""
    findings = []
    for repo in config.repositories:
        later = {env.name: [e.name for e in repo.environments[n + 1 :]] for n, env in enumerate(repo.environments)}
        for env in repo.environments:
            if later[env.name] and env.execution_node != "local":
                where = "any execution node" if env.execution_node == "any" else f"execution node {env.execution_node}"
                findings.append(
                    Finding(
                        False,
                        f"{repo.name}/{env.name} runs its playbooks on {where}, outside this machine's sandbox: nothing "
                        f"keeps a push to {env.name} from {', '.join(later[env.name])}'s hosts there",
                        f"set execution_node: local for {env.name}, or give its node a network from which "
                        f"{', '.join(later[env.name])}'s hosts cannot be reached (doctor cannot see a node's network)",
                    )
                )
        if len(repo.environments) < 2 or not config.sandbox.enabled:
            continue
        first, last = repo.environments[0].name, repo.environments[-1].name
        if config.sandbox.playbook_network == "host":
            what = f"{repo.name}: with sandbox.playbook_network: host a push to {first} reaches {last}'s hosts too"
        else:
            what = (
                f"{repo.name}: a run's SSH forwarder judges only its first hop: a host of {first}'s inventory from which "
                f"{last}'s hosts take the service's key (ProxyJump, ProxyCommand, a forwarded agent) lets a push to "
                f"{first} reach them (not checked: doctor cannot see your network)"
            )
        findings.append(Finding(True, what))
    return findings
