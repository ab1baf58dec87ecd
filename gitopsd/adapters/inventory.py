"""Reading an environment's inventory: ansible's Python API lives here and nowhere else.

gitopsd needs a few host variables before and between the batches of a deployment (the address
and port a health check talks to), templated exactly as the playbook would see them: group_vars
next to the inventory, Jinja templates, `lookup('ansible.builtin.env', ...)`. Ansible itself does
the parsing and the templating, in this process, so there is no second opinion about what a
variable means.

The daemon never runs this in its own process: an inventory is repository content (templates,
lookups, inventory scripts and plugins run while it is read), so runner.read_hosts runs
`python -m gitopsd.adapters.inventory` in the deployment's sandbox, time-limited and reaped, and reads
its JSON answer. Ansible is imported only there.

What that process shares with the playbook run and what it does not:
- Ansible's configuration (ansible.cfg, ANSIBLE_* variables) is read once, when this module is
  first imported, from the daemon's own environment and working folder; a playbook run reads it
  in its project folder.
- The variables are those of the inventory and its `group_vars/` and `host_vars/` folders plus
  the given extra vars; `group_vars/` next to a playbook, facts and play vars are not seen.
  `playbook_dir` is the inventory's folder.
- Extra vars are data: ansible-core 2.19 only evaluates templates that came from files it loaded,
  so a `{{` in an extra var's value stays text, as with the runner's `!unsafe` extra vars.
- Ansible's warnings are captured rather than printed, and logged to `gitopsd.inventory`.

Calls are serialized by a lock: the plugin loaders and configuration are process-wide state.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from ..core.errors import GitopsdError
from ..core.types import HostInfo

__all__ = ["HostInfo", "InventoryError", "hosts_of"]

log = logging.getLogger("gitopsd.inventory")

_lock = threading.Lock()
_MISSING = object()


class InventoryError(GitopsdError):
    """The inventory cannot be read, or a requested variable cannot be templated."""


def hosts_of(
    inventory: Path, variables: tuple[str, ...] = ("ansible_host",), extra_vars: dict[str, Any] | None = None
) -> list[HostInfo]:
    """Given an inventory file (or folder) and the names of host variables, return every host of
    the `all` group in inventory order (the implicit localhost excluded) with those variables
    fully templated for that host. Extra vars take part as data, with the precedence of `-e`.

    Raise InventoryError when the inventory is missing or no inventory plugin can parse it, or
    when a requested variable fails to template (an undefined variable, a failing lookup).
    Raise ValueError for an extra var whose name is not an identifier or is reserved by Ansible.
    """
    from ._ansible import DeferredWarningContext, is_reserved_name  # heavy: only where an inventory is read

    extras = dict(extra_vars or {})
    for key in extras:
        if not isinstance(key, str) or not key.isidentifier() or is_reserved_name(key):
            raise ValueError(f"bad extra var name {key!r}")
    path = Path(inventory).absolute()
    if not path.exists():
        raise InventoryError(f"inventory {path} does not exist")
    with _lock, DeferredWarningContext(variables={}) as warnings:
        hosts = _read(path, variables, extras)
    from ._ansible import format_message

    for warning in warnings.get_warnings():
        log.warning("ansible: %s", _first_line(format_message(warning, False)))
    return hosts


def _read(path: Path, names: tuple[str, ...], extras: dict[str, Any]) -> list[HostInfo]:
    from ._ansible import AnsibleError, DataLoader, DeferredWarningContext, InventoryManager, Templar, VariableManager

    _init_plugins()
    loader = DataLoader()
    loader.set_basedir(str(path if path.is_dir() else path.parent))
    warnings = DeferredWarningContext.current()
    try:
        manager = InventoryManager(loader=loader, sources=[str(path)])
    except AnsibleError as exc:
        raise InventoryError(f"cannot read inventory {path}: {_first_line(str(exc))}") from exc
    if not manager._inventory.processed_sources:  # no plugin parsed it; the reasons are warnings
        reasons = _parse_failures(warnings.get_warnings() if warnings is not None else [], path)
        raise InventoryError(f"cannot parse inventory {path}" + (": " + "; ".join(reasons) if reasons else ""))
    variable_manager = VariableManager(loader=loader, inventory=manager)
    hosts = []
    for host in manager.get_hosts("all"):
        name = _plain(host.name)
        try:
            all_vars = variable_manager.get_vars(host=host, include_hostvars=True)
        except AnsibleError as exc:
            raise InventoryError(f"cannot read the variables of {name} in {path}: {_first_line(str(exc))}") from exc
        context = {**all_vars, **extras, **_magic(all_vars)}
        templar = Templar(loader=loader, variables=context)
        values: dict[str, str] = {}
        for var in names:
            raw = context.get(var, _MISSING)
            if raw is _MISSING:
                if var == "ansible_host":
                    values[var] = name
                continue
            try:
                values[var] = _text(templar.template(raw))
            except AnsibleError as exc:
                raise InventoryError(f"cannot template {var} of {name} in {path}: {_first_line(str(exc))}") from exc
        hosts.append(HostInfo(name, values))
    return hosts


def _init_plugins() -> None:
    """Install Ansible's collection loader once per process (`ansible.builtin.*` needs it)."""
    from ._ansible import AnsibleCollectionConfig, init_plugin_loader

    if AnsibleCollectionConfig.collection_finder is None:
        init_plugin_loader()


_MAGIC = (
    "inventory_hostname",
    "inventory_hostname_short",
    "group_names",
    "groups",
    "playbook_dir",
    "ansible_playbook_python",
    "ansible_config_file",
    "inventory_dir",
    "inventory_file",
    "hostvars",
    "omit",
    "ansible_version",
    "ansible_check_mode",
    "ansible_diff_mode",
)


def _magic(all_vars: dict[str, Any]) -> dict[str, Any]:
    """The magic variables, which extra vars must not replace (Ansible adds them after `-e`)."""
    return {k: all_vars[k] for k in _MAGIC if k in all_vars}


_PLUGIN_FOR_SUFFIX = {".yml": "yaml", ".yaml": "yaml", ".json": "yaml", ".ini": "ini", "": "ini", ".toml": "toml"}


def _parse_failures(warnings: list[Any], path: Path) -> list[str]:
    """Why no plugin parsed the inventory: the failure of the plugin its file name suggests (all
    failures when none does) and any source position, without repeats."""
    from ._ansible import format_message

    failures = [format_message(w, False) for w in warnings]
    failures = [t for t in failures if t.startswith("Failed to parse inventory with")]
    likely = _PLUGIN_FOR_SUFFIX.get(path.suffix.lower()) if path.is_file() else None
    preferred = [t for t in failures if t.startswith(f"Failed to parse inventory with '{likely}' plugin")]
    reasons: list[str] = []
    for text in preferred or failures:
        if _first_line(text) not in reasons:
            reasons.append(_first_line(text))
    for text in failures:  # a line and column, wherever a plugin reported one
        for line in text.splitlines():
            if line.startswith("Origin: /") and line[-1].isdigit() and line.strip() not in reasons:
                reasons.append(line.strip())
    return reasons


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _plain(value: str) -> str:
    """A plain `str`: ansible-core 2.19 hands out tagged `str` subclasses carrying their origin."""
    return str.__str__(value) if type(value) is not str else value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return _plain(value)
    return json.dumps(value, default=str, sort_keys=True)


def main(argv: list[str]) -> int:
    """`python -m gitopsd.adapters.inventory INVENTORY [VARIABLE ...]`: the hosts as JSON on stdout.

    Prints {"hosts": [[name, {variable: value}], ...]} and exits 0, or {"error": "..."} and exits 1.
    """
    if not argv:
        print("usage: python -m gitopsd.adapters.inventory INVENTORY [VARIABLE ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        hosts = hosts_of(Path(argv[0]), tuple(argv[1:]))
    except (InventoryError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps({"hosts": [[h.name, h.vars] for h in hosts]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
