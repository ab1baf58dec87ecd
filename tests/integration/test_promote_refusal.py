"""`gitopsd promote` refused: said to the person who ran the command, not as a push's refusal (the hook keeps that).

Real: a bare repository with the hook installed, real pushes, the CLI as a process, the SQLite store.
"""

from __future__ import annotations

import time

from gitopsd.adapters.store import Store
from tests.support import Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"]}


def _v2_on_qa(sandbox: Sandbox) -> str:
    """A new commit on main and qa (qa takes main's commits), deployed nowhere: nothing runs the daemon here."""
    sandbox.write("app.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main", "main:qa")
    return v2


def test_a_refused_promote_names_the_command_that_was_run_and_what_to_do_as_commands_not_pushes(make_sandbox):
    sandbox = make_sandbox(CHAIN)
    v2 = _v2_on_qa(sandbox)
    before = sandbox.head("staging")
    refused = sandbox.command("promote", "qa", "staging", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert lines[:2] == [
        "gitopsd promote qa staging: refused (not-verified-upstream)",
        "  rule: staging only takes trees that were deployed and verified in qa",
    ]
    assert lines[2].endswith(f"has tree {sandbox.tree(v2)[:7]}, which was never deployed successfully to qa.")
    assert lines[3:] == [
        "  what to do instead:",
        "    wait until qa has deployed and verified it (gitopsd wait qa), then run gitopsd promote qa staging again",
    ]
    assert "push" not in refused.stderr
    assert sandbox.head("staging") == before
    # A push of the same move keeps the hook's words: the same rule, said to a pusher.
    pushed = sandbox.push(f"{v2}:refs/heads/staging", check=False)
    assert pushed.returncode == 1
    assert "remote: gitopsd: push to refs/heads/staging refused" in pushed.stderr
    assert "remote:   rule: staging only takes trees that were deployed and verified in qa" in pushed.stderr


def test_a_promote_waiting_for_checks_is_told_to_run_the_command_again_not_to_push_again(make_sandbox):
    sandbox = make_sandbox(CHAIN, env_options={"qa": {"require_checks": ["ci/build"]}})
    sandbox.write("app.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    refused = sandbox.command("promote", "main", "qa", check=False)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0] == "gitopsd promote main qa: refused (required-checks)"
    assert (
        "    wait for CI to report success on this commit (or any commit with the same tree), "
        "then run gitopsd promote main qa again"
    ) in refused.stderr.splitlines()
    assert "push again" not in refused.stderr and "refs/heads" not in refused.stderr
    with Store(sandbox.state / "state.db") as store:
        store.add_status(
            repo="shop", commit=v2, tree=sandbox.tree(v2), context="ci/build", state="success", reporter="test", now=time.time()
        )
    sandbox.command("promote", "main", "qa")
    assert git(sandbox.work, "rev-parse", "origin/main").stdout.strip() == v2 and sandbox.tree(
        sandbox.head("qa")
    ) == sandbox.tree(v2)
