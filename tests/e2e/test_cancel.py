"""An operator cancels a deployment that hangs: `gitopsd cancel ENV` over the control socket. Real: the daemon as a
process, a real ansible-playbook run on a local host whose task sleeps, the processes it leaves (or not)."""

from __future__ import annotations

from tests.integration.test_reap import sleeping
from tests.support import Daemon, Sandbox


def test_an_operator_cancels_a_hanging_deployment_its_processes_stop_and_the_environment_stalls_until_retry(short_tmp):
    # Before: no command could stop it; the run went on to its timeout (15 min by default), then was retried, and a
    # daemon restarted to end it deployed the same commit again at its start.
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        good = sandbox.head("qa")
        sandbox.write("SLEEP", "613")
        hang = sandbox.commit("waits for a database that never answers")
        sandbox.push("main", "main:qa")
        daemon.wait_for(lambda: sleeping("613"), 90, "the hanging task")
        running = daemon.wait_result("qa", hang, "running")
        said = sandbox.command("cancel", "qa")
        assert said.stdout == (
            f"shop/qa: deployment #{running['id']} of {hang[:7]} canceled by root: its run and every process it started stop now; "
            f"qa stays on {good[:7]} until the branch moves or `gitopsd retry qa`\n"
        ), said.stdout
        canceled = daemon.wait_result("qa", hang, "canceled")
        row = daemon.wait_state("qa", "stalled", hang)
        assert not sleeping("613")
        again = sandbox.command("cancel", "qa", check=False)
        assert again.returncode == 1 and again.stderr.strip().splitlines() == [
            "gitopsd: error: nothing is deploying in shop/qa now, so there is nothing to cancel (see `gitopsd status`)"
        ], again.stderr
    assert canceled["outcome"] == "canceled by root" and canceled["id"] == running["id"]
    assert row["deployed"] == good and "canceled by root" in row["reason"] and "gitopsd retry qa" in row["reason"], row
    assert [d["commit"] for d in sandbox.history("qa")].count(hang) == 1  # not deployed again
