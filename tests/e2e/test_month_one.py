"""A new team's first month with release gates (issue h46): what each refusal tells a person to do must work when
they do it. Real: the daemon as a process, Unix users on its control socket (SO_PEERCRED), git pushes through the
hook, ansible-playbook on local hosts."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox, git, setpriv, sh, unix_users

PEOPLE = ("gt-m1-lead", "gt-m1-ops")  # lead may override staging, ops production
GROUP = "gt-m1-people"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "userdel")),
    reason="real Unix users need root, setpriv, useradd and groupadd",
)


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    with unix_users(PEOPLE, GROUP):
        yield


def gitopsd_as(sandbox: Sandbox, user: str, *args: str) -> str:
    """Run `gitopsd ARGS` as USER; return its exit code and what it said, as one text."""
    proc = sh(
        [*setpriv(user), sys.executable, "-m", "gitopsd", *args, "--config", str(sandbox.config)],
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"},
    )
    return f"{proc.returncode}: {(proc.stdout + proc.stderr).strip()}"


@pytest.fixture
def server(short_tmp: Path, people: None) -> Iterator[tuple[Sandbox, Daemon]]:
    short_tmp.chmod(0o755)
    sandbox = Sandbox(
        short_tmp,
        {"staging": ["s-1"], "production": ["p-1"]},
        env_options={
            "staging": {"auto_rollback": True, "override_by": ["gt-m1-lead"]},
            "production": {"override_by": ["gt-m1-ops"]},
        },
        converged=True,
    )
    sandbox.runtime.mkdir()
    shutil.chown(sandbox.runtime, "root", GROUP)
    sandbox.runtime.chmod(0o2750)  # the sockets take the folder's group: the people may use them, not replace them
    with Daemon(sandbox) as daemon:
        yield sandbox, daemon


def test_a_tree_that_failed_in_staging_is_refused_in_production_naming_who_may_unreject_it_in_staging(server):
    sandbox, daemon = server
    sandbox.write("FAIL", "all")
    broken = sandbox.commit("broken")
    sandbox.push("main", "main:staging")
    daemon.wait_for(
        lambda: any(d["kind"] == "rollback" and d["result"] == "succeeded" for d in sandbox.history("staging")),
        120,
        "the automatic rollback",
    )
    tree = sandbox.tree(broken)[:7]
    pushed = sandbox.push(f"{broken}:refs/heads/production", check=False)
    assert (
        pushed.returncode != 0
        and f"remote:   rule: tree {tree} is rejected for production: it failed in staging" in pushed.stderr
    )
    # The rejection stands in staging: staging's override_by lifts it, not production's.
    hint = f"if it is safe after all, one of gt-m1-lead runs: gitopsd release unreject {tree} --env staging"
    assert hint in pushed.stderr, pushed.stderr
    assert hint in daemon.log()  # the daemon's word when it rejected the tree names the same people
    assert gitopsd_as(sandbox, "gt-m1-ops", "release", "unreject", tree, "--env", "staging", "--reason", "x") == (
        "1: gitopsd: error: gt-m1-ops may not unreject trees for staging; who may: gt-m1-lead"
    )
    said = gitopsd_as(sandbox, "gt-m1-lead", "release", "unreject", tree, "--env", "staging", "--reason", "the disk was full")
    assert said == f"0: tree {tree} let through again (unrejected) by gt-m1-lead for staging: the disk was full"
    git(sandbox.work, "fetch", "-q", "origin")
    again = sandbox.push(f"{broken}:refs/heads/production", check=False)
    assert "is rejected" not in again.stderr and "was never deployed successfully to staging" in again.stderr, again.stderr


@pytest.fixture
def gated(request: pytest.FixtureRequest, short_tmp: Path, people: None) -> Iterator[tuple[Sandbox, Daemon]]:
    """production takes release candidates lead makes and ops approves (with more of `approvals:` as the param)."""
    short_tmp.chmod(0o755)
    approvals = {"required": 1, "approvers": ["gt-m1-ops"], "forbid_self_approval": True, **getattr(request, "param", {})}
    sandbox = Sandbox(
        short_tmp,
        {"staging": ["s-1"], "production": ["p-1"]},
        env_options={"production": {"approvals": approvals}},
        converged=True,
    )
    sandbox.runtime.mkdir()
    shutil.chown(sandbox.runtime, "root", GROUP)
    sandbox.runtime.chmod(0o2750)
    with Daemon(sandbox) as daemon:
        yield sandbox, daemon


def test_a_release_names_the_candidate_that_was_approved_when_a_second_candidate_holds_the_same_tree(gated):
    sandbox, daemon = gated
    sandbox.write("app.txt", "v2")
    release = sandbox.commit("v2")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=120)
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r1").startswith("0: release candidate rc/r1")
    assert gitopsd_as(sandbox, "gt-m1-ops", "approve", "r1", "--note", "release notes read").startswith("0: rc/r1 approved")
    # Someone runs `rc create` again on the same tree: a second candidate, approved by nobody.
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r1-again").startswith("0: release candidate rc/r1-again")
    sandbox.command("promote", "rc/r1", "production")
    production = sandbox.head("production")
    row = daemon.wait_result("production", production, "succeeded", timeout=120)
    entry = next(d for d in sandbox.history("production") if d["id"] == row["id"])
    assert (entry["rc"], entry["approved_by"]) == ("r1", ["gt-m1-ops"])  # what let it through, not the newest name
    note = daemon.wait_for(
        lambda: (
            git(
                sandbox.root, "--git-dir", str(sandbox.repo), "log", "--notes=gitopsd", "-n", "1", "--format=%N", production
            ).stdout
            or None
        ),
        30,
        "the deployment's note",
    )
    assert "allowed by rc/r1 approved by gt-m1-ops" in note, note


def test_a_release_candidates_tag_pushed_to_the_request_ref_promotes_its_commit(gated):
    sandbox, daemon = gated
    sandbox.write("app.txt", "v3")
    release = sandbox.commit("v3")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=120)
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r3").startswith("0: release candidate rc/r3")
    assert gitopsd_as(sandbox, "gt-m1-ops", "approve", "r3", "--note", "ok").startswith("0: rc/r3 approved")
    git(sandbox.work, "fetch", "-q", "--tags", "origin")
    proc = sandbox.push("rc/r3:refs/promote/production", check=False)  # the tag object, as a person types it
    promoted = sandbox.head("production")
    assert f"production is now at {promoted[:7]} (Promote staging ({release[:7]}) to production)" in proc.stderr, proc.stderr
    assert sandbox.tree(promoted) == sandbox.tree(release)
    daemon.wait_result("production", promoted, "succeeded", timeout=120)


@pytest.mark.parametrize("gated", [{"expire_after": "2s"}], indirect=True)
def test_an_approval_that_expired_is_given_again_by_approving_again(gated):
    sandbox, daemon = gated
    sandbox.write("app.txt", "v4")
    release = sandbox.commit("v4")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=120)
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r4").startswith("0: release candidate rc/r4")
    assert gitopsd_as(sandbox, "gt-m1-ops", "approve", "r4", "--note", "ok").startswith("0: rc/r4 approved")
    time.sleep(2.5)  # longer than expire_after: the approval no longer counts
    refused = sandbox.command("promote", "rc/r4", "production", check=False)
    assert "0 of 1 approval; expired: gt-m1-ops" in refused.stdout + refused.stderr
    assert "ask an approver: gitopsd approve r4" in refused.stdout + refused.stderr
    # What the refusal says to do works: the approver approves again.
    said = gitopsd_as(sandbox, "gt-m1-ops", "approve", "r4", "--note", "still ok")
    assert said.startswith("0: rc/r4 approved by gt-m1-ops. approved: production takes it now"), said


def test_a_withdrawn_approval_reads_as_a_sentence_in_the_reply_and_the_audit_note(gated):
    sandbox, daemon = gated
    sandbox.write("app.txt", "v5")
    release = sandbox.commit("v5")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=120)
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r5").startswith("0: release candidate rc/r5")
    assert gitopsd_as(sandbox, "gt-m1-ops", "approve", "r5", "--note", "ok").startswith("0: rc/r5 approved")
    said = gitopsd_as(sandbox, "gt-m1-ops", "withdraw", "r5")
    assert said.startswith("0: rc/r5 approval withdrawn by gt-m1-ops. 0 of 1 approval"), said
    notes = git(sandbox.root, "--git-dir", str(sandbox.repo), "log", "--notes=gitopsd", "-n", "1", "--format=%N", release).stdout
    assert "gitopsd: rc/r5 approval withdrawn by gt-m1-ops at " in notes, notes


def test_a_person_in_override_by_forces_a_blocked_head_past_a_lock_as_themselves(server):
    sandbox, daemon = server
    assert gitopsd_as(sandbox, "gt-m1-lead", "lock", "production", "--reason", "db migration").startswith("0: ")
    sandbox.write("app.txt", "hotfix")
    hotfix = sandbox.commit("hotfix")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", hotfix, timeout=120)
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", hotfix)  # past the hook
    daemon.wait_state("production", "blocked", hotfix, timeout=120)
    said = sandbox.command("status").stdout  # the lock is said once: as why the head is blocked
    assert said.count("db migration") == 1 and "shop/production: promotions to production are stopped" in said, said
    refused = gitopsd_as(sandbox, "gt-m1-lead", "retry", "production", "--force", "--reason", "x")
    assert refused.startswith("1: gitopsd: error: gt-m1-lead may not force a head past the promotion rule in production"), refused
    # Nor asked on the socket as a plain retry, which would clear production's stall and bad trees without override_by.
    ask = (
        "import json, sys; from gitopsd.adapters import control; print(json.dumps(control.call("
        f"{str(sandbox.runtime / 'control.sock')!r}, {{'op': 'retry', 'env': 'production', 'force': False}})))"
    )
    plain = sh([*setpriv("gt-m1-lead"), sys.executable, "-c", ask], check=False, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert "gt-m1-lead may not force a head past the promotion rule in production" in plain.stdout, plain
    # ops, in production's override_by, runs it as themselves (not through sudo): the daemon takes the identity.
    said = gitopsd_as(sandbox, "gt-m1-ops", "retry", "production", "--force", "--reason", "the lock is for the db only")
    assert said.startswith(f"0: shop/production: {hotfix[:7]} admitted past the promotion rule by gt-m1-ops"), said
    row = daemon.wait_result("production", hotfix, "succeeded", timeout=120)
    assert "gt-m1-ops" in str(row) and "the lock is for the db only" in str(row), row


def test_a_candidate_refused_for_a_rejection_says_its_author_withdraws_it(gated):
    sandbox, daemon = gated
    sandbox.write("app.txt", "v6")
    release = sandbox.commit("v6")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=120)
    assert gitopsd_as(sandbox, "gt-m1-lead", "rc", "create", "--name", "r6").startswith("0: release candidate rc/r6")
    assert gitopsd_as(sandbox, "gt-m1-ops", "reject", "r6", "--note", "legal has not cleared it").startswith("0: rc/r6 rejected")
    refused = sandbox.command("promote", "rc/r6", "production", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "rejected by gt-m1-ops: legal has not cleared it" in said, said
    # Approving does not lift a rejection (docs/human-gates.md): the refusal says who takes it back, and how.
    assert "a rejection holds until its author takes it back: gt-m1-ops runs gitopsd withdraw r6 --repo shop" in said, said


def test_a_refused_promotion_names_the_commit_the_person_promoted_not_the_merge_gitopsd_would_have_made(server):
    sandbox, daemon = server
    sandbox.write("app.txt", "untested")
    untested = sandbox.commit("untested")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/staging", untested)  # never deployed
    git(sandbox.work, "fetch", "-q", "origin")
    pushed = sandbox.push("origin/staging:refs/promote/production", check=False)
    tree = sandbox.tree(untested)[:7]
    assert f"commit {untested[:7]} has tree {tree}, which was never deployed successfully to staging" in pushed.stderr, (
        pushed.stderr
    )
    promoted = sandbox.command("promote", "staging", "production", check=False)
    assert f"commit {untested[:7]} has tree {tree}" in promoted.stdout + promoted.stderr
