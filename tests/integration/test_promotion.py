"""The promotion policy through real `git push` into real bare repositories (and the daemon where
deployments must have happened): exact `remote:` output and exit codes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from gitopsd.adapters.store import Store
from tests.support import Daemon, Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]}


pytestmark = pytest.mark.sandbox(CHAIN, converged=True)


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def test_qa_takes_trees_from_main_and_refuses_others(sandbox):
    sandbox.write("a.txt", "on main")
    sandbox.commit("on main")
    assert sandbox.push("main", "main:qa").returncode == 0  # main and qa in one push
    git(sandbox.work, "checkout", "-q", "-b", "side")
    sandbox.write("b.txt", "never on main")
    side = sandbox.commit("side")
    proc = sandbox.push("side:qa", check=False)
    assert proc.returncode == 1
    text = remote_text(proc)
    assert "remote: gitopsd: push to refs/heads/qa refused" in text
    assert "remote:   rule: qa only takes trees from main" in text
    tree = git(sandbox.work, "rev-parse", f"{side}^{{tree}}").stdout.strip()
    assert f"remote:   commit {side[:7]} has tree {tree[:7]}, which no commit on main has." in text
    assert f"remote:     push the change to main first, then promote it: git push origin {side[:7]}:main" in text


def test_staging_refuses_a_tree_qa_never_ran_and_says_how_to_get_there(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    proc = sandbox.push("main:staging", check=False)
    assert proc.returncode == 1
    text = remote_text(proc)
    assert "remote:   rule: staging only takes trees that were deployed and verified in qa" in text
    assert f"remote:   commit {v2[:7]} has tree {sandbox.tree(v2)[:7]}, which was never deployed successfully to qa." in text
    assert "remote:     promote what qa runs, with exactly its tree: gitopsd promote qa staging --repo shop" in text
    assert f"remote:     or deploy this change to qa first: git push origin {v2[:7]}:qa" in text


def test_creating_an_environment_branch_by_push_is_refused(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    data = yaml.safe_load(sandbox.config.read_text())
    data["repositories"][0]["environments"].append({"name": "hotfix", "promote_from": "main"})
    sandbox.config.write_text(yaml.safe_dump(data))
    proc = sandbox.push("main:hotfix", check=False)
    assert proc.returncode == 1
    assert "remote:   rule: environment branches are created by `gitopsd init` only" in remote_text(proc)


def test_a_refusal_of_one_ref_refuses_the_whole_push_with_or_without_atomic(sandbox):
    sandbox.write("a.txt", "v2")
    sandbox.commit("v2")
    before = {b: sandbox.head(b) for b in ("main", "qa", "staging")}
    for atomic in ([], ["--atomic"]):
        proc = sandbox.push(*atomic, "main", "main:qa", "main:staging", check=False)
        assert proc.returncode == 1
        assert "refs/heads/staging refused" in proc.stderr
        assert {b: sandbox.head(b) for b in before} == before
    assert sandbox.push("--atomic", "main", "main:qa").returncode == 0
    assert sandbox.head("qa") == sandbox.head("main") != before["qa"]


def test_pushed_objects_in_quarantine_are_judged_correctly(sandbox):
    # The commit exists only in the push's quarantine while pre-receive runs; its tree must be found.
    sandbox.write("fresh.txt", "brand new object")
    fresh = sandbox.commit("fresh")
    assert sandbox.push("main", "main:qa").returncode == 0
    assert sandbox.head("qa") == fresh


def test_the_revert_a_faulty_merge_trap_is_refused_and_exact_tree_promotion_fixes_it(sandbox):
    with Daemon(sandbox) as daemon:
        for env in CHAIN:
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        # A feature goes all the way to production through merges made by hand.
        sandbox.write("feature.txt", "feature v1 (buggy)")
        sandbox.commit("feature")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.push("main:staging")
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        git(sandbox.work, "fetch", "-q", "origin")
        git(sandbox.work, "checkout", "-q", "-b", "production", "origin/production")
        git(sandbox.work, "merge", "-q", "--no-ff", "-m", "Release feature", "origin/staging")
        sandbox.push("production")
        release = sandbox.head("production")
        daemon.wait_state("production", "in-sync", release)
        # Production is rolled back with a revert of the release merge.
        git(sandbox.work, "revert", "--no-edit", "-m", "1", release)
        sandbox.push("production")
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        # The fix goes through main, qa, staging.
        git(sandbox.work, "checkout", "-q", "main")
        sandbox.write("feature-fix.txt", "the fix for the feature")
        fixed = sandbox.commit("fix the feature")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", fixed)
        sandbox.push("main:staging")
        daemon.wait_state("staging", "in-sync", fixed)
        # A plain `git merge staging` into production keeps the revert: a tree staging never ran.
        git(sandbox.work, "checkout", "-q", "production")
        git(sandbox.work, "merge", "-q", "--no-ff", "-m", "Release the fix", "main")
        merged_tree = git(sandbox.work, "rev-parse", "HEAD^{tree}").stdout.strip()
        assert merged_tree != sandbox.tree(fixed)
        assert not (sandbox.work / "feature.txt").exists(), "git kept the revert: the feature is gone"
        proc = sandbox.push("production", check=False)
        assert proc.returncode == 1
        assert "remote:     promote what staging runs, with exactly its tree: gitopsd promote staging production" in remote_text(
            proc
        )
        # The exact-tree promotion is accepted and deploys the fix.
        reverted = sandbox.head("production")
        out = sandbox.command("promote", "staging", "production").stdout
        assert "is what staging runs" in out
        promoted = sandbox.head("production")
        assert sandbox.tree(promoted) == sandbox.tree(fixed)
        parents = git(sandbox.work, "--git-dir", str(sandbox.repo), "rev-list", "--parents", "-n1", promoted).stdout.split()
        assert parents[1:] == [reverted, fixed]
        daemon.wait_state("production", "in-sync", promoted)
    last = sandbox.history("production")[0]
    assert last["trigger"] == "promote" and last["kind"] == "deploy"


def test_promote_dry_run_shows_the_decision_and_moves_nothing(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("a.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        before = sandbox.head("staging")
        out = sandbox.command("promote", "qa", "staging", "--dry-run").stdout
        assert out.startswith("would promote qa") and sandbox.head("staging") == before
        # What it would change, before it happens: the files, and the command that says it per host.
        assert "it changes 1 file (a.txt); what each host would do: gitopsd preview qa staging --repo shop" in out, out
        refused = sandbox.command("promote", "staging", "production", "--dry-run", check=False)
        assert refused.returncode == 0 and "nothing to promote" in refused.stdout


def test_concurrent_pushes_to_one_branch_exactly_one_wins_and_only_it_deploys(sandbox):
    other = sandbox.root / "other"
    git(sandbox.root, "clone", "-q", str(sandbox.repo), str(other))
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("a.txt", "mine")
        mine = sandbox.commit("mine")
        (other / "b.txt").write_text("theirs")
        git(other, "add", "b.txt")
        git(other, "-c", "user.email=o@example.com", "-c", "user.name=O", "commit", "-qm", "theirs")
        results = {}

        def push(name, cwd, refspecs):
            # --atomic: main and qa land together or not at all (without it, each push could land half).
            results[name] = subprocess.run(
                ["git", "push", "--atomic", "origin", *refspecs], cwd=cwd, capture_output=True, text=True, env=sandbox.environ()
            )

        threads = [
            threading.Thread(target=push, args=("mine", sandbox.work, ["main", "main:qa"])),
            threading.Thread(target=push, args=("theirs", other, ["HEAD:main", "HEAD:qa"])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n, p in results.items() if p.returncode == 0]
        assert len(winners) == 1, {n: p.stderr for n, p in results.items()}
        head = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", head)
        time.sleep(1)
    deployed = {d["commit"] for d in sandbox.history("qa")}
    loser = ({mine} | {git(other, "rev-parse", "HEAD").stdout.strip()}) - {head}
    assert head in deployed and not (loser & deployed)


def test_pack_refs_and_gc_cause_no_redeploy(sandbox):
    with Daemon(sandbox) as daemon:
        for env in CHAIN:
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        count = len(sandbox.history())
        git(sandbox.root, "--git-dir", str(sandbox.repo), "pack-refs", "--all")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "gc", "--quiet")
        time.sleep(3)
        assert len(sandbox.history()) == count
        assert all(r["state"] == "in-sync" for r in sandbox.status().values())
        # And a push after packing still deploys.
        sandbox.write("a.txt", "after gc")
        after = sandbox.commit("after gc")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", after)


def test_pushes_while_the_daemon_is_down_are_gated_the_same_and_deploy_once_it_is_back(sandbox):
    sandbox.write("a.txt", "v2")
    v2 = sandbox.commit("v2")
    assert sandbox.push("main:staging", check=False).returncode == 1  # still gated
    proc = sandbox.push("main", "main:qa")
    assert "the daemon is not running; qa will be deployed when it is back" in proc.stderr
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", v2)


def _window_config(sandbox: Sandbox, env: str, windows: list, override_by: list[str]) -> None:
    data = yaml.safe_load(sandbox.config.read_text())
    for e in data["repositories"][0]["environments"]:
        if e["name"] == env:
            e["windows"] = windows
            e["override_by"] = override_by
    sandbox.config.write_text(yaml.safe_dump(data))


def test_a_closed_window_refuses_promotions_but_not_rollbacks_and_one_identity_alone_may_not_override_it(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        v1 = sandbox.head("qa")
        sandbox.write("a.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        v2 = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", v2)
        # A freeze that started a minute ago and lasts two hours, in the real clock.
        start = datetime.now(UTC) - timedelta(minutes=1)
        _window_config(
            sandbox,
            "qa",
            [{"name": "release freeze", "deny": f"{start.minute} {start.hour} * * *", "duration": "2h", "timezone": "UTC"}],
            ["alice"],
        )
        sandbox.write("a.txt", "v3")
        sandbox.commit("v3")
        proc = sandbox.push("main", "main:qa", check=False)
        assert proc.returncode == 1
        text = remote_text(proc)
        assert "rule: promotions to qa are closed now: the deploy window is closed: inside 'release freeze'" in text
        opens = (start + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M UTC")
        assert f"promotion opens again at {opens}." in text
        # A rollback to a tree qa ran before is accepted during the freeze.
        git(sandbox.work, "push", "-q", "origin", "main")
        git(sandbox.work, "fetch", "-q", "origin")
        git(sandbox.work, "checkout", "-q", "-b", "qa", "origin/qa")
        git(sandbox.work, "revert", "--no-edit", "HEAD")
        rb = sandbox.push("qa:qa")
        assert rb.returncode == 0
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        assert sandbox.tree(sandbox.head("qa")) == sandbox.tree(v1)
        # An override by a disallowed identity is refused; by alice alone too: it takes two people (break-glass,
        # tests/integration/test_break_glass.py), and the refusal says how.
        # The hotfix: main's tree (v3) on top of qa, as `gitopsd promote` would make it.
        git(sandbox.work, "fetch", "-q", "origin")
        hotfix = git(
            sandbox.work, "commit-tree", "origin/main^{tree}", "-p", "origin/qa", "-p", "origin/main", "-m", "hotfix"
        ).stdout.strip()
        bob = subprocess.run(
            ["git", "push", "-o", "override=customer outage", "origin", f"{hotfix}:refs/heads/qa"],
            cwd=sandbox.work,
            capture_output=True,
            text=True,
            env=sandbox.environ(GL_USER="bob"),
        )
        assert bob.returncode == 1 and "bob may not override it" in bob.stderr
        alice = subprocess.run(
            ["git", "push", "-o", "override=customer outage", "origin", f"{hotfix}:refs/heads/qa"],
            cwd=sandbox.work,
            capture_output=True,
            text=True,
            env=sandbox.environ(GL_USER="alice"),
        )
        assert alice.returncode == 1 and "an emergency override needs two people" in alice.stderr, alice.stderr
        assert "break glass with two people: gitopsd override qa --reason '<why>'" in alice.stderr
        assert sandbox.head("qa") != hotfix


def _forward_commit(sandbox: Sandbox, branch: str, tree_of: str, message: str) -> str:
    """A commit on top of `branch` with the tree of `tree_of`, made in the bare repository (no push, no hook)."""
    return git(
        sandbox.root,
        "--git-dir",
        str(sandbox.repo),
        "commit-tree",
        f"{tree_of}^{{tree}}",
        "-p",
        f"refs/heads/{branch}",
        "-m",
        message,
    ).stdout.strip()


def _as_nobody(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """`gitopsd ARGS` as the Unix user nobody: another identity than the test's."""
    for path in (sandbox.root, sandbox.config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return subprocess.run(
        [
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "gitopsd",
            *args,
            "--config",
            str(sandbox.config),
        ],
        capture_output=True,
        text=True,
        env=sandbox.environ(HOME="/tmp"),
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="another identity needs root and setpriv")
def test_a_head_moved_past_the_hook_is_blocked_until_an_allowed_identity_forces_it(sandbox):
    sandbox.env_options["production"] = {"override_by": [pwd.getpwuid(os.getuid()).pw_name]}
    sandbox.write_config()
    with Daemon(sandbox) as daemon:
        for env in CHAIN:
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        sandbox.write("a.txt", "never in staging")
        v2 = sandbox.commit("v2")
        sandbox.push("main")
        # The git user moves production by hand: no hook runs.
        sneaky = _forward_commit(sandbox, "production", v2, "straight to production")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", sneaky)
        row = daemon.wait_state("production", "blocked", sneaky)
        assert row["reason"] == (
            f"production only takes trees that were deployed and verified in staging: commit "
            f"{sneaky[:7]} has tree {sandbox.tree(v2)[:7]}, which was never deployed successfully "
            "to staging. A merge made by hand gets a new tree when the branches differ (after a "
            "revert, for example)."
        )
        assert f"shop/production: {row['reason']}" in sandbox.command("status").stdout
        time.sleep(2)  # looks come and go: still nothing runs, and it was said once
        assert not [d for d in sandbox.history("production") if d["commit"] == sneaky]
        assert daemon.log().count(f"blocked {sneaky[:7]}:") == 1
        # --force asks the daemon, which knows the caller from its socket: nobody is not even in its group (someone
        # in the group but not in override_by is refused by name: tests/e2e/test_month_one.py).
        refused = _as_nobody(sandbox, "retry", "production", "--force")
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"gitopsd: error: you may not use {sandbox.runtime / 'control.sock'}: ask an operator")
        out = sandbox.command("retry", "production", "--force", "--reason", "customer outage").stdout
        assert f"{sneaky[:7]} admitted past the promotion rule by" in out
        daemon.wait_state("production", "in-sync", sneaky)
    last = sandbox.history("production")[0]
    assert (last["commit"], last["kind"], last["result"], last["trigger"]) == (sneaky, "deploy", "succeeded", "retry")
    assert last["reason"].startswith("retry --force: customer outage (it was blocked: production only takes trees")
    history = sandbox.command("history", "production").stdout
    assert f"shop/production {sneaky[:7]} (override) by root" in history and "customer outage" in history


def test_reverting_a_rollback_during_a_freeze_is_no_rollback_for_the_hook_nor_for_the_daemon(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("a.txt", "T2, the bad release")
        sandbox.commit("T2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.command("rollback", "qa")  # back to T1
        rolled_back = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", rolled_back)
        start = datetime.now(UTC) - timedelta(minutes=1)
        _window_config(
            sandbox,
            "qa",
            [{"name": "release freeze", "deny": f"{start.minute} {start.hour} * * *", "duration": "2h", "timezone": "UTC"}],
            [],
        )
        daemon.proc.send_signal(signal.SIGHUP)  # the daemon judges with the freeze too
        daemon.wait_for(lambda: "configuration reloaded" in daemon.log(), 30, "reload")
        git(sandbox.work, "fetch", "-q", "origin")
        git(sandbox.work, "checkout", "-q", "-b", "qa", "origin/qa")
        git(sandbox.work, "revert", "--no-edit", "HEAD")  # the revert of the rollback: tree T2 again
        proc = sandbox.push("qa:qa", check=False)
        assert proc.returncode == 1
        text = remote_text(proc)
        assert "rule: promotions to qa are closed now: the deploy window is closed: inside 'release freeze'" in text
        assert "ran in qa earlier, but only the tree before the current one is a rollback" in text
        assert sandbox.head("qa") == rolled_back
        # Past the hook, the daemon refuses it the same way.
        again = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
        git(sandbox.work, "push", "-q", "origin", "HEAD:refs/heads/sneaky")  # the objects, on a feature branch
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", again)
        row = daemon.wait_state("qa", "blocked", again)
        assert row["reason"].startswith("promotions to qa are closed now: the deploy window is closed: inside")
        assert not [d for d in sandbox.history("qa") if d["commit"] == again]


def test_a_promotion_after_a_rollback_is_recorded_as_a_deploy(sandbox):
    with Daemon(sandbox) as daemon:
        for env in ("qa", "staging"):
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        sandbox.write("a.txt", "T2")
        sandbox.commit("T2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.command("promote", "qa", "staging")
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        sandbox.command("rollback", "staging")
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        sandbox.command("promote", "qa", "staging")  # T2 again, as qa runs it: a promotion
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
    assert [d["kind"] for d in sandbox.history("staging")[:3]] == ["deploy", "rollback", "deploy"]


def test_rollback_to_an_earlier_deployment_is_admitted_and_recorded_and_bad_ids_are_refused(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        first = sandbox.history("qa")[0]
        for n in (2, 3):
            sandbox.write("a.txt", f"T{n}")
            sandbox.commit(f"T{n}")
            sandbox.push("main", "main:qa")
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        other = next(d for d in sandbox.history() if d["env"] != "qa")
        refused = sandbox.command("rollback", "qa", "--to", str(other["id"]), check=False)
        assert refused.returncode == 1 and refused.stderr.splitlines() == [
            f"gitopsd: error: deployment #{other['id']} is not a deployment of shop/qa; "
            "pick one from `gitopsd history qa --repo shop`"
        ]
        store = Store(sandbox.state / "state.db")
        failed = store.begin(
            repo="shop",
            env="qa",
            commit=first["commit"],
            tree=first["tree"],
            previous_commit=None,
            kind="deploy",
            trigger="test",
            actor="test",
            now=time.time(),
        )
        store.finish(failed, "failed", now=time.time())
        store.close()
        refused = sandbox.command("rollback", "qa", "--to", str(failed), check=False)
        assert refused.returncode == 1 and refused.stderr.splitlines() == [
            f"gitopsd: error: deployment #{failed} failed: only a tree that ran successfully is a rollback target; "
            "pick a succeeded one from `gitopsd history qa --repo shop`"
        ]
        out = sandbox.command("rollback", "qa", "--to", str(first["id"])).stdout
        assert f"whose tree is the one deployment #{first['id']}" in out
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    assert sandbox.tree(sandbox.head("qa")) == first["tree"]
    last = sandbox.history("qa")[0]
    assert (last["kind"], last["result"], last["trigger"]) == ("rollback", "succeeded", "rollback")
    assert "(rollback) by root" in sandbox.command("history", "qa").stdout
