"""Paths from the config, resolved inside an exported tree: a symlink must not lead a playbook out of it."""

from __future__ import annotations

from pathlib import Path

from .errors import StalledError


def resolve_inside(root: Path, relative: str) -> Path:
    """Given a path from the config, return it resolved inside `root`. Raise StalledError if it leads out or is missing."""
    root = root.resolve()
    try:
        path = (root / relative).resolve()
    except RuntimeError as exc:  # what pathlib raises for a symlink loop (Python 3.11)
        raise StalledError(f"{relative} cannot be resolved in this commit: symlink loop; fix the links on that path") from exc
    if not path.is_relative_to(root):
        raise StalledError(f"{relative} resolves to {path}, outside the exported tree (a symlink leading out?)")
    if not path.is_file():
        raise StalledError(f"{relative} does not exist in this commit")
    return path
