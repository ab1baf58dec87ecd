"""A pushed tree that unpacks into more than the deploy server can hold is refused before the export writes it.

Real: a bare repository, objects written with `git hash-object` and `git mktree` (a few kilobytes that name gigabytes:
one blob of zeros under folders that each name the folder below sixteen times), the export through pygit2 into a
small tmpfs standing for the state folder's file system (mounting needs root).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitopsd.adapters.gitrepo import ExportError, GitRepository
from tests.integration.test_export import commit, git_bytes, write_tree
from tests.support import mounted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
    return path


def bomb(repo: Path, levels: int, width: int = 16) -> str:
    """A commit whose tree names one 1 MiB blob width**levels times, through `levels` folders of `width` entries."""
    blob = git_bytes(repo, "hash-object", "-w", "--stdin", input=bytes(1 << 20))
    tree = git_bytes(repo, "mktree", input="".join(f"100644 blob {blob}\tf{i}\n" for i in range(width)).encode())
    for _ in range(levels - 1):
        tree = git_bytes(repo, "mktree", input="".join(f"040000 tree {tree}\td{i}\n" for i in range(width)).encode())
    return git_bytes(repo, "commit-tree", "-m", "bomb", tree)


def test_a_tree_that_unpacks_into_more_than_the_free_space_is_refused_before_anything_is_written(repo, tmp_path):
    state = tmp_path / "state"
    with mounted(state, "-t", "tmpfs", "-o", "size=16m", "tmpfs"):
        dest = state / "export"
        with pytest.raises(ExportError) as refused:
            GitRepository(repo).export(bomb(repo, levels=3), dest)  # 4,096 files of 1 MiB: 4 GiB from 1 MiB
        assert "4.0 GiB" in str(refused.value) and "free" in str(refused.value), refused.value
        assert list(dest.iterdir()) == [] if dest.exists() else True
        # Held: what fits is exported on the same file system.
        GitRepository(repo).export(commit(repo, [("a.yml", b"hosts: {}\n")]), state / "small")
        assert (state / "small" / "a.yml").read_bytes() == b"hosts: {}\n"


def test_a_tree_of_more_files_than_the_file_system_has_room_for_is_refused(repo, tmp_path):
    state = tmp_path / "state"
    with mounted(state, "-t", "tmpfs", "-o", "size=16m,nr_inodes=1000", "tmpfs"):
        empty = git_bytes(repo, "hash-object", "-w", "--stdin", input=b"")
        tree = write_tree(repo, [(f"f{i}", b"") for i in range(8)])
        names = "".join(f"040000 tree {tree}\td{i}\n" for i in range(300))
        top = git_bytes(repo, "mktree", input=names.encode())
        assert empty and top
        with pytest.raises(ExportError) as refused:
            GitRepository(repo).export(git_bytes(repo, "commit-tree", "-m", "files", top), state / "export")
        assert "2,700 files and folders" in str(refused.value), refused.value
