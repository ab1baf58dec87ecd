"""Automatic promotion with the daemon as a real process: a push to main goes through CI to qa with no
other step; a red commit never reaches qa; staging follows qa once qa verified the tree."""

from __future__ import annotations

import time

import pytest

from gitopsd.adapters.store import Store
from gitopsd.gate import nudge
from tests.support import Daemon, Sandbox, git

pytestmark = pytest.mark.sandbox(
    {"qa": ["qa-1"], "staging": ["staging-1"]},
    env_options={"qa": {"require_checks": ["ci/test"], "auto_promote": True}, "staging": {"auto_promote": True}},
)


def report(sandbox: Sandbox, commit: str, state: str) -> None:
    """As a CI job does: a commit status, then a word to the daemon (the API and `gitopsd ci report` do both)."""
    with Store(sandbox.state / "state.db") as store:
        store.add_status(
            repo="shop",
            commit=commit,
            tree=sandbox.tree(commit),
            context="ci/test",
            state=state,
            reporter="ci",
            now=time.time(),
            target_url="http://ci.example/1",
        )
    nudge.send(str(sandbox.runtime / "nudge.sock"), nudge.Nudge(repo=str(sandbox.repo), trigger="ci-status"))


def test_a_green_commit_on_main_reaches_qa_then_staging_by_itself_and_a_red_one_stays_out(sandbox):
    with Daemon(sandbox) as daemon:
        # qa's first head was never tested: the daemon holds it until CI says it passed.
        daemon.wait_state("qa", "blocked", sandbox.head("qa"))
        report(sandbox, sandbox.head("qa"), "success")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("app.txt", "v2")
        v2 = sandbox.commit("v2")
        sandbox.push("main")
        report(sandbox, v2, "pending")
        time.sleep(1)
        assert sandbox.tree(sandbox.head("qa")) != sandbox.tree(v2)  # pending: not yet
        report(sandbox, v2, "success")
        daemon.wait_for(lambda: sandbox.tree(sandbox.head("qa")) == sandbox.tree(v2), 20, "qa promoted")
        promoted = sandbox.head("qa")
        row = daemon.wait_result("qa", promoted, "succeeded")
        assert row["trigger"] == "auto-promote" and row["actor"] == "gitopsd"
        # staging promotes from qa: it follows once qa verified the tree (no checks of its own).
        daemon.wait_for(lambda: sandbox.tree(sandbox.head("staging")) == sandbox.tree(v2), 30, "staging promoted")
        daemon.wait_result("staging", sandbox.head("staging"), "succeeded")

        # A rollback of qa stays: the daemon never brings back a tree that ran there before by itself.
        sandbox.command("rollback", "qa")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        rolled_back = sandbox.head("qa")
        assert sandbox.tree(rolled_back) != sandbox.tree(v2)
        time.sleep(2)
        assert sandbox.head("qa") == rolled_back
        promoted = rolled_back

        sandbox.write("app.txt", "v3 (breaks the tests)")
        v3 = sandbox.commit("v3")
        sandbox.push("main")
        report(sandbox, v3, "failure")
        time.sleep(2)
        assert sandbox.head("qa") == promoted  # qa stays where it was
        git(sandbox.work, "fetch", "-q", "origin")  # and a manual promotion is refused
        manual = git(
            sandbox.work, "commit-tree", "-p", "origin/qa", "-p", v3, "-m", "promote by hand", sandbox.tree(v3)
        ).stdout.strip()
        refused = sandbox.push(f"{manual}:refs/heads/qa", check=False)
        assert refused.returncode == 1 and "ci/test: failure (http://ci.example/1)" in refused.stderr
