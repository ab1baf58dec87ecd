"""Built-in CI with the daemon as a real process: a push to main runs the steps (in the sandbox), their
statuses gate qa, the artifact built once reaches qa and staging with the same sha256, a newer push
cancels an older run, and a daemon killed during a run leaves no process and no pending status."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
from pathlib import Path

import pytest
import yaml

from gitopsd.adapters import runner
from gitopsd.adapters.store import Store
from tests.support import Daemon, Sandbox

# The artifacts CI built for the deployed tree, copied to each host's folder: the bits arrive.
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: copy each artifact of this tree
      ansible.builtin.copy:
        src: "{{ item.value.path }}"
        dest: "{{ lookup('ansible.builtin.env', 'GITOPSD_TEST_OUT') }}/{{ gitopsd_env }}-{{ inventory_hostname }}-{{ item.key | basename }}"
        mode: "0644"
      loop: "{{ gitopsd_artifacts | dict2items }}"
"""

BUILD = ["sh", "-c", "mkdir -p dist && python3 -m tarfile -c dist/app.tar.gz app.txt && echo built"]
TEST = ["sh", "-c", "python3 -m tarfile -l dist/app.tar.gz | grep -q app.txt && ! test -f BROKEN"]


def with_ci(sandbox: Sandbox, steps: list[dict], qa_requires: tuple[str, ...] = ()) -> None:
    data = yaml.safe_load(sandbox.config.read_text())
    data["repositories"][0]["ci"] = {"steps": steps, "branches": ["main"]}
    if qa_requires:
        data["repositories"][0]["environments"][0]["require_checks"] = list(qa_requires)
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))


def statuses(sandbox: Sandbox, commit: str) -> dict[str, tuple[str, str]]:
    with Store(sandbox.state / "state.db", readonly=True) as store:
        return {s.context: (s.state, s.description or "") for s in store.statuses("shop", sandbox.tree(commit))}


def finished(sandbox: Sandbox, commit: str, n: int) -> dict[str, tuple[str, str]] | None:
    got = statuses(sandbox, commit)
    return got if len(got) == n and all(state != "pending" for state, _ in got.values()) else None


def run_id(description: str) -> int:
    return int(description.rsplit("gitopsd logs --ci ", 1)[1].rstrip(")"))


def ci_processes(sandbox: Sandbox, number: int) -> list[int]:
    instance = hashlib.sha256(str(sandbox.state / "state.db").encode()).hexdigest()[:8]
    return [p.pid for p in runner.processes_of(f"{instance}-ci{number}")]


@pytest.fixture
def sandbox(make_sandbox):
    box = make_sandbox({"qa": ["qa-1"], "staging": ["staging-1"]}, converged=True)  # the steps are the subject
    box.write("playbooks/deploy.yml", PLAYBOOK)
    box.write("app.txt", "v1\n")
    return box


def test_a_push_to_main_runs_the_steps_and_qa_and_staging_deploy_the_identical_artifact(sandbox):
    with_ci(
        sandbox,
        [{"name": "build", "run": BUILD, "artifacts": ["dist/*.tar.gz"]}, {"name": "test", "run": TEST}],
        qa_requires=("gitopsd/build", "gitopsd/test"),
    )
    with Daemon(sandbox) as daemon:
        v2 = sandbox.commit("v2 with a build")
        sandbox.push("main")
        done = daemon.wait_for(lambda: finished(sandbox, v2, 2), 60, "CI of v2")
        assert done["gitopsd/build"][0] == "success" and done["gitopsd/test"][0] == "success", done
        sandbox.push("main:qa")  # the hook lets it in: both required checks passed
        daemon.wait_state("qa", "in-sync", v2, timeout=90)
        sandbox.command("promote", "qa", "staging")
        daemon.wait_for(
            lambda: (
                sandbox.status()["staging"]["state"] == "in-sync"
                and sandbox.tree(sandbox.status()["staging"]["deployed"]) == sandbox.tree(v2)
            ),
            90,
            "staging",
        )
        qa = next(d for d in sandbox.history("qa") if d["commit"] == v2 and d["result"] == "succeeded")
        staging = next(d for d in sandbox.history("staging") if d["tree"] == sandbox.tree(v2) and d["result"] == "succeeded")
        log = sandbox.command("logs", "--ci", str(run_id(done["gitopsd/build"][1]))).stdout
    # Built once: the same sha256 recorded for both deployments, and the very bytes each host received.
    sha = qa["artifacts"]["dist/app.tar.gz"]
    assert staging["artifacts"] == {"dist/app.tar.gz": sha}
    for copy in ("qa-qa-1-app.tar.gz", "staging-staging-1-app.tar.gz"):
        assert hashlib.sha256((sandbox.out / copy).read_bytes()).hexdigest() == sha
    assert (sandbox.state / "artifacts" / "sha256" / sha).is_file()
    assert f"# CI run #{run_id(done['gitopsd/build'][1])}: shop main {v2} -> succeeded" in log
    assert "built" in log and f"# artifact dist/app.tar.gz: sha256 {sha}" in log


def test_a_red_commit_is_refused_by_qa_and_a_newer_push_cancels_the_older_run(sandbox):
    with_ci(
        sandbox,
        [
            {"name": "build", "run": BUILD, "artifacts": ["dist/*.tar.gz"]},
            {"name": "test", "run": ["sh", "-c", "test -f SLOW && sleep 300; " + TEST[2]], "timeout": 600},
        ],
        qa_requires=("gitopsd/build", "gitopsd/test"),
    )
    with Daemon(sandbox) as daemon:
        sandbox.write("SLOW", "")
        slow = sandbox.commit("a slow test")
        sandbox.push("main")
        daemon.wait_for(
            lambda: statuses(sandbox, slow).get("gitopsd/test", ("", ""))[1].startswith("running"), 60, "the slow test running"
        )
        slow_run = run_id(statuses(sandbox, slow)["gitopsd/test"][1])
        assert ci_processes(sandbox, slow_run)
        sandbox.remove("SLOW")
        sandbox.write("BROKEN", "")
        red = sandbox.commit("red")
        sandbox.push("main")
        old = daemon.wait_for(lambda: finished(sandbox, slow, 2), 30, "the older run canceled")
        assert old["gitopsd/test"][0] == "error"
        assert old["gitopsd/test"][1].startswith(f"canceled: a newer commit {red[:7]} of main replaced it")
        assert not ci_processes(sandbox, slow_run)
        new = daemon.wait_for(lambda: finished(sandbox, red, 2), 60, "CI of the red commit")
        assert new["gitopsd/build"][0] == "success" and new["gitopsd/test"][0] == "failure"
        refused = sandbox.push("main:qa", check=False)
        assert refused.returncode != 0 and "gitopsd/test: failure" in refused.stderr


def test_a_daemon_killed_during_a_run_leaves_no_process_and_no_pending_status_after_it_restarts(sandbox):
    hang = ["sh", "-c", "sleep 300 & setsid sleep 301 & echo started; sleep 302"]
    with_ci(sandbox, [{"name": "hang", "run": hang, "timeout": 600}, {"name": "test", "run": TEST}])
    daemon = Daemon(sandbox)
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    daemon.wait_for(lambda: statuses(sandbox, v2).get("gitopsd/hang", ("", ""))[1].startswith("running"), 60, "the step running")
    number = run_id(statuses(sandbox, v2)["gitopsd/hang"][1])
    daemon.wait_for(lambda: len(ci_processes(sandbox, number)) >= 3, 20, "the step's processes")
    daemon.stop(signal.SIGKILL)
    with Daemon(sandbox) as again:
        done = again.wait_for(lambda: finished(sandbox, v2, 2), 30, "the interrupted run's statuses")
        assert not ci_processes(sandbox, number), "a process of the interrupted run survived the restart"
        record = json.loads((sandbox.state / "ci" / str(number) / "run.json").read_text())
    assert record["state"] == "interrupted"
    assert done["gitopsd/hang"] == ("error", "interrupted: the daemon stopped during this run; push again to run the steps")
    assert done["gitopsd/test"][0] == "error"


def failing_while_down(sandbox: Sandbox) -> Path:
    """A step that fails while a file outside the tree says the CI infrastructure is down: no commit can fix it."""
    down = sandbox.out / "CI_DOWN"
    down.write_text("the build farm is down\n")
    with_ci(sandbox, [{"name": "test", "run": ["sh", "-c", f"! test -e {down}"]}])
    return down


def rerun_passed(sandbox: Sandbox, commit: str, after: int) -> dict[str, tuple[str, str]] | None:
    got = finished(sandbox, commit, 1)
    return got if got and got["gitopsd/test"][0] == "success" and run_id(got["gitopsd/test"][1]) > after else None


def test_ci_rerun_runs_the_steps_again_on_the_same_head_and_their_result_replaces_the_failed_one(sandbox):
    down = failing_while_down(sandbox)
    me = pwd.getpwuid(os.getuid()).pw_name
    with Daemon(sandbox) as daemon:
        head = sandbox.commit("v2")
        sandbox.push("main")
        failed = daemon.wait_for(lambda: finished(sandbox, head, 1), 60, "the first CI run of v2")
        assert failed["gitopsd/test"][0] == "failure"
        down.unlink()  # the infrastructure is back; the commit is the same
        said = sandbox.command("ci", "rerun", "shop", "main").stdout
        passed = daemon.wait_for(lambda: rerun_passed(sandbox, head, run_id(failed["gitopsd/test"][1])), 60, "the rerun")
        refused = sandbox.command("ci", "rerun", "shop", "qa", check=False)
    assert said.strip() == (
        f"shop: CI runs again on main at {head[:7]} (the built-in steps), asked by {me}; "
        f"follow with `gitopsd ci status {head[:7]}`"
    )
    shown = sandbox.command("ci", "status", head).stdout
    assert "gitopsd/test  success" in shown, shown
    logs = sandbox.command("logs", "--ci", str(run_id(passed["gitopsd/test"][1]))).stdout
    assert f"run again as asked by {me}" in logs and head in logs
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "gitopsd: error: 'qa' is neither a CI branch of shop nor the commit at the head "
        "of one (CI branches: main); name the branch, e.g. gitopsd ci rerun shop main"
    )


def test_the_dashboards_run_ci_again_button_does_what_ci_rerun_does_for_a_deployer_only(sandbox, short_tmp):
    from tests.support import free_port
    from tests.webclient import Browser, token, web_up

    down = failing_while_down(sandbox)
    port = free_port()
    data = yaml.safe_load(sandbox.config.read_text())
    data.update(
        groups={"ops": ["olga"]},
        api={"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
        web={"roles": {"*": {"viewer": ["*"], "deployer": ["group:ops"]}}},
    )
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        head = sandbox.commit("v2")
        sandbox.push("main")
        failed = daemon.wait_for(lambda: finished(sandbox, head, 1), 60, "the first CI run of v2")
        assert failed["gitopsd/test"][0] == "failure"
        down.unlink()
        olga, vera = Browser(port), Browser(port)
        for person, name in ((olga, "olga"), (vera, "vera")):
            assert person.login(token(sandbox, f"{name}-laptop", "read", "deployments:write", owner=name)).status == 303
        assert "Run CI again" in olga.get("/").text and "Run CI again" not in vera.get("/").text
        form = {"repo": "shop", "head": "main"}
        refused = vera.post("/actions/ci-rerun", {**form, "csrf_token": vera.csrf()}, headers={"HX-Request": "true"})
        assert refused.status == 403 and "that needs the deployer role" in refused.text
        assert olga.post("/actions/ci-rerun", form, headers={"HX-Request": "true"}).status == 403  # no CSRF token
        done = olga.post("/actions/ci-rerun", {**form, "csrf_token": olga.csrf()}, headers={"HX-Request": "true"})
        assert done.status == 200 and f"CI runs again on main at {head[:7]} (the built-in steps), asked by olga" in done.text
        passed = daemon.wait_for(lambda: rerun_passed(sandbox, head, run_id(failed["gitopsd/test"][1])), 60, "the rerun")
    record = json.loads((sandbox.state / "ci" / str(run_id(passed["gitopsd/test"][1])) / "run.json").read_text())
    assert record["rerun_by"] == "olga" and record["commit"] == head
