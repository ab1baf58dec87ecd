"""`gitopsd init`'s edits: a repository added to a config file as text, keeping its comments, mode and owner."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from .reading import _indent, _text_with_item, compose_yaml, read_yaml, write_yaml
from .repositories import DEFAULT_ENVIRONMENTS


def repository_entry(name: str, path: Path) -> dict[str, Any]:
    """Return the config mapping `gitopsd init` writes for a repository with the default environments."""
    return {
        "name": name,
        "path": str(path),
        "environments": [
            {"name": env, "promote_from": prev, "auto_rollback": env == "production"}
            for env, prev in zip(DEFAULT_ENVIRONMENTS, ("main",) + DEFAULT_ENVIRONMENTS[:-1], strict=True)
        ],
    }


class ConfigEditError(ConfigurationError):
    """The config file cannot be edited safely by a program: the message says what to do instead."""


_NEW_CONFIG_HEADER = (
    '# gitopsd server configuration (docs/operate.md, "Configuration"). `gitopsd init` adds repositories\n'
    "# below; edit the rest by hand, then `gitopsd check-config`.\n"
)


def add_repository(
    config_path: Path, entry: dict[str, Any], defaults: dict[str, Any] | None = None, new_file_group: int | None = None
) -> bool:
    """Add a repository entry to a config file, keeping its comments, mode, owner and group.

    The file is edited as text: only the new entry is inserted, at the end of `repositories:`.
    A missing file is created from `defaults`, mode 0640 of `new_file_group` (0644 without one).
    Return False if an entry by that name exists. Raise ConfigEditError when it cannot be done safely.
    """
    item = write_yaml([entry])
    if not config_path.exists():
        text = _NEW_CONFIG_HEADER + (write_yaml(dict(defaults)) if defaults else "")
        _write_config_text(config_path, text + "repositories:\n" + _indent(item, 2), None, new_file_group)
        return True
    try:
        text = config_path.read_text(encoding="utf-8")
        root, data = compose_yaml(text)
    except OSError as exc:
        raise ConfigEditError(
            f"cannot read {config_path}: {exc.strerror or exc}; run gitopsd init as a user who may read and write it (root)"
        ) from exc
    except ConfigurationError as exc:
        raise ConfigEditError(
            f"{config_path} is not valid YAML; fix it first (gitopsd check-config --config {config_path})"
        ) from exc
    repos = data.get("repositories") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(repos, (list, type(None))):
        raise ConfigEditError(
            f"{config_path}: the file is not a mapping with a `repositories:` list; fix it first "
            f"(gitopsd check-config --config {config_path})"
        )
    if any(isinstance(r, dict) and r.get("name") == entry["name"] for r in repos or []):
        return False
    new = _text_with_item(text, root, item)
    if new is None or read_yaml(new) != {**data, "repositories": [*(repos or []), entry]}:
        raise ConfigEditError(
            f"{config_path}: `repositories:` is written in a form gitopsd does not edit (a flow "
            f"list [...]?); add this entry under it by hand:\n{item}"
        )
    _write_config_text(config_path, new, config_path.stat(), None)
    return True


def _write_config_text(path: Path, text: str, keep: os.stat_result | None, group: int | None) -> None:
    """Replace `path` with `text` atomically, with the mode, owner and group of `keep` (or 0640/0644 for a new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(keep.st_mode) if keep else (0o640 if group is not None else 0o644)
    owner = (keep.st_uid, keep.st_gid) if keep else (os.geteuid(), group if group is not None else os.getegid())
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigEditError(
            f"cannot write {path} ({exc.strerror}): run gitopsd init as a user who may write {path.parent} (root)"
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(fd, mode)
            if owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            os.fsync(fd)
        os.replace(tmp, path)
    except PermissionError as exc:
        os.unlink(tmp)
        raise ConfigEditError(
            f"cannot write {path} keeping its owner and group (uid {owner[0]}, gid {owner[1]}): run gitopsd init as root"
        ) from exc
    except BaseException:
        os.unlink(tmp)
        raise
