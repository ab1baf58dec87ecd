"""The daemon's read side of Git, through pygit2 (the only module that imports it).

Desired state is re-read from the repository on every look: nothing here caches a ref.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pygit2

from ..base import gitcli
from ..core.errors import GitError, StalledError
from ..core.tree import resolve_inside
from ..core.types import Head

__all__ = ["ExportError", "GitRepository", "resolve_inside"]

CHUNK = 1 << 20  # bytes read and written at a time when exporting a file
MAX_DEPTH = 128  # folders; deeper trees are refused: each level holds a file descriptor open
LINK_MAX = 4095  # bytes in a symlink target (Linux PATH_MAX, minus the NUL)
# Every folder is opened without following a symlink, and every name is created relative to it.
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class ExportError(StalledError):
    """The commit cannot be exported (missing objects, unsafe paths): retrying will not help."""


class GitRepository:
    """Reads branch heads and exports exact commits of one bare repository."""

    def __init__(self, path: Path, keep_open: bool = False):
        self.path = Path(path)
        # keep_open: one handle for this object's calls (one thread's, for a moment: PygitPort); libgit2 still reads
        # each ref from its file and looks for new packs when an object is missing.
        self._kept: pygit2.Repository | None = None
        self._keep_open = keep_open

    def _open(self) -> pygit2.Repository:
        # A fresh handle per call unless kept: refs and packs change under us, and handles are not thread-safe.
        if self._kept is not None:
            return self._kept
        try:
            opened = pygit2.Repository(str(self.path))
            if self._keep_open:
                self._kept = opened
            return opened
        except pygit2.GitError as exc:
            if "not owned by current user" not in str(exc):
                raise GitError(f"cannot open the repository {self.path}: {exc}") from exc
            # One clear line, logged once by the reconciler, instead of a traceback on every look.
            raise ExportError(
                f"{self.path} belongs to another user and is not in this user's safe.directory, so git "
                f"refuses it: run `git config --global --add safe.directory {self.path}` as this user "
                "(docs/install.md, Permissions; `gitopsd doctor` checks it)"
            ) from exc

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

    def commit_tree(self, commit: str) -> tuple[str, str] | None:
        """Given a full commit id, return (commit, tree) read in this process, or None if the repository has no such commit.

        The API asks for each status a CI reports; a git process each cost more than the rest of the request.
        """
        try:
            obj = self._open().get(commit)
        except ValueError:  # not an object id
            return None
        return (str(obj.id), str(obj.tree_id)) if isinstance(obj, pygit2.Commit) else None

    def export(self, commit: str, dest: Path) -> None:
        """Write the tree of `commit` into the empty folder `dest` (files, modes, symlinks; no .git).

        Nothing is ever written through a symlink, and every symlink must lead inside `dest`: the
        export is read by a playbook, and `gitopsd logs` shows what it printed. Raise ExportError
        for a tree that cannot be exported safely; retrying will not change it.
        """
        repo = self._open()
        try:
            obj = repo[commit].peel(pygit2.Tree)
        except (KeyError, ValueError) as exc:
            raise ExportError(f"commit {commit} is missing from the repository") from exc
        dest.mkdir(parents=True, exist_ok=True)
        room(dest, obj, *measure(repo, obj, {}, 0))
        links: list[tuple[str, str]] = []
        root = os.open(dest, DIRECTORY)
        try:
            os.fchmod(root, 0o755)
            self._write_tree(repo, obj, root, "", links)
        finally:
            os.close(root)
        check_links(dest, links)

    def _write_tree(
        self, repo: pygit2.Repository, tree: pygit2.Tree, dir_fd: int, prefix: str, links: list[tuple[str, str]]
    ) -> None:
        """Write `tree` into the open folder `dir_fd`, only ever creating names that do not exist yet.

        A name that exists already is a second entry of the same name: following it could write
        outside the export (a symlink `x` then a file `x`), so the tree is refused instead.
        """
        if prefix.count("/") >= MAX_DEPTH:
            raise ExportError(f"{prefix} is more than {MAX_DEPTH} folders deep in tree {tree.id}; it cannot be exported")
        for entry in tree:
            name = os.fsdecode(entry.raw_name or b"")
            path = prefix + name
            if name in ("", ".", "..", ".git") or "/" in name:
                raise ExportError(f"unsafe path in tree: {path!r}")
            mode = entry.filemode
            try:
                if mode == pygit2.enums.FileMode.TREE:
                    os.mkdir(name, 0o755, dir_fd=dir_fd)
                    sub = os.open(name, DIRECTORY, dir_fd=dir_fd)
                    try:
                        os.fchmod(sub, 0o755)
                        self._write_tree(repo, repo[entry.id].peel(pygit2.Tree), sub, path + "/", links)
                    finally:
                        os.close(sub)
                elif mode == pygit2.enums.FileMode.LINK:
                    links.append((path, self._write_link(repo, entry.id, name, dir_fd, path)))
                elif mode in (pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.BLOB_EXECUTABLE):
                    # Set explicitly, whatever the umask: the sandboxed playbook reads as another user.
                    perms = 0o755 if mode == pygit2.enums.FileMode.BLOB_EXECUTABLE else 0o644
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms, dir_fd=dir_fd)
                    with os.fdopen(fd, "wb") as out:
                        os.fchmod(fd, perms)
                        self._copy_blob(repo, entry.id, out, path)
                # Submodules (gitlinks) have no content here; they are skipped.
            except FileExistsError as exc:
                raise ExportError(
                    f"duplicate entry {path} in tree {tree.id}: the tree is malformed (git fsck rejects "
                    "it); push a commit that fixes it (`gitopsd install-hooks` makes the server refuse "
                    "such trees)"
                ) from exc

    def _write_link(self, repo: pygit2.Repository, oid: pygit2.Oid, name: str, dir_fd: int, path: str) -> str:
        """Create the symlink `name` in `dir_fd`; return its target, for the check once the whole tree is written."""
        kind, size = repo.odb.read_header(oid)
        if kind != pygit2.enums.ObjectType.BLOB:
            raise ExportError(f"symlink {path} names object {oid}, which is not a blob: the tree is malformed")
        if size > LINK_MAX:
            raise ExportError(f"symlink {path} has a target of {size} bytes; no system accepts more than {LINK_MAX}")
        target = repo[oid].peel(pygit2.Blob).data
        try:
            os.symlink(target, name, dir_fd=dir_fd)
        except (ValueError, FileNotFoundError) as exc:  # a NUL byte in the target, or an empty one
            raise ExportError(f"symlink {path} has an invalid target {target!r}") from exc
        return os.fsdecode(target)

    def _copy_blob(self, repo: pygit2.Repository, oid: pygit2.Oid, out: BinaryIO, path: str) -> None:
        """Write blob `oid` to `out` in chunks, so that a big file never sits in the daemon's memory whole.

        pygit2 (libgit2) reads an object whole, twice over for a loose one, and has no streaming read.
        A loose object, which is how a pushed file arrives, is therefore inflated here, piece by
        piece, and checked against its id as libgit2 would. A packed object (after `git gc`, or a
        push of 100 objects or more) bigger than CHUNK is written by `git cat-file`, which streams it
        (a 200 MiB file grew the daemon by 200 MiB through pygit2); a small one comes through pygit2.
        """
        hexid = str(oid)
        try:
            source = open(Path(repo.path) / "objects" / hexid[:2] / hexid[2:], "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            try:
                packed_type, packed_size = repo.odb.read_header(oid)
            except KeyError:
                raise ExportError(f"{path} names object {oid}, which is missing from {self.path}") from None
            if packed_type != pygit2.enums.ObjectType.BLOB:
                raise ExportError(f"{path} names object {oid}, which is not a blob: the tree is malformed") from None
            if packed_size > CHUNK:
                out.flush()
                try:
                    gitcli.blob_to_fd(self.path, hexid, out.fileno())
                except GitError as exc:
                    raise ExportError(f"object {hexid} ({path}) cannot be read in {self.path}: {exc}") from exc
                return
            out.write(repo[oid].peel(pygit2.Blob).data)
            return
        corrupt = f"object {hexid} ({path}) is corrupt in {self.path}: run `git fsck` there and restore it"
        digest = hashlib.new("sha1" if len(hexid) == 40 else "sha256")
        header, expected, written = b"", -1, 0
        with source:
            try:
                for piece in inflated(source):
                    digest.update(piece)
                    if expected < 0:  # the content follows a header "blob <size>\0"
                        header += piece
                        if b"\0" not in header:
                            if len(header) > 64:
                                raise ExportError(corrupt)
                            continue
                        header, _, piece = header.partition(b"\0")
                        kind, _, size = header.partition(b" ")
                        if kind != b"blob" or not size.isdigit():
                            raise ExportError(corrupt)
                        expected = int(size)
                    written += len(piece)
                    if written > expected:
                        raise ExportError(corrupt)
                    out.write(piece)
            except zlib.error as exc:
                raise ExportError(corrupt) from exc
        if written != expected or digest.hexdigest() != hexid:
            raise ExportError(corrupt)


def measure(repo: pygit2.Repository, tree: pygit2.Tree, known: dict[str, tuple[int, int]], depth: int) -> tuple[int, int]:
    """(files and folders, bytes on disk) that `tree` unpacks into, each tree measured once: a push of a few kilobytes
    can name gigabytes (one blob under folders that each name the folder below many times)."""
    if str(tree.id) in known or depth > MAX_DEPTH:  # too deep: the export says so
        return known.get(str(tree.id), (0, 0))
    count = size = 0
    for entry in tree:
        count += 1
        try:
            if entry.filemode == pygit2.enums.FileMode.TREE:
                files, data = measure(repo, repo[entry.id].peel(pygit2.Tree), known, depth + 1)
                count, size = count + files, size + data + 4096
            elif entry.filemode in (pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.BLOB_EXECUTABLE):
                size += (repo.odb.read_header(entry.id)[1] + 4095) // 4096 * 4096
        except (KeyError, ValueError):  # a missing or malformed object: the export names it
            continue
    known[str(tree.id)] = (count, size)
    return count, size


# What an export leaves free of its file system (5%, at most 256 MiB and 10,000 inodes): the store and the other
# environments' runs write there too.
RESERVE_SHARE, RESERVE_BYTES, RESERVE_INODES = 0.05, 256 << 20, 10_000


def room(dest: Path, tree: pygit2.Tree, count: int, size: int) -> None:
    """Raise ExportError when `tree` needs more than `dest`'s file system has free (bytes or inodes), less the reserve."""
    fs = os.statvfs(dest)
    keep = int(min(fs.f_blocks * fs.f_frsize * RESERVE_SHARE, RESERVE_BYTES))
    free = fs.f_bavail * fs.f_frsize - keep
    inodes = fs.f_favail - int(min(fs.f_files * RESERVE_SHARE, RESERVE_INODES))
    said = f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.1f} MiB"
    if size > free:
        raise ExportError(
            f"tree {tree.id} unpacks into {said}, more than the {max(free, 0) >> 20} MiB free on the file system of {dest} "
            f"(keeping {keep >> 20} MiB free): push a commit that leaves the bulk out, or make room there"
        )
    if fs.f_files and count > inodes:
        raise ExportError(
            f"tree {tree.id} holds {count:,} files and folders, more than the {max(inodes, 0):,} the file system of "
            f"{dest} has room for: push a commit with fewer, or make room there"
        )


def inflated(source: BinaryIO) -> Iterator[bytes]:
    """Yield what a zlib stream inflates to, in pieces of at most CHUNK bytes (a small input may inflate hugely)."""
    inflater = zlib.decompressobj()
    while not inflater.eof and (data := source.read(CHUNK)):
        while data:
            yield inflater.decompress(data, CHUNK)
            data = inflater.unconsumed_tail
    if not inflater.eof:
        raise zlib.error("the stream ends early")


def check_links(dest: Path, links: list[tuple[str, str]]) -> None:
    """Raise ExportError for the first symlink under `dest` that resolves outside it, once all of them exist.

    Resolved on disk, not by reading the target: `a/b/d -> ../..` and `x -> a/b/d/..` each look
    harmless, together they lead out. A dangling link that points inside is fine.
    """
    root = Path(os.path.realpath(dest))
    for path, target in links:
        real = Path(os.path.realpath(root / path))
        if not real.is_relative_to(root):
            raise ExportError(
                f"symlink {path} -> {target} leads out of the exported tree (to {real}), so the playbook "
                "could read the deploy server's files: point it at a file inside the repository"
            )
