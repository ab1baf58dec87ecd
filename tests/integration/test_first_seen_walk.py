"""The daemon's look at a repository records first-seen times (gitopsd/services/firstseen.py) without a git process
when no branch moved: at 1,000 repositories the start's first sweep spent two thirds of its time in `git for-each-ref`
(issue 28). Real: a bare repository pushed to through gitopsd's hooks, git's own pack-refs, the SQLite store.
"""

from __future__ import annotations

from pathlib import Path

from gitopsd.adapters.store import Store
from gitopsd.base import gitcli
from gitopsd.services.firstseen import FirstSeen
from tests.support import Sandbox, git


def listed(repo: Path) -> list[str]:
    """The branch heads as git itself lists them."""
    return sorted(set(git(repo, "for-each-ref", "--format=%(objectname)", "refs/heads/").stdout.split()))


def test_a_walk_of_a_repository_whose_branches_did_not_move_starts_no_git_process(tmp_path, monkeypatch):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    with Store(sandbox.state / "state.db") as store:
        seen = FirstSeen(store)
        assert seen.walk("shop", str(sandbox.repo)) == 0  # the baseline
        started: list[list[str]] = []
        real = gitcli.run
        monkeypatch.setattr(gitcli, "run", lambda argv, **kw: started.append(argv) or real(argv, **kw))
        assert seen.walk("shop", str(sandbox.repo)) == 0
        assert started == []
        sandbox.write("app.txt", "v2")
        commit = sandbox.commit("v2")
        sandbox.push("main")
        assert seen.walk("shop", str(sandbox.repo)) == 1, "the pushed commit is found"
        assert [argv[3] for argv in started] == ["rev-list"]
        assert store.seen_tips("shop") is not None and commit in store.seen_tips("shop")


def test_the_heads_read_from_the_ref_files_are_those_git_lists_loose_packed_and_nested(tmp_path):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    sandbox.write("app.txt", "v2")
    sandbox.commit("v2")
    sandbox.push("main", "main:refs/heads/feature/deep/x")
    assert gitcli.read_heads(sandbox.repo) == listed(sandbox.repo)
    git(sandbox.repo, "pack-refs", "--all")  # the loose files go: to a reader, only packed-refs says
    assert not (sandbox.repo / "refs/heads/main").exists()
    assert gitcli.read_heads(sandbox.repo) == listed(sandbox.repo)
    sandbox.write("app.txt", "v3")
    sandbox.commit("v3")
    sandbox.push("main")  # a loose ref over its packed line: the loose one counts
    assert gitcli.read_heads(sandbox.repo) == listed(sandbox.repo)
    git(sandbox.repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert gitcli.read_heads(sandbox.repo) is None, "a symbolic ref: git must say"


def test_a_walk_of_a_repository_whose_branches_did_not_move_since_the_last_walk_asks_the_store_nothing(tmp_path, monkeypatch):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    with Store(sandbox.state / "state.db") as store:
        seen = FirstSeen(store)
        assert seen.walk("shop", str(sandbox.repo)) == 0  # the baseline
        asked: list[str] = []
        real = store.seen_tips
        monkeypatch.setattr(store, "seen_tips", lambda repo: asked.append(repo) or real(repo))
        assert seen.walk("shop", str(sandbox.repo)) == 0
        assert asked == [], "each sweep's walk of 1,000 unmoved repositories read the store (issue 28)"
        sandbox.write("app.txt", "v2")
        commit = sandbox.commit("v2")
        sandbox.push("main")
        assert seen.walk("shop", str(sandbox.repo)) == 1, "a moved branch is walked"
        assert asked == ["shop"] and commit in (store.seen_tips("shop") or [])
