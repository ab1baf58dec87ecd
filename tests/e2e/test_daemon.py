"""The daemon as a real process: real pushes through real hooks, real ansible-playbook runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.support import Daemon, Sandbox, git

# Both environments take main directly here; the promotion chain is tested in test_promotion.
pytestmark = pytest.mark.sandbox(
    {"qa": ["qa-1"], "staging": ["staging-1", "staging-2"]}, env_options={"staging": {"promote_from": "main"}}, converged=True
)


def _converged(sandbox: Sandbox, daemon: Daemon, envs=("qa", "staging")) -> None:
    for env in envs:
        daemon.wait_state(env, "in-sync", sandbox.head(env))


@pytest.mark.parametrize("trigger", ["nudge", "watch", "sweep"])
def test_each_trigger_alone_is_enough_to_deploy_a_push(short_tmp, trigger):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, sweep_interval=2, converged=True)
    with Daemon(sandbox, GITOPSD_TRIGGERS=trigger) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))  # the startup sweep deploys the first head
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        pushed = sandbox.push("main", "main:qa")
        if trigger == "nudge":
            assert "remote: gitopsd: qa will be deployed as soon as this push completes" in pushed.stderr
        daemon.wait_state("qa", "in-sync", new, timeout=30)
    [last] = sandbox.history("qa")[:1]
    assert last["commit"] == new and last["result"] == "succeeded" and last["kind"] == "deploy"
    assert last["trigger"] == {"nudge": "push", "watch": "watch", "sweep": "sweep"}[trigger]


def test_push_records_who_pushed_from_the_transport_not_from_the_commit(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        # The commit's author says "Dev"; the transport (as Gitolite would) says alice.
        import subprocess

        subprocess.run(
            ["git", "push", "-q", "origin", "main", "main:qa"], cwd=sandbox.work, check=True, env=sandbox.environ(GL_USER="alice")
        )
        daemon.wait_state("qa", "in-sync", new)
        daemon.wait_for(lambda: sandbox.history("qa")[0]["actor"].startswith("alice"), 10, "actor recorded")


def test_a_burst_of_pushes_deploys_the_newest_head_not_every_one(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        sandbox.write("SLEEP", "2")
        sandbox.commit("slow deploy")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "deploying")
        sandbox.remove("SLEEP")
        commits = []
        for i in range(5):
            sandbox.write("app.txt", f"v{i}")
            commits.append(sandbox.commit(f"burst {i}"))
            sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", commits[-1])
    deployed = [d["commit"] for d in sandbox.history("qa")]
    assert commits[-1] in deployed
    assert not set(commits[:-1]) & set(deployed), "intermediate heads of a burst must not be deployed"


def test_environments_deploy_in_parallel_one_deployment_each(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        sandbox.write("SLEEP", "3")
        new = sandbox.commit("slow everywhere")
        sandbox.push("main", "main:qa", "main:staging")
        daemon.wait_state("qa", "in-sync", new, timeout=60)
        daemon.wait_state("staging", "in-sync", new, timeout=60)
    import sqlite3

    with sqlite3.connect(sandbox.state / "state.db") as db:
        spans = db.execute("SELECT env, started_at, finished_at FROM deployments WHERE commit_id = ?", (new,)).fetchall()
    assert sorted(env for env, _, _ in spans) == ["qa", "staging"]  # one deployment each
    (_, start_a, end_a), (_, start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, "the two 3-second deployments ran side by side"


def test_a_failing_commit_is_retried_with_backoff_then_stalled_until_the_branch_moves(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        good = sandbox.head("qa")
        sandbox.write("FAIL", "yes")
        bad = sandbox.commit("broken")
        sandbox.push("main", "main:qa")
        row = daemon.wait_state("qa", "stalled", bad, timeout=60)
        assert row["deployed"] == good, "a failing deploy leaves the environment on its last good state"
        attempts = [d for d in sandbox.history("qa") if d["commit"] == bad]
        assert [d["result"] for d in attempts] == ["failed", "failed"]  # retries: 1 -> two attempts
        assert [d["attempt"] for d in attempts] == [2, 1]
        assert "gitopsd retry qa" in daemon.log()
        # Stalled: nothing more happens on its own.
        time.sleep(3)
        assert len([d for d in sandbox.history("qa") if d["commit"] == bad]) == 2
        # `gitopsd retry` clears the stall: one more attempt (which fails again).
        assert "stall cleared" in sandbox.command("retry", "qa").stdout
        daemon.wait_for(lambda: len([d for d in sandbox.history("qa") if d["commit"] == bad]) >= 3, 30, "retry")
        # A new commit moves the branch: deployed at once.
        sandbox.remove("FAIL")
        fixed = sandbox.commit("fixed")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", fixed)


def test_automatic_rollback_reverts_the_branch_and_deploys_the_last_good_tree(short_tmp):
    sandbox = Sandbox(
        short_tmp, {"production": ["p-1", "p-2"]}, env_options={"production": {"auto_rollback": True}}, converged=True
    )
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        sandbox.write("FAIL", "yes")
        bad = sandbox.commit("broken release")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert commit")
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert)
        # Hold a few seconds: the failed tree is not retried.
        time.sleep(3)
    assert sandbox.tree(revert) == sandbox.tree(good)
    history = sandbox.history("production")
    assert [(d["commit"], d["kind"], d["result"]) for d in history[:2]] == [
        (revert, "rollback", "succeeded"),
        (bad, "deploy", "failed"),
    ]
    assert history[0]["trigger"] == "auto-rollback" and history[0]["actor"] == "gitopsd"
    assert "automatic rollback" in history[0]["reason"]
    assert sum(1 for d in history if d["commit"] == bad) == 1
    message = sandbox.command("logs", str(history[0]["id"])).stdout
    assert "rollback" in message
    import subprocess

    body = subprocess.run(
        ["git", "--git-dir", str(sandbox.repo), "log", "-1", "--format=%B", revert], capture_output=True, text=True, check=True
    ).stdout
    assert body.startswith('Revert "broken release"') and f"This reverts commit {bad}." in body
    assert "Gitopsd-Rollback: automatic" in body


def test_a_pushed_git_revert_rolls_the_environment_back(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        v1 = sandbox.head("qa")
        sandbox.write("app.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main")
        import subprocess

        subprocess.run(["git", "fetch", "-q", "origin"], cwd=sandbox.work, check=True)
        subprocess.run(["git", "checkout", "-q", "-b", "qa", "origin/qa"], cwd=sandbox.work, check=True)
        subprocess.run(["git", "merge", "-q", "--no-ff", "-m", "Promote main to qa", "main"], cwd=sandbox.work, check=True)
        merge = sandbox.push("qa:qa") and sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", merge)
        subprocess.run(["git", "revert", "--no-edit", "-m", "1", merge], cwd=sandbox.work, check=True, capture_output=True)
        sandbox.push("qa:qa")
        revert = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", revert)
    assert sandbox.tree(revert) == sandbox.tree(v1)
    assert sandbox.history("qa")[0]["kind"] == "rollback"


def test_gitopsd_rollback_command_reverts_to_the_previous_good_tree(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        v1 = sandbox.head("staging")
        sandbox.write("app.txt", "v2")
        v2 = sandbox.commit("v2")
        sandbox.push("main", "main:staging")
        daemon.wait_state("staging", "in-sync", v2)
        out = sandbox.command("rollback", "staging").stdout
        assert "the daemon deploys it now" in out
        revert = sandbox.head("staging")
        daemon.wait_state("staging", "in-sync", revert)
    assert sandbox.tree(revert) == sandbox.tree(v1)
    last = sandbox.history("staging")[0]
    assert last["kind"] == "rollback" and last["trigger"] == "rollback"


def test_kill_9_mid_deployment_then_restart_marks_it_interrupted_reaps_and_converges(sandbox):
    daemon = Daemon(sandbox)
    _converged(sandbox, daemon)
    sandbox.write("SLEEP", "30")
    slow = sandbox.commit("slow")
    sandbox.push("main", "main:qa")
    daemon.wait_for(lambda: _sleeping("30", sandbox), 30, "sleep started")
    daemon.proc.kill()  # SIGKILL: no cleanup at all
    daemon.stop()
    sandbox.remove("SLEEP")
    with Daemon(sandbox) as second:
        second.wait_for(lambda: not _sleeping("30", sandbox), 10, "orphans reaped")
        second.wait_state("qa", "in-sync", slow, timeout=60)  # the head is still `slow`: redeployed
        assert "interrupted" in second.log()
    results = [(d["commit"], d["result"]) for d in sandbox.history("qa") if d["commit"] == slow]
    assert ("interrupted" in [r for _, r in results]) and results[0][1] == "succeeded"
    # Both are in the audit trail on the commit, each with how it ended and why.
    interrupted = next(d for d in sandbox.history("qa") if d["commit"] == slow and d["result"] == "interrupted")
    notes = git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", slow).stdout
    assert f"gitopsd: deploy to qa interrupted (deployment #{interrupted['id']}, " in notes
    assert "the daemon stopped during this deployment" in notes and "deploy to qa succeeded" in notes


def test_sigterm_during_a_long_deployment_cancels_it_cleanly_and_the_next_start_converges(sandbox):
    daemon = Daemon(sandbox)
    _converged(sandbox, daemon)
    sandbox.write("SLEEP", "60")
    slow = sandbox.commit("very slow")
    sandbox.push("main", "main:qa")
    daemon.wait_for(lambda: _sleeping("60", sandbox), 30, "sleep started")
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(30)
    assert time.monotonic() - started < 5 + 10  # stop_grace 5 s plus cancel and reaping
    assert not _sleeping("60", sandbox)
    daemon.stop()
    [last] = [d for d in sandbox.history("qa") if d["commit"] == slow]
    assert last["result"] == "canceled"
    assert sandbox.status()["qa"]["deployed"] != slow


def test_a_second_daemon_on_the_same_state_folder_refuses_to_start(sandbox):
    with Daemon(sandbox) as first:
        _converged(sandbox, first)
        second = Daemon(sandbox)
        assert second.proc.wait(20) == 1
        assert "already running" in second.log()
        second.stop()


def _sleeping(seconds: str, sandbox: Sandbox) -> bool:
    """Is a `sleep SECONDS` started by this test's playbook alive? (Other tests' runs carry another output folder, and
    other tests sleep 60 too.)"""
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:2] == ["sleep", seconds] and proc.environ().get("GITOPSD_TEST_OUT") == str(sandbox.out):
                return True
        except psutil.Error:
            continue
    return False


def test_a_commit_without_the_playbook_stalls_at_once_and_leaves_the_last_good_state(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        good = sandbox.head("qa")
        sandbox.remove("playbooks/deploy.yml")
        broken = sandbox.commit("lose the playbook")
        sandbox.push("main", "main:qa")
        row = daemon.wait_state("qa", "stalled", broken)
        assert row["deployed"] == good
        assert "playbooks/deploy.yml does not exist in this commit" in row["reason"]
        assert [d["result"] for d in sandbox.history("qa") if d["commit"] == broken] == ["failed"]


def test_a_branch_pointing_at_a_missing_object_is_reported_and_other_environments_still_deploy(sandbox):
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        sandbox.push("main")
        (sandbox.repo / "refs" / "heads" / "staging").write_text("1" * 40 + "\n")
        # git itself now refuses pushes to this repository ("bad object"); the ref can still move.
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", new)
        daemon.wait_state("qa", "in-sync", new)
        row = sandbox.status()["staging"]
        assert row["state"] == "missing-branch" and "missing commit" in row["reason"]
        daemon.wait_for(lambda: "an object missing from the repository" in daemon.log(), 10, "error logged")
        assert daemon.proc.poll() is None


def test_commit_messages_with_shell_or_jinja_syntax_never_execute(sandbox):
    canary = sandbox.root / "pwned"
    with Daemon(sandbox) as daemon:
        _converged(sandbox, daemon)
        sandbox.write("app.txt", "v2")
        evil = sandbox.commit(
            "{{ lookup('pipe', 'touch " + str(canary) + "') }} $(touch " + str(canary) + ") `touch " + str(canary) + "`"
        )
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", evil)
        sandbox.command("rollback", "qa")  # the revert message quotes the evil subject
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        assert sandbox.history("qa")[0]["kind"] == "rollback"
    assert not canary.exists()


def _read_only(path) -> bool:
    """Make a folder tree unwritable even for root (which ignores modes): the immutable attribute."""
    if os.geteuid() != 0:
        return subprocess.run(["chmod", "-R", "a-w", str(path)], check=False).returncode == 0
    return (
        bool(shutil.which("chattr"))
        and subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True, check=False).returncode == 0
    )


def _writable(path) -> None:
    subprocess.run(["chattr", "-R", "-i", str(path)] if os.geteuid() == 0 else ["chmod", "-R", "u+w", str(path)], check=False)


def test_a_failed_automatic_rollback_is_logged_notified_and_shown_as_failed(short_tmp):
    events = short_tmp / "events.jsonl"
    notifier = [sys.executable, "-c", f"import sys; open({str(events)!r}, 'a').write(sys.stdin.read() + '\\n')"]
    sandbox = Sandbox(
        short_tmp, {"production": ["p-1"]}, env_options={"production": {"auto_rollback": True, "notify": {"command": notifier}}}
    )
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("FAIL", "yes")
        bad = sandbox.commit("broken release")
        sandbox.push("main")
        # The repository's objects become read-only for the daemon; then production moves to the broken
        # release (by update-ref: a push needs to write objects too).
        if not _read_only(sandbox.repo / "objects"):
            pytest.skip("cannot make the repository read-only here (chattr +i needs an ext4-like file system)")
        try:
            git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", bad)
            row = daemon.wait_state("production", "failed", bad)
            assert row["reason"].startswith(
                f"automatic rollback failed: cannot write the revert to {sandbox.repo}: git commit-tree"
            )
            assert "not permitted" in row["reason"] or "permission" in row["reason"]
            daemon.wait_for(lambda: events.exists() and "rollback-failed" in events.read_text(), 20, "notification")
            failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
            assert f"[shop/production {bad[:7]} #{failed['id']}] deployment failed" in daemon.log()
            assert f"and {row['reason']}" in daemon.log()
            assert sandbox.head("production") == bad
            time.sleep(2)
            assert sandbox.status()["production"]["state"] == "failed"  # a person must act: nothing retries
            assert len([d for d in sandbox.history("production") if d["commit"] == bad]) == 1
        finally:
            _writable(sandbox.repo / "objects")
    [event] = [json.loads(line) for line in events.read_text().splitlines() if '"rollback-failed"' in line]
    assert event["deployment"] == failed["id"] and event["commit"] == bad and event["reason"] == row["reason"]
