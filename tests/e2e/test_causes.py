"""What the daemon says caused a deployment, and how it counts what it watches (issue: a new team's rough edges).

The daemon is a real process (`gitopsd run`) over a real bare repository, deploying with real ansible-playbook runs.
"""

from __future__ import annotations

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
