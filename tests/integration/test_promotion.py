"""The promotion policy through real `git push` into real bare repositories (and the daemon where
deployments must have happened): exact `remote:` output and exit codes."""
from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from tests.support import Daemon, Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]}


@pytest.fixture
def sandbox(short_tmp):
    return Sandbox(short_tmp, CHAIN)


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def test_qa_takes_trees_from_main_and_refuses_others(sandbox):
    sandbox.write("a.txt", "on main")
    sandbox.commit("on main")
    assert sandbox.push("main", "main:qa").returncode == 0    # main and qa in one push
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
        assert "remote:     promote what staging runs, with exactly its tree: gitopsd promote staging production" \
            in remote_text(proc)
        # The exact-tree promotion is accepted and deploys the fix.
        reverted = sandbox.head("production")
        out = sandbox.cli("promote", "staging", "production").stdout
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
        out = sandbox.cli("promote", "qa", "staging", "--dry-run").stdout
        assert out.startswith("would promote qa") and sandbox.head("staging") == before
        refused = sandbox.cli("promote", "staging", "production", "--dry-run", check=False)
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
            results[name] = subprocess.run(["git", "push", "--atomic", "origin", *refspecs], cwd=cwd, capture_output=True,
                                           text=True, env=sandbox.environ())
        threads = [threading.Thread(target=push, args=("mine", sandbox.work, ["main", "main:qa"])),
                   threading.Thread(target=push, args=("theirs", other, ["HEAD:main", "HEAD:qa"]))]
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
    assert sandbox.push("main:staging", check=False).returncode == 1   # still gated
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


def test_a_closed_window_refuses_promotions_but_not_rollbacks_and_an_allowed_identity_may_override(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        v1 = sandbox.head("qa")
        sandbox.write("a.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        v2 = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", v2)
        # A freeze that started a minute ago and lasts two hours, in the real clock.
        start = datetime.now(timezone.utc) - timedelta(minutes=1)
        _window_config(sandbox, "qa", [{"name": "release freeze", "deny": f"{start.minute} {start.hour} * * *",
                                        "duration": "2h", "timezone": "UTC"}], ["alice"])
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
        # An override by a disallowed identity is refused; by alice it is accepted and recorded.
        # The hotfix: main's tree (v3) on top of qa, as `gitopsd promote` would make it.
        git(sandbox.work, "fetch", "-q", "origin")
        hotfix = git(sandbox.work, "commit-tree", "origin/main^{tree}", "-p", "origin/qa", "-p", "origin/main",
                     "-m", "hotfix").stdout.strip()
        bob = subprocess.run(["git", "push", "-o", "override=customer outage", "origin", f"{hotfix}:refs/heads/qa"],
                             cwd=sandbox.work, capture_output=True, text=True, env=sandbox.environ(GL_USER="bob"))
        assert bob.returncode == 1 and "bob may not override it" in bob.stderr
        alice = subprocess.run(["git", "push", "-o", "override=customer outage", "origin", f"{hotfix}:refs/heads/qa"],
                               cwd=sandbox.work, capture_output=True, text=True, env=sandbox.environ(GL_USER="alice"))
        assert alice.returncode == 0, alice.stderr
        assert "emergency override by alice: customer outage (recorded)" in alice.stderr
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_for(lambda: "emergency override by alice" in (sandbox.history("qa")[0]["reason"] or ""), 10,
                        "override recorded")
    out = sandbox.cli("history", "qa").stdout
    assert "emergency override by alice: customer outage" in out
