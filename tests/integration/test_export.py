"""Exporting an exact commit from a real bare repository, including trees that only `git mktree` can make.

Real: git repositories in temp folders, objects written with `git hash-object` and `git mktree`,
the export through pygit2, and a child Python process whose peak memory is measured.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.adapters.gitrepo import ExportError, GitRepository, resolve_inside
from gitopsd.core.errors import StalledError
from tests.support import ROOT

# A tree entry value: bytes is a file, ("exec", bytes) an executable, ("link", target) a symlink,
# and a list of (name, value) pairs a folder. Lists keep duplicates, which is the point.
Entries = list


def git_bytes(repo: Path, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", f"--git-dir={repo}", *args], input=input, capture_output=True, check=True)
    return proc.stdout.decode().strip()


def write_tree(repo: Path, entries: Entries) -> str:
    """Write a tree object exactly as listed (duplicates included, which git's fsck would reject)."""
    lines = []
    for name, value in entries:
        if isinstance(value, list):
            lines.append(f"040000 tree {write_tree(repo, value)}\t{name}\n")
        elif isinstance(value, tuple):
            kind, data = value
            mode = {"exec": "100755", "link": "120000"}[kind]
            data = data.encode() if isinstance(data, str) else data
            lines.append(f"{mode} blob {git_bytes(repo, 'hash-object', '-w', '--stdin', input=data)}\t{name}\n")
        else:
            lines.append(f"100644 blob {git_bytes(repo, 'hash-object', '-w', '--stdin', input=value)}\t{name}\n")
    return git_bytes(repo, "mktree", input="".join(lines).encode())


def commit(repo: Path, entries: Entries) -> str:
    return git_bytes(repo, "commit-tree", "-m", "content", write_tree(repo, entries))


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder next to the export, standing for the rest of the deploy server."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.yml").write_text("db_password: hunter2\n")
    return path


def test_a_file_after_a_symlink_of_the_same_name_is_refused_and_nothing_is_written_outside(repo, tmp_path, outside):
    sha = commit(repo, [("zz", ("link", str(outside / "pwned"))), ("zz", b"written through the link\n")])
    tree = git_bytes(repo, "rev-parse", f"{sha}^{{tree}}")
    with pytest.raises(
        ExportError,
        match=f"^duplicate entry zz in tree {tree}: the tree is malformed "
        r"\(git fsck rejects it\)",
    ):
        GitRepository(repo).export(sha, tmp_path / "export")
    assert list(outside.iterdir()) == [outside / "secret.yml"]


def test_a_folder_after_a_symlink_of_the_same_name_is_refused_and_nothing_is_written_outside(repo, tmp_path, outside):
    sha = commit(repo, [("conf", ("link", str(outside))), ("conf", [("pwned", b"x\n")])])
    with pytest.raises(ExportError, match=r"^duplicate entry conf in tree [0-9a-f]{40}: the tree is malformed"):
        GitRepository(repo).export(sha, tmp_path / "export")
    assert list(outside.iterdir()) == [outside / "secret.yml"]


def test_a_duplicate_inside_a_subfolder_names_its_full_path(repo, tmp_path, outside):
    sha = commit(repo, [("group_vars", [("all.yml", ("link", str(outside / "x"))), ("all.yml", b"a: 1\n")])])
    with pytest.raises(ExportError, match=r"^duplicate entry group_vars/all.yml in tree [0-9a-f]{40}"):
        GitRepository(repo).export(sha, tmp_path / "export")
    assert not (outside / "x").exists()


@pytest.mark.parametrize(
    "entries, path, target",
    [
        pytest.param(
            [("environments", [("qa", [("group_vars", [("all.yml", ("link", "{outside}/secret.yml"))])])])],
            "environments/qa/group_vars/all.yml",
            "{outside}/secret.yml",
            id="group_vars to a secret",
        ),
        pytest.param([("passwd", ("link", "/etc/passwd"))], "passwd", "/etc/passwd", id="absolute"),
        pytest.param(
            [("a", [("up", ("link", "../../outside/secret.yml"))])],
            "a/up",
            "../../outside/secret.yml",
            id="relative, out through ..",
        ),
        pytest.param(
            [("a", [("b", [("d", ("link", "../.."))])]), ("x", ("link", "a/b/d/.."))],
            "x",
            "a/b/d/..",
            id="a chain that looks inside",
        ),
    ],
)
def test_a_symlink_that_leads_out_of_the_tree_fails_the_export_naming_it(repo, tmp_path, outside, entries, path, target):
    def fill(items):
        return [
            (n, fill(v) if isinstance(v, list) else (v[0], v[1].format(outside=outside)) if isinstance(v, tuple) else v)
            for n, v in items
        ]

    sha = commit(repo, fill(entries))
    target = target.format(outside=outside)
    with pytest.raises(ExportError) as err:
        GitRepository(repo).export(sha, tmp_path / "export")
    assert str(err.value).startswith(f"symlink {path} -> {target} leads out of the exported tree")


def test_symlinks_that_stay_inside_are_exported_even_dangling_ones(repo, tmp_path):
    sha = commit(
        repo,
        [
            (
                "environments",
                [("qa", [("group_vars", [("all.yml", b"a: 1\n")])]), ("staging", [("group_vars", ("link", "../qa/group_vars"))])],
            ),
            ("later", ("link", "not/yet/there")),
            ("self", ("link", ".")),
        ],
    )
    dest = tmp_path / "export"
    GitRepository(repo).export(sha, dest)
    assert (dest / "environments/staging/group_vars/all.yml").read_text() == "a: 1\n"
    assert os.readlink(dest / "later") == "not/yet/there"
    assert (
        resolve_inside(dest, "environments/staging/group_vars/all.yml") == (dest / "environments/qa/group_vars/all.yml").resolve()
    )


def test_modes_are_world_readable_whatever_the_umask(repo, tmp_path):
    sha = commit(repo, [("bin", [("run.sh", ("exec", b"#!/bin/sh\n"))]), ("site.yml", b"- hosts: all\n")])
    dest = tmp_path / "export"
    old = os.umask(0o077)
    try:
        GitRepository(repo).export(sha, dest)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(dest)): stat.S_IMODE(p.stat().st_mode) for p in [dest, *dest.rglob("*")]}
    assert modes == {".": 0o755, "bin": 0o755, "bin/run.sh": 0o755, "site.yml": 0o644}


def test_names_git_would_never_check_out_are_refused(repo, tmp_path):
    sha = commit(repo, [(".git", [("config", b"[core]\n")])])
    with pytest.raises(ExportError, match=r"unsafe path in tree: '\.git'"):
        GitRepository(repo).export(sha, tmp_path / "export")


def test_resolve_inside_refuses_paths_that_lead_out_and_returns_the_real_file(repo, tmp_path):
    sha = commit(repo, [("playbooks", [("deploy.yml", b"- hosts: all\n"), ("site.yml", ("link", "deploy.yml"))])])
    dest = tmp_path / "export"
    GitRepository(repo).export(sha, dest)
    assert resolve_inside(dest, "playbooks/site.yml") == (dest / "playbooks/deploy.yml").resolve()
    for escape in ("../outside/secret.yml", "/etc/passwd", "playbooks/../../x"):
        with pytest.raises(StalledError, match="outside the exported tree"):
            resolve_inside(dest, escape)
    with pytest.raises(StalledError, match="does not exist in this commit"):
        resolve_inside(dest, "playbooks")


def test_a_tree_too_deep_to_export_is_refused(repo, tmp_path):
    from gitopsd.adapters.gitrepo import MAX_DEPTH

    tree = git_bytes(repo, "mktree", input=b"")
    for _ in range(MAX_DEPTH + 1):
        tree = git_bytes(repo, "mktree", input=f"040000 tree {tree}\td\n".encode())
    sha = git_bytes(repo, "commit-tree", "-m", "deep", tree)
    with pytest.raises(ExportError, match=f"is more than {MAX_DEPTH} folders deep"):
        GitRepository(repo).export(sha, tmp_path / "export")


def test_packed_objects_are_exported_too(repo, tmp_path):
    sha = commit(repo, [("site.yml", b"- hosts: all\n"), ("bin", [("run.sh", ("exec", b"#!/bin/sh\n"))])])
    subprocess.run(["git", f"--git-dir={repo}", "update-ref", "refs/heads/main", sha], check=True)
    subprocess.run(["git", f"--git-dir={repo}", "repack", "-adq"], check=True)
    assert not list((repo / "objects").glob("??/*"))
    dest = tmp_path / "export"
    GitRepository(repo).export(sha, dest)
    assert (dest / "site.yml").read_bytes() == b"- hosts: all\n"
    assert (dest / "bin/run.sh").read_bytes() == b"#!/bin/sh\n" and os.access(dest / "bin/run.sh", os.X_OK)


PEAK_RSS = """\
import resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from gitopsd.adapters.gitrepo import GitRepository
repo = GitRepository(Path(sys.argv[2]))
if sys.argv[4] == "export":
    repo.export(sys.argv[3], Path(sys.argv[5]))
else:
    repo._open()[sys.argv[3]]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(*args: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(ROOT), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return int(out.strip())


def test_a_big_file_is_streamed_to_disk_not_loaded_whole(repo, tmp_path):
    size = 50 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    sha = commit(repo, [("artifact.bin", data)])
    baseline = peak_rss_kib(str(repo), sha, "open")
    peak = peak_rss_kib(str(repo), sha, "export", str(tmp_path / "export"))
    exported = tmp_path / "export" / "artifact.bin"
    assert exported.stat().st_size == size
    assert hashlib.sha256(exported.read_bytes()).digest() == hashlib.sha256(data).digest()
    growth = (peak - baseline) * 1024
    assert growth < size // 5, f"exporting a {size >> 20} MiB file grew the process by {growth >> 20} MiB"


def test_a_big_packed_file_is_streamed_to_disk_not_loaded_whole(repo, tmp_path):
    size = 50 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    sha = commit(repo, [("artifact.bin", data), ("small.txt", b"small\n")])
    subprocess.run(["git", f"--git-dir={repo}", "update-ref", "refs/heads/main", sha], check=True)
    subprocess.run(["git", f"--git-dir={repo}", "repack", "-adq"], check=True)  # as `git gc` leaves it
    assert not list((repo / "objects").glob("??/*"))
    baseline = peak_rss_kib(str(repo), sha, "open")
    peak = peak_rss_kib(str(repo), sha, "export", str(tmp_path / "export"))
    exported = tmp_path / "export" / "artifact.bin"
    assert hashlib.sha256(exported.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (tmp_path / "export" / "small.txt").read_bytes() == b"small\n"
    growth = (peak - baseline) * 1024
    assert growth < size // 5, f"exporting a packed {size >> 20} MiB file grew the process by {growth >> 20} MiB"


def test_a_corrupted_loose_object_fails_the_export(repo, tmp_path):
    sha = commit(repo, [("artifact.bin", b"the real content\n" * 1000)])
    blob = git_bytes(repo, "rev-parse", f"{sha}:artifact.bin")
    forged = git_bytes(repo, "hash-object", "-w", "--stdin", input=b"other content\n" * 1000)
    loose = repo / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes((repo / "objects" / forged[:2] / forged[2:]).read_bytes())
    with pytest.raises(ExportError, match=f"object {blob} .*is corrupt"):
        GitRepository(repo).export(sha, tmp_path / "export")


def test_a_symlink_loop_on_the_playbook_path_is_an_export_error_not_a_crash(repo, tmp_path):
    sha = commit(repo, [("playbooks", ("link", "loop")), ("loop", ("link", "playbooks"))])
    dest = tmp_path / "export"
    GitRepository(repo).export(sha, dest)
    with pytest.raises(StalledError, match="^playbooks/deploy.yml cannot be resolved in this commit: symlink loop"):
        resolve_inside(dest, "playbooks/deploy.yml")
