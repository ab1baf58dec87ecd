"""Promotion from a developer's machine: a real `git push` from a clone to refs/promote/<env>, turned by the
real pre-receive hook into the exact-tree promotion commit; the real daemon deploys what the sources ran."""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

from tests.support import Daemon, Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]}


pytestmark = pytest.mark.sandbox(CHAIN)


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def parents(sandbox: Sandbox, commit: str) -> list[str]:
    return git(sandbox.root, "--git-dir", str(sandbox.repo), "rev-list", "--parents", "-n1", commit).stdout.split()[1:]


@pytest.mark.sandbox(CHAIN, converged=True)  # its daemon starts with every head deployed
def test_a_push_to_the_request_ref_after_a_revert_makes_the_exact_tree_promotion_and_the_daemon_deploys_it(sandbox):
    with Daemon(sandbox) as daemon:
        for env in CHAIN:
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        sandbox.write("feature.txt", "v1")
        v1 = sandbox.commit("feature v1")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", v1)
        sandbox.push("main:staging")
        daemon.wait_state("staging", "in-sync", v1)
        # From the clone: promote what staging runs to production, with no shell on the server.
        before = sandbox.head("production")
        proc = sandbox.push("origin/staging:refs/promote/production", check=False)
        promoted = sandbox.head("production")
        assert promoted != before
        text = remote_text(proc)
        assert proc.returncode == 1, "the request ref itself never lands"
        assert (
            f"remote: gitopsd: production: production is now at {promoted[:7]} (Promote staging ({v1[:7]}) to "
            f"production); its tree {sandbox.tree(v1)[:7]} is what staging runs."
        ) in text
        assert "remote: gitopsd: refs/promote/production itself is never kept" in text
        assert sandbox.tree(promoted) == sandbox.tree(v1) and parents(sandbox, promoted) == [before, v1]
        assert git(sandbox.root, "--git-dir", str(sandbox.repo), "for-each-ref", "refs/promote/").stdout == ""
        # The commit object was written outside the push's quarantine: it is in the repository for good.
        git(sandbox.root, "--git-dir", str(sandbox.repo), "fsck", "--no-dangling")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "cat-file", "-e", promoted)
        daemon.wait_state("production", "in-sync", promoted)
        # Production reverts the release; a later request still gives exactly staging's tree (no merge trap).
        git(sandbox.work, "fetch", "-q", "origin")
        git(sandbox.work, "checkout", "-q", "-b", "production", "origin/production")
        git(sandbox.work, "revert", "--no-edit", "-m", "1", promoted)
        sandbox.push("production")
        reverted = sandbox.head("production")
        daemon.wait_state("production", "in-sync", reverted)
        git(sandbox.work, "checkout", "-q", "main")
        sandbox.write("fix.txt", "the fix")
        fixed = sandbox.commit("fix")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", fixed)
        sandbox.push("main:staging")
        daemon.wait_state("staging", "in-sync", fixed)
        sandbox.push("staging:refs/promote/production", check=False)  # a stale local staging: refused below
        proc = sandbox.push("main:refs/promote/production", check=False)  # main is at what staging runs
        again = sandbox.head("production")
        assert "is what staging runs" in remote_text(proc)
        assert sandbox.tree(again) == sandbox.tree(fixed) and parents(sandbox, again) == [reverted, fixed]
        daemon.wait_state("production", "in-sync", again)
    last = sandbox.history("production")[0]
    assert (last["commit"], last["kind"], last["trigger"]) == (again, "deploy", "promote")
    assert last["actor"] == pwd.getpwuid(os.getuid()).pw_name  # the pusher, from the transport (here: Unix)


def test_a_request_for_a_tree_the_source_never_ran_is_refused_and_moves_nothing(sandbox):
    sandbox.write("feature.txt", "never in staging")
    feature = sandbox.commit("feature")
    sandbox.push("main")
    # Staging's branch is moved by hand (no hook, no deployment): its head's tree never ran there.
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/staging", feature)
    git(sandbox.work, "fetch", "-q", "origin")
    before = sandbox.head("production")
    # Not what staging has on the server: refused with what to push instead.
    proc = sandbox.push("main~1:refs/promote/production", check=False)
    assert proc.returncode == 1 and sandbox.head("production") == before
    text = remote_text(proc)
    assert "remote: gitopsd: push to refs/promote/production refused" in text
    assert "rule: a promotion request to production pushes what staging has" in text
    assert "git fetch origin && git push origin origin/staging:refs/promote/production" in text
    # Staging's head, but staging never ran its tree: the promotion rule refuses it, as for any push.
    proc = sandbox.push("origin/staging:refs/promote/production", check=False)
    text = remote_text(proc)
    assert proc.returncode == 1 and sandbox.head("production") == before
    assert "rule: production only takes trees that were deployed and verified in staging" in text
    # An unknown environment and a request pushed with other refs are refused too.
    proc = sandbox.push("main:refs/promote/prod", check=False)
    assert "refs/promote/prod names no environment of shop" in remote_text(proc)
    sandbox.write("more.txt", "more")
    sandbox.commit("more")
    proc = sandbox.push("main", "origin/staging:refs/promote/production", check=False)
    assert "rule: a promotion request is pushed alone" in remote_text(proc)
