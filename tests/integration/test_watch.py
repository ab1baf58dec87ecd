"""The ref watcher on real repositories: real pushes through the real hook, real `git update-ref`,
`git pack-refs`, and repository folders deleted or moved while watched. Nothing is faked."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from gitopsd.adapters.watch import RefWatcher
from tests.support import Sandbox, git


class Calls:
    """The watcher's callback: which repositories it named, in order, safe to read from the test."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.event = threading.Event()

    def __call__(self, name: str) -> None:
        self.names.append(name)
        self.event.set()

    def wait(self, name: str, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.names:
            assert time.monotonic() < deadline, f"no callback for {name}; got {self.names}"
            time.sleep(0.01)

    def quiet(self, seconds: float = 0.3) -> list[str]:
        """Forget what came so far, wait, and return what came meanwhile."""
        self.names.clear()
        time.sleep(seconds)
        return list(self.names)


def inotify_instances() -> int:
    """How many inotify instances this process holds."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == "anon_inode:inotify"
        except OSError:
            pass  # closed meanwhile
    return count


def new_commit(repo: Path) -> str:
    """A new commit on top of main, so that moving a branch to it really changes the ref."""
    return git(repo, "commit-tree", "-p", "main", "-m", f"c{time.monotonic_ns()}", "main^{tree}").stdout.strip()


def bare(root: Path, name: str) -> Path:
    path = root / f"{name}.git"
    git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(path))
    return path


@pytest.fixture
def watched(short_tmp):
    """A sandbox repository (real hook) watched as "shop", beside an empty one watched as "other"."""
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]})
    other = bare(short_tmp, "other")
    calls = Calls()
    watcher = RefWatcher({"shop": sandbox.repo, "other": other}, calls, recheck=0.2)
    watcher.start()
    yield sandbox, watcher, calls
    watcher.stop()


def test_sixty_repositories_share_one_inotify_instance_and_a_push_names_its_repository(short_tmp):
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]})
    repos = {f"r{i:02}": bare(short_tmp, f"r{i:02}") for i in range(60)} | {"shop": sandbox.repo}
    calls = Calls()
    before = inotify_instances()
    watcher = RefWatcher(repos, calls)
    watcher.start()
    try:
        assert inotify_instances() - before == 1
        assert watcher.unwatched == {}
        sandbox.write("app.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        calls.wait("shop")
        assert set(calls.names) == {"shop"}
    finally:
        watcher.stop()
    assert inotify_instances() == before


def test_a_branch_with_slashes_is_watched_in_its_new_folders_and_reads_trigger_nothing(watched):
    sandbox, watcher, calls = watched
    head = sandbox.head("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/release/2025/one", head)
    calls.wait("shop")
    sandbox.write("app.txt", "v2")
    sandbox.commit("v2")
    calls.quiet(0)
    sandbox.push("main:release/2025/one")  # a move inside the folder made after the watcher started
    calls.wait("shop")
    assert calls.quiet() == []
    git(sandbox.root, "--git-dir", str(sandbox.repo), "log", "--all", "--oneline")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "for-each-ref")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "rev-parse", "release/2025/one")
    assert calls.quiet() == []


def test_pack_refs_and_update_ref_of_a_packed_ref_both_call_back(watched):
    sandbox, watcher, calls = watched
    git(sandbox.root, "--git-dir", str(sandbox.repo), "pack-refs", "--all")
    calls.wait("shop")
    assert not (sandbox.repo / "refs" / "heads" / "qa").exists()
    calls.quiet(0)
    git(sandbox.repo, "update-ref", "refs/heads/qa", new_commit(sandbox.repo))  # a loose ref again
    calls.wait("shop")
    calls.quiet(0)
    git(sandbox.root, "--git-dir", str(sandbox.repo), "pack-refs", "--all")  # packed-refs moved into place
    calls.wait("shop")


def _watcher_cpu_seconds(seconds: float) -> float:
    """CPU time this process spends in `seconds` of the test sleeping (the watcher's thread is all that runs)."""
    t0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - t0


@pytest.mark.parametrize("how", ["rm -rf", "mv away"])
def test_a_repository_folder_that_disappears_logs_one_line_and_is_watched_again_when_it_returns(watched, caplog, how):
    sandbox, watcher, calls = watched
    caplog.set_level(logging.INFO, logger="gitopsd.watch")
    parked = sandbox.root / "parked.git"
    if how == "rm -rf":
        shutil.copytree(sandbox.repo, parked, symlinks=True)
        shutil.rmtree(sandbox.repo)
    else:
        sandbox.repo.rename(parked)
    deadline = time.monotonic() + 5
    while "shop" not in watcher.unwatched:
        assert time.monotonic() < deadline, "the watcher did not notice the folder is gone"
        time.sleep(0.01)
    assert "other" not in watcher.unwatched
    # Gone for a while (many rechecks): no busy loop, no second line, the thread still runs.
    assert _watcher_cpu_seconds(1.0) < 0.2
    gone = [r for r in caplog.records if "shop" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelname == "WARNING", [r.getMessage() for r in caplog.records]
    assert str(sandbox.repo) in gone[0].getMessage() and "not watched until it is back" in gone[0].getMessage()
    # The moved-away copy is not watched any more.
    git(parked, "update-ref", "refs/heads/qa", new_commit(parked))
    assert "shop" not in calls.quiet()

    parked.rename(sandbox.repo)
    calls.wait("shop")  # looked at once it is back: it may have moved meanwhile
    assert watcher.unwatched == {}
    assert any("now watching the refs of 1 repository: shop" in r.getMessage() for r in caplog.records)
    sandbox.write("app.txt", "back")
    sandbox.commit("back")
    calls.quiet(0)
    sandbox.push("main")
    calls.wait("shop")


def test_a_repository_missing_at_start_is_reported_once_and_watched_when_it_appears(short_tmp, caplog):
    caplog.set_level(logging.INFO, logger="gitopsd.watch")
    calls = Calls()
    later = short_tmp / "later.git"
    watcher = RefWatcher({"later": later, "here": bare(short_tmp, "here")}, calls, recheck=0.2)
    watcher.start()
    try:
        assert set(watcher.unwatched) == {"later"}
        time.sleep(0.6)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "1 of 2 repositories are not watched" in lines[0] and "later" in lines[0], lines
        git(short_tmp, "init", "--quiet", "--bare", str(later))
        calls.wait("later")
        assert watcher.unwatched == {}
    finally:
        watcher.stop()


def test_a_folder_swapped_in_place_is_noticed_by_refresh(watched):
    """A move of a parent folder sends the watcher no event: its recheck compares the folder's identity."""
    sandbox, watcher, calls = watched
    parent = sandbox.root
    moved = parent.with_name(parent.name + "-moved")
    parent.rename(moved)
    shutil.copytree(moved, parent, symlinks=True)
    watcher.refresh()
    assert watcher.unwatched == {}  # rewatched at once: the folder is there, a new one
    calls.quiet(0)
    git(sandbox.repo, "update-ref", "refs/heads/qa", new_commit(sandbox.repo))
    calls.wait("shop")
    shutil.rmtree(moved)
