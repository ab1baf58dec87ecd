"""`execution_nodes:` and each environment's `execution_node:`: where the playbooks run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.settings import ExecutionNode, Repository
from .problems import NAME_RE, _Checker, _resolve

NODE_KEYS = {
    "name": "the node's name, as environments' execution_node says it",
    "ssh": "user@host gitopsd reaches it as",
    "port": "SSH port",
    "identity_file": "SSH private key for it",
    "max_parallel": "runs at once on it",
}
NODE_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
NODE_HOST_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])$")
PLACEMENTS = ("local", "any")  # execution_node: besides a node's name


def _execution_nodes(raw: Any, base: Path, check: _Checker) -> tuple[ExecutionNode, ...]:
    """`execution_nodes: [{name, ssh: user@host, port?, identity_file?, max_parallel?}]`: where playbooks may run."""
    if not isinstance(raw, list):
        check.add("execution_nodes", "must be a list of nodes, e.g. [{name: runner1, ssh: deployer@10.0.0.5}]")
        return ()
    nodes: list[ExecutionNode] = []
    for i, item in enumerate(raw):
        key = f"execution_nodes[{i}]"
        data = check.mapping(item, key, NODE_KEYS)
        if not data:
            continue
        name = data.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name) or name in PLACEMENTS:
            check.add(
                f"{key}.name",
                f"must be a plain name (lowercase letters, digits, '-' or '_') other than local and any, not {name!r}",
            )
            name = ""
        elif any(n.name == name for n in nodes):
            check.add(f"{key}.name", f"execution node {name!r} is defined twice")
            name = ""
        ssh = data.get("ssh")
        user, _, host = ssh.partition("@") if isinstance(ssh, str) else ("", "", "")
        if not (NODE_USER_RE.match(user) and NODE_HOST_RE.match(host)):
            check.add(f"{key}.ssh", f"must be user@host (a login name and a host name or address), not {ssh!r}")
        port = int(check.number(data, "port", key, 22, integer=True, minimum=1, maximum=65535, what="a TCP port"))
        identity = None
        if "identity_file" in data:
            value = data["identity_file"]
            if not isinstance(value, str) or not value:
                check.add(f"{key}.identity_file", f"must be the path of an SSH private key, not {value!r}")
            else:
                try:
                    identity = _resolve(base, value)
                except ValueError as exc:
                    check.add(f"{key}.identity_file", str(exc))
        parallel = int(
            check.number(
                data,
                "max_parallel",
                key,
                ExecutionNode.max_parallel,
                integer=True,
                minimum=1,
                maximum=1000,
                what="a thousand deployments",
            )
        )
        if name:
            nodes.append(ExecutionNode(name, user, host, port, identity, parallel))
    return tuple(nodes)


def _execution_node(data: dict[str, Any], key: str, check: _Checker) -> str:
    """An environment's execution_node: local (the default), any, or a node's name (checked against the nodes later)."""
    value = data.get("execution_node", "local")
    if not isinstance(value, str) or not NAME_RE.match(value):
        check.add(f"{key}.execution_node", f"must be local, any or the name of an execution node, not {value!r}")
        return "local"
    return value


def _placements(repos: list[Repository], nodes: tuple[ExecutionNode, ...], check: _Checker) -> None:
    """Each environment's execution_node names a configured node (any needs at least one)."""
    names = [n.name for n in nodes]
    for i, repo in enumerate(repos):
        for j, env in enumerate(repo.environments):
            where = env.execution_node
            if where == "local" or where in names or (where == "any" and names):
                continue
            known = ", ".join(names) if names else "none: add execution_nodes at the top of the config"
            check.add(
                f"repositories[{i}].environments[{j}].execution_node",
                f"{where!r} is not an execution node (configured: {known}); use local, any or a node's name"
                if where != "any"
                else f"any places on the execution nodes, and there are {known}",
            )
