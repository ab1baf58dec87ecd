"""The required-checks gate through real pushes and `gitopsd promote`: commit statuses keyed by tree."""

from __future__ import annotations

import subprocess
import time

import pytest

from gitopsd.adapters.store import Store
from tests.support import Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"]}


pytestmark = pytest.mark.sandbox(CHAIN, env_options={"qa": {"require_checks": ["ci/build", "ci/test"]}})


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def report(
    sandbox: Sandbox, commit: str, context: str, state: str, url: str | None = None, description: str | None = None
) -> None:
    with Store(sandbox.state / "state.db") as store:
        store.add_status(
            repo="shop",
            commit=commit,
            tree=sandbox.tree(commit),
            context=context,
            state=state,
            reporter="test",
            now=time.time(),
            target_url=url,
            description=description,
        )


def test_a_push_to_qa_is_refused_until_every_required_check_passed_on_its_tree(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    report(sandbox, v2, "ci/build", "success")
    report(sandbox, v2, "ci/test", "failure", "http://ci.example/job/7", "3 tests failed")
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    text = remote_text(proc)
    assert "remote:   rule: qa only takes trees that passed its required checks (ci/build, ci/test)" in text
    assert f"remote:   commit {v2[:7]} has tree {sandbox.tree(v2)[:7]}; its checks:" in text
    assert "remote:     ci/test: failure: 3 tests failed (http://ci.example/job/7)" in text
    assert "ci/build" not in text.split("its checks:")[1].split("what to do instead")[0]  # it passed: not listed
    assert f"remote:     see the checks: gitopsd ci status {v2[:7]} --repo shop" in text
    assert sandbox.head("qa") != v2
    # The newest report per context wins: CI re-ran and passed.
    report(sandbox, v2, "ci/test", "success")
    assert sandbox.push("main:qa").returncode == 0
    assert sandbox.head("qa") == v2


def test_a_missing_report_is_named_and_a_pending_one_shows_its_state(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    report(sandbox, v2, "ci/build", "pending", "http://ci.example/job/8")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert "remote:     ci/build: pending (http://ci.example/job/8)" in text
    assert "remote:     ci/test: not reported" in text


def test_a_commit_with_a_tested_tree_counts_as_tested(sandbox):
    """A merge or promotion commit whose tree equals a tested tree needs no run of its own."""
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    report(sandbox, v2, "ci/build", "success")
    report(sandbox, v2, "ci/test", "success")
    # Another commit with exactly v2's tree (as a promotion commit would be): never reported itself.
    same_tree = git(
        sandbox.work, "commit-tree", "-p", sandbox.head("qa"), "-p", v2, "-m", "merge main into qa", sandbox.tree(v2)
    ).stdout.strip()
    proc = sandbox.push(f"{same_tree}:refs/heads/qa", check=False)
    assert proc.returncode == 0, proc.stderr
    assert sandbox.head("qa") == same_tree


def test_gitopsd_promote_is_held_to_the_same_checks(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    report(sandbox, v2, "ci/build", "success")
    proc = sandbox.command("promote", "main", "qa", "--repo", "shop", check=False)
    assert proc.returncode != 0
    assert "qa only takes trees that passed its required checks" in proc.stdout + proc.stderr
    assert "ci/test: not reported" in proc.stdout + proc.stderr
    report(sandbox, v2, "ci/test", "success")
    sandbox.command("promote", "main", "qa", "--repo", "shop")
    assert sandbox.tree(sandbox.head("qa")) == sandbox.tree(v2)


def test_a_status_for_another_repository_or_tree_does_not_count(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    with Store(sandbox.state / "state.db") as store:
        for context in ("ci/build", "ci/test"):
            store.add_status(
                repo="other", commit=v2, tree=sandbox.tree(v2), context=context, state="success", reporter="test", now=time.time()
            )
            store.add_status(
                repo="shop", commit=v2, tree="0" * 40, context=context, state="success", reporter="test", now=time.time()
            )
    assert sandbox.push("main:qa", check=False).returncode == 1
