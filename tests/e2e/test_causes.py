"""What the daemon says caused a deployment, and how it counts what it watches (issue: a new team's rough edges).

The daemon is a real process (`gitopsd run`) over a real bare repository, deploying with real ansible-playbook runs.
"""

from __future__ import annotations

import os
import pwd

from tests.support import Daemon, Sandbox, git


def test_the_deployment_the_daemon_starts_at_its_start_is_caused_by_the_daemon_not_unknown(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    with Daemon(sandbox) as daemon:
        row = daemon.wait_result("qa", sandbox.head("qa"), "succeeded", timeout=120)
        assert (row["trigger"], row["actor"]) == ("startup", "gitopsd")
        assert "caused by the daemon's start)" in daemon.log()
        shown = sandbox.command("history", "qa").stdout
        assert "startup  gitopsd" in shown and "unknown" not in shown
        # The ledger in refs/notes/gitopsd says it too (`db rebuild` reads it back).
        note = ["log", "-1", "--notes=gitopsd", "--format=%N", "qa"]
        daemon.wait_for(
            lambda: (
                f"(deployment #{row['id']}, startup by gitopsd)"
                in git(sandbox.root, "--git-dir", str(sandbox.repo), *note).stdout
            ),
            60,
            "the deployment's note",
        )


def test_a_branch_moved_by_hand_with_no_nudge_is_still_caused_by_someone_unknown(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox, GITOPSD_TRIGGERS="watch") as daemon:
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        sandbox.push("main")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", new)
        row = daemon.wait_result("qa", new, "succeeded", timeout=120)
        assert (row["trigger"], row["actor"]) == ("watch", "unknown")
        assert f"deploying {new[:7]} (deploy, attempt 1, caused by unknown)" in daemon.log()


def test_the_daemon_counts_one_repository_and_one_environment_in_the_singular(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "gitopsd started:" in daemon.log(), 60, "the start line")
        assert "gitopsd started: 1 repository, 1 environment, state in" in daemon.log()


def test_a_deployment_tried_again_by_gitopsd_retry_is_caused_by_whoever_ran_it(short_tmp):
    """Not by the pusher of the head, nor `unknown` when nobody announced it: the operator who asked, as a retry."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        sandbox.write("FAIL", "all")
        bad = sandbox.commit("a tree that fails")
        sandbox.push("main")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", bad)  # no hook: nobody announced
        daemon.wait_state("qa", "stalled", bad, timeout=120)
        tried = len(sandbox.history("qa"))
        assert "stall cleared; the daemon looks at it now" in sandbox.command("retry", "qa").stdout
        daemon.wait_for(lambda: len(sandbox.history("qa")) > tried, 60, "the deployment tried again")
        row = sandbox.history("qa")[0]
        me = pwd.getpwuid(os.geteuid()).pw_name
        assert (row["commit"], row["trigger"], row["actor"]) == (bad, "retry", me)
        assert f"deploying {bad[:7]} (deploy, attempt 1, caused by {me})" in daemon.log()
