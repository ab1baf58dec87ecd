"""Rejected trees (issue 25, item 1): a release that failed production stays out until a person with override_by
lets it through. Real: the daemon as a process, Unix users on its control socket (SO_PEERCRED), git pushes through
the hook, ansible-playbook on local hosts in batches, an HTTP health check that answers 503."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rollout_support import HOSTS, Server
from tests.support import Daemon, Sandbox, git, setpriv, sh, unix_users

PEOPLE = ("gt-rt-ann", "gt-rt-ben", "gt-rt-ops")  # ann makes candidates, ben approves, ops may override
GROUP = "gt-rt-people"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "userdel")),
    reason="real Unix users need root, setpriv, useradd and groupadd",
)


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    with unix_users(PEOPLE, GROUP):
        yield


def as_person(sandbox: Sandbox, user: str, *args: str) -> str:
    """Run `gitopsd ARGS` as USER; return its exit code and what it said, as one text."""
    proc = sh(
        [*setpriv(user), sys.executable, "-m", "gitopsd", *args, "--config", str(sandbox.config)],
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"},
    )
    return f"{proc.returncode}: {(proc.stdout + proc.stderr).strip()}"


def newest_run(sandbox: Sandbox) -> str:
    runs = sandbox.runs()
    return runs[-1] if runs else ""


@pytest.fixture
def story(short_tmp: Path, people: None) -> Iterator[tuple[Sandbox, Daemon, threading.Event]]:
    """staging, then production in batches of 1 and the rest, behind one approval, auto-promoted, rolled back on a 503."""
    outage = threading.Event()
    holder: list[Sandbox] = []
    server = Server(
        lambda path: (
            (503, {"ok": False})
            if outage.is_set() and holder and " deploy production" in newest_run(holder[0])
            else (200, {"ok": True})
        )
    )
    short_tmp.chmod(0o755)
    sandbox = Sandbox(
        short_tmp,
        {"staging": ["s-1"], "production": HOSTS},
        env_options={
            "production": {
                "auto_rollback": True,
                "auto_promote": True,
                "rollout": {"batches": [1, "100%"]},
                "verify": {"http": {"url": f"http://127.0.0.1:{server.port}/health", "retries": 0}},
                "approvals": {"required": 1, "approvers": ["gt-rt-ben"], "forbid_self_approval": False},
                "override_by": ["gt-rt-ops"],
            }
        },
    )
    holder.append(sandbox)
    sandbox.runtime.mkdir()
    shutil.chown(sandbox.runtime, "root", GROUP)
    sandbox.runtime.chmod(0o2750)  # the sockets take the folder's group: the people may use them, not replace them
    try:
        with Daemon(sandbox) as daemon:
            sandbox.write("app.txt", "v1")  # the first release goes the way every later one does
            sandbox.push("main", "main:staging") if sandbox.commit("v1") else None
            daemon.wait_state("staging", "in-sync", sandbox.head("staging"), timeout=120)
            for person, *args in (("gt-rt-ann", "rc", "create", "--name", "r0"), ("gt-rt-ben", "approve", "r0", "--note", "v1")):
                assert as_person(sandbox, person, *args).startswith("0: ")
            daemon.wait_for(lambda: sandbox.tree(sandbox.head("production")) == sandbox.tree("staging"), 60, "promotion")
            daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=120)
            yield sandbox, daemon, outage
    finally:
        server.close()


def test_a_release_that_failed_production_batch_1_stays_out_until_an_unreject_with_a_reason_lets_it_through(story):
    sandbox, daemon, outage = story
    good = sandbox.head("production")
    sandbox.write("app.txt", "v2")
    release = sandbox.commit("v2")
    sandbox.push("main", "main:staging")
    daemon.wait_state("staging", "in-sync", release, timeout=90)
    assert as_person(sandbox, "gt-rt-ann", "rc", "create", "--name", "r1").startswith("0: release candidate rc/r1")
    outage.set()  # production's health check answers 503 to this release
    assert as_person(sandbox, "gt-rt-ben", "approve", "r1", "--note", "looks good").startswith("0: ")
    # The daemon promotes it, batch 1 fails its health check, and the automatic rollback runs.
    daemon.wait_for(lambda: any(d["result"] == "failed" for d in sandbox.history("production")), 120, "the failure")
    failed = next(d for d in sandbox.history("production") if d["result"] == "failed")
    assert failed["outcome"].startswith("batch 1/2 failed") and sandbox.tree(failed["commit"]) == sandbox.tree(release)
    daemon.wait_for(lambda: sandbox.tree(sandbox.head("production")) == sandbox.tree(good), 60, "the revert")
    revert = sandbox.head("production")
    daemon.wait_state("production", "in-sync", revert, timeout=120)
    outage.clear()
    named = f"it failed in production: deployment #{failed['id']} of {failed['commit'][:7]} failed: batch 1/2 failed"

    # Its candidate is failed, its approval void, and why is shown.
    view = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)
    assert view["state"] == "failed" and view["approved_by"] == []
    assert named in view["problems"][0] and "approvals are void" in view["problems"][0]
    # promote, refs/promote/*, approve and rc create refuse it, naming the deployment that failed.
    for args in (("promote", "rc/r1", "production"), ("promote", "staging", "production")):
        refused = sandbox.command(*args, check=False)
        assert refused.returncode == 1 and named in refused.stdout + refused.stderr, args
    git(sandbox.work, "fetch", "-q", "origin")
    pushed = sandbox.push("origin/staging:refs/promote/production", check=False)
    assert pushed.returncode != 0 and "remote:   rule: tree" in pushed.stderr and named in pushed.stderr
    assert as_person(sandbox, "gt-rt-ann", "rc", "create", "--name", "r2").startswith(
        f"1: gitopsd: error: tree {sandbox.tree(release)[:7]} is rejected for production: {named}"
    )
    assert named in as_person(sandbox, "gt-rt-ben", "approve", "r1", "--note", "again")
    # Automatic promotion waits, and says why.
    daemon.wait_for(
        lambda: f"automatic promotion to production waits: tree {sandbox.tree(release)[:7]} is rejected: {named}" in daemon.log(),
        90,
        "the automatic promotion's refusal",
    )
    assert sandbox.head("production") == revert

    # Only override_by may let it through, with a reason, and only a tree that exists and is rejected.
    tree = sandbox.tree(release)
    assert as_person(sandbox, "gt-rt-ann", "release", "unreject", tree, "--reason", "x") == (
        "1: gitopsd: error: gt-rt-ann may not unreject trees for production; who may: gt-rt-ops"
    )
    no_reason = as_person(sandbox, "gt-rt-ops", "release", "unreject", tree)
    assert no_reason.startswith("2: ") and no_reason.endswith("the following arguments are required: --reason")
    assert as_person(sandbox, "gt-rt-ops", "release", "unreject", "f" * 40, "--reason", "x") == (
        f"1: gitopsd: error: no tree or commit {'f' * 40!r} in shop (name a commit or a tree id, e.g. from gitopsd history)"
    )
    assert as_person(sandbox, "gt-rt-ops", "release", "unreject", good, "--reason", "x") == (
        f"1: gitopsd: error: tree {sandbox.tree(good)[:7]} is not rejected anywhere; nothing changed"
    )
    reason = "the 503 was the payment gateway's outage, fixed since"
    assert as_person(sandbox, "gt-rt-ops", "release", "unreject", tree, "--reason", reason) == (
        f"0: tree {tree[:7]} let through again (unrejected) by gt-rt-ops for production: {reason}"
    )

    # Now it goes through, and the audit trail says who let it and why. Production ran other trees since the
    # candidate's preview (the failed release, its rollback): a fresh preview first, and where the hosts now show
    # other changes (the failed release left its mark), the approval is asked again (docs/preview.md).
    stale = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)
    assert stale["state"] == "waiting" and any("preview" in p for p in stale["problems"]), stale["problems"]
    fresh = sandbox.command("preview", "staging", "production", "--rc", "r1", "--json", check=False)
    if json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)["state"] != "approved":
        said = as_person(sandbox, "gt-rt-ben", "approve", "r1", "--note", "the gateway is fixed; the fresh preview is fine")
        assert said.startswith("0: "), said
    again = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)
    assert again["state"] == "approved", (again["problems"], fresh.stdout[-1500:], fresh.stderr[-500:])
    sandbox.command("promote", "rc/r1", "production")
    promoted = sandbox.head("production")
    daemon.wait_state("production", "in-sync", promoted, timeout=120)
    assert sandbox.tree(promoted) == tree
    note = git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", failed["commit"]).stdout
    assert f"tree {tree[:7]} let through again (unrejected) for production and later environments by gt-rt-ops" in note
    assert reason in note
    assert f"tree {tree[:7]} let through again (unrejected) for production by gt-rt-ops: {reason}" in daemon.log()
    history = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)["history"]
    said = [(h["actor"], h["kind"]) for h in history]
    assert said.index(("gitopsd", "tree-rejected")) < said.index(("gt-rt-ops", "tree-unrejected")), said

    # The deployment's record names what allowed it; `rc evidence` prints the whole chain (issue 25, item 5).
    final = daemon.wait_result("production", promoted, "succeeded")
    assert f"(deployment #{final['id']}, promote by root)" in note_of(sandbox, promoted)
    assert "; allowed by rc/r1 approved by gt-rt-ben" in note_of(sandbox, promoted)
    assert (final["rc"], final["approved_by"]) == ("r1", ["gt-rt-ben"])
    evidence = json.loads(sandbox.command("rc", "evidence", "rc/r1").stdout)
    assert evidence["rc"]["name"] == "r1"
    assert [c["commit"] for c in evidence["changes"]] == [release]
    assert [(a["actor"], a["kind"]) for a in evidence["approvals"]][:3] == [
        ("gt-rt-ben", "approve"),
        ("gitopsd", "tree-rejected"),
        ("gt-rt-ops", "tree-unrejected"),
    ]
    assert [(d["env"], d["result"]) for d in evidence["deployments"]] == [
        ("staging", "succeeded"),
        ("production", "failed"),
        ("production", "succeeded"),
    ]
    assert evidence["deployments"][1]["hosts"] == {"p-1": "check-failed", "p-2": "skipped", "p-3": "skipped", "p-4": "skipped"}
    assert [(d["kind"], d["commit"]) for d in evidence["rollbacks"]] == [("rollback", revert)]
    assert [(r["kind"], r["deployment"], r["actor"]) for r in evidence["rejections"]] == [
        ("reject", failed["id"], "gitopsd"),
        ("unreject", None, "gt-rt-ops"),
    ]
    refused = sandbox.command("rc", "evidence", "nope", check=False)
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "gitopsd: error: no release candidate rc/nope in shop (see gitopsd rc list)",
    )


def note_of(sandbox: Sandbox, commit: str) -> str:
    return git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", commit).stdout


def test_over_the_http_api_only_override_by_rejects_a_tree_by_hand_and_promote_refuses_it_until_unrejected(short_tmp, people):
    from tests.integration.test_api_human_gates import Api
    from tests.support import free_port

    short_tmp.chmod(0o755)
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"staging": ["s-1"], "production": ["p-1"]},
        env_options={"production": {"override_by": ["gt-rt-ops"]}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    api = Api(sandbox, f"http://127.0.0.1:{port}")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=120)
        daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 30, "the API up")
        sandbox.write("app.txt", "v2")
        release = sandbox.commit("v2")
        sandbox.push("main", "main:staging")
        daemon.wait_state("staging", "in-sync", release, timeout=90)
        ann, ops = (api.token(u, "approvals:write", owner=f"gt-rt-{u}") for u in ("ann", "ops"))
        path, tree = f"/api/v1/repos/shop/trees/{release}/rejections", sandbox.tree(release)
        reason = "corrupts invoices (found in manual testing)"
        assert api.call("POST", path, ann, {"kind": "reject", "env": "production", "reason": "x"}) == (
            403,
            {
                "message": "gt-rt-ann may not reject trees for production; who may: gt-rt-ops",
                "kind": "forbidden",
                "reason": "override_not_allowed",
                "field": None,
            },
        )
        assert api.call("POST", path, ops, {"kind": "reject", "env": "production"}) == (
            422,
            {"message": "reason is required", "kind": "invalid", "reason": "bad_field", "field": "reason"},
        )
        assert api.call("POST", "/api/v1/repos/shop/trees/nope/rejections", ops, {"kind": "reject", "reason": "x"})[0] == 404
        from gitopsd.adapters.control import call  # a raw client: a name no command line could pass

        assert call(sandbox.runtime / "control.sock", {"op": "tree-reject", "tree": "a\x00b", "reason": "x"}) == {
            "ok": False,
            "error": "no tree or commit 'a\\x00b' in shop (name a commit or a tree id, e.g. from gitopsd history)",
            "kind": "missing",
            "reason": "commit_not_found",
            "field": None,
        }
        assert api.call("POST", path, ops, {"kind": "reject", "env": "production", "reason": reason}) == (
            201,
            {"message": f"tree {tree[:7]} rejected by gt-rt-ops for production: {reason}", "identity": "gt-rt-ops"},
        )
        refused = sandbox.command("promote", "staging", "production", check=False)
        assert refused.returncode == 1
        assert f"rule: tree {tree[:7]} is rejected for production: gt-rt-ops rejected it for production: {reason}" in (
            refused.stderr
        )
        assert api.call("POST", path, ops, {"kind": "unreject", "reason": "fixed by a migration"})[0] == 201
        sandbox.command("promote", "staging", "production")
        daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=120)
    assert sandbox.tree(sandbox.head("production")) == tree
