"""The daemon's read side of Git, through pygit2 (the only module that imports it).

Desired state is re-read from the repository on every look: nothing here caches a ref.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pygit2

from .decision import Head


class ExportError(Exception):
    """The commit cannot be exported (missing objects, unsafe paths): retrying will not help."""


class GitRepository:
    """Reads branch heads and exports exact commits of one bare repository."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _open(self) -> pygit2.Repository:
        # A fresh handle per call: refs and packs change under us, and handles are not thread-safe.
        return pygit2.Repository(str(self.path))

    def head(self, branch: str) -> Head | None:
        """Return the commit and tree at refs/heads/BRANCH, or None if the branch does not exist.

        Raise ExportError if the branch points at an object that is missing or not a commit.
        """
        repo = self._open()
        ref = repo.references.get(f"refs/heads/{branch}")
        if ref is None:
            return None
        target = ref.resolve().target
        try:
            obj = repo[target]
        except KeyError as exc:
            raise ExportError(f"branch {branch} points at {target}, an object missing from the repository") from exc
        if not isinstance(obj, pygit2.Commit):
            raise ExportError(f"branch {branch} points at {target}, which is not a commit")
        return Head(str(obj.id), str(obj.tree_id))

    def export(self, commit: str, dest: Path) -> None:
        """Write the tree of `commit` into the empty folder `dest` (files, modes, symlinks; no .git)."""
        repo = self._open()
        try:
            tree = repo[commit].peel(pygit2.Tree)
        except (KeyError, ValueError) as exc:
            raise ExportError(f"commit {commit} is missing from the repository") from exc
        dest.mkdir(parents=True, exist_ok=True)
        self._write_tree(repo, tree, dest)

    def _write_tree(self, repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
        for entry in tree:
            name = entry.name
            if name in ("", ".", "..", ".git") or "/" in name:
                raise ExportError(f"unsafe path in tree: {name!r}")
            target = dest / name
            mode = entry.filemode
            if mode == pygit2.enums.FileMode.TREE:
                target.mkdir()
                self._write_tree(repo, repo[entry.id], target)
            elif mode == pygit2.enums.FileMode.LINK:
                os.symlink(repo[entry.id].data, target)
            elif mode in (pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.BLOB_EXECUTABLE):
                target.write_bytes(repo[entry.id].data)
                if mode == pygit2.enums.FileMode.BLOB_EXECUTABLE:
                    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            # Submodules (gitlinks) have no content here; they are skipped.


def resolve_inside(root: Path, relative: str) -> Path:
    """Given a path from the config, return it resolved inside `root`. Raise ExportError if it leads out."""
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ExportError(f"{relative} resolves to {path}, outside the exported tree (a symlink leading out?)")
    if not path.is_file():
        raise ExportError(f"{relative} does not exist in this commit")
    return path
