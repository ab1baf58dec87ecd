"""The operator's read-only commands and verbs through the real `gitopsd` command line: exact output and exit codes.

Real: bare repositories, the CLI as a process, the SQLite store (deployments recorded through `Store` where
a daemon run would only add time), the daemon as a process for suspend/resume, sync and wait.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gitopsd.adapters.store import Store
from tests.support import GITOPSD, ROOT, Daemon, git, run

pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]})
# The daemon tests: their daemon starts with every head deployed (a copy of a converged sandbox), not deploying them.
converged = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]}, converged=True)


def test_unknown_repository_and_environment_names_are_errors_naming_the_known_ones(sandbox):
    proc = sandbox.command("status", "--repo", "nosuch", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"gitopsd: error: no repository named 'nosuch' in {sandbox.config} (known: shop)"]
    proc = sandbox.command("history", "nosuchenv", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"gitopsd: error: no environment named 'nosuchenv' in {sandbox.config} (known: qa, staging)"
    ]
    assert sandbox.command("history", "qa").returncode == 0


def test_global_options_go_before_or_after_the_command(sandbox):
    env = {k: v for k, v in sandbox.environ().items() if k != "GITOPSD_CONFIG"}
    before = run([*GITOPSD, "--config", str(sandbox.config), "status", "--json"], env=env)
    after = run([*GITOPSD, "status", "--json", "--config", str(sandbox.config)], env=env)
    assert [r["env"] for r in json.loads(before.stdout)] == ["qa", "staging"] == [r["env"] for r in json.loads(after.stdout)]
    assert run([*GITOPSD, "--debug", "--config", str(sandbox.config), "check-config"], env=env).returncode == 0


def test_a_missing_repository_is_a_status_row_and_the_others_are_still_shown(sandbox):
    other = sandbox.root / "other.git"
    git(sandbox.root, "init", "-q", "--bare", str(other))
    data = yaml.safe_load(sandbox.config.read_text())
    data["repositories"].append({"name": "other", "path": str(other), "environments": [{"name": "qa"}]})
    sandbox.config.write_text(yaml.safe_dump(data))
    shutil.rmtree(other)
    rows = {(r["repo"], r["env"]): r for r in json.loads(sandbox.command("status", "--json").stdout)}
    assert rows[("shop", "qa")]["state"] == "in-sync" or rows[("shop", "qa")]["state"] == "out-of-sync"
    assert rows[("other", "qa")]["state"] == "unavailable"
    assert rows[("other", "qa")]["reason"] == f"no Git repository at {other} (run `gitopsd init {other}` to create one)"
    text = sandbox.command("status").stdout
    assert f"other/qa: no Git repository at {other}" in text
    assert sandbox.command("history").returncode == 0
    # check-config still reports it as the problem it is.
    assert sandbox.command("check-config", check=False).returncode == 1


def test_check_config_counts_in_words_and_reports_every_problem_of_a_window(sandbox):
    assert "ok (1 repository, 2 environments)" in sandbox.command("check-config").stdout
    sandbox.env_options["qa"] = {"windows": [{"deny": "* * * * *", "duration": "soon", "timezone": "Mars/Olympus"}]}
    sandbox.write_config()
    proc = sandbox.command("check-config", check=False)
    assert proc.returncode == 1
    assert "windows[0]: " in proc.stderr and "duration" in proc.stderr
    assert "windows[0].timezone: unknown time zone 'Mars/Olympus'" in proc.stderr


def test_history_json_has_each_deployments_batches_hosts_and_checks(sandbox):
    store = Store(sandbox.state / "state.db")
    batches = [
        {
            "batch": 1,
            "hosts": ["qa-1"],
            "result": "passed",
            "playbook": "succeeded on 1 host",
            "checks": [{"ok": True, "name": "http", "detail": "200 from qa-1"}],
        }
    ]
    dep = store.begin(
        repo="shop",
        env="qa",
        commit="a" * 40,
        tree="b" * 40,
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="alice",
        now=time.time(),
    )
    store.finish(
        dep, "succeeded", now=time.time(), outcome="succeeded on 1 host", detail={"hosts": {"qa-1": "ok"}, "batches": batches}
    )
    store.close()
    (row,) = sandbox.history("qa")
    assert row["hosts"] == {"qa-1": "ok"} and row["batches"] == batches


def test_a_reader_that_closes_the_pipe_early_ends_any_command_quietly(sandbox):
    store = Store(sandbox.state / "state.db")
    for n in range(1500):  # far more than a pipe holds: history is still writing when the reader goes away
        dep = store.begin(
            repo="shop",
            env="qa",
            commit=f"{n:040x}",
            tree="b" * 40,
            previous_commit=None,
            kind="deploy",
            trigger="push",
            actor="alice",
            now=time.time(),
        )
        store.finish(dep, "succeeded", now=time.time(), outcome="succeeded on 1 host")
    store.close()
    for command in (["history", "--limit", "2000"], ["history", "--limit", "2000", "--json"]):
        proc = subprocess.Popen(
            [*GITOPSD, *command, "--config", str(sandbox.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=sandbox.environ(),
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # as `| head -1` does
        proc.stdout.close()
        errors = proc.stderr.read().decode()
        assert proc.wait(60) in (0, 141) and errors == "" and first, (command, proc.returncode, errors)
    reader, writer = os.pipe()  # gone before the command writes at all: its output is flushed at the end
    os.close(reader)
    proc = subprocess.Popen(
        [*GITOPSD, "status", "--config", str(sandbox.config)], stdout=writer, stderr=subprocess.PIPE, env=sandbox.environ()
    )
    os.close(writer)
    assert proc.stderr is not None
    errors = proc.stderr.read().decode()
    assert proc.wait(60) in (0, 141) and errors == "", (proc.returncode, errors)


def test_a_window_that_does_not_open_within_8_days_is_said_in_plain_words(sandbox):
    sandbox.env_options["qa"] = {"windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}]}
    sandbox.write_config()
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    proc = sandbox.push("main", "main:qa", check=False)
    assert "remote:   promotion does not open again within the next 8 days." in proc.stderr
    assert "not within 8 days" not in proc.stderr and "opens again at not" not in proc.stderr


@converged
def test_suspend_holds_deployments_shown_in_status_and_resume_deploys_at_once(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        out = sandbox.command("suspend", "qa", "--reason", "database migration").stdout
        assert out.startswith("shop/qa: suspended by ") and "(database migration)" in out
        sandbox.write("a.txt", "v2")
        v2 = sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        row = daemon.wait_state("qa", "suspended")
        assert row["desired"] == v2 and row["deployed"] != v2
        assert "database migration; `gitopsd resume qa` lets it deploy again" in row["reason"]
        time.sleep(1.5)
        assert not [d for d in sandbox.history("qa") if d["commit"] == v2]
        assert "resumed; the daemon looks at it now" in sandbox.command("resume", "qa").stdout
        daemon.wait_state("qa", "in-sync", v2, timeout=30)
        # sync re-applies what runs now, as a reapply caused by the operator.
        out = sandbox.command("sync", "qa", "--reason", "host rebuilt").stdout
        assert f"re-applying {v2[:7]} (kind reapply)" in out
        daemon.wait_for(
            lambda: len([d for d in sandbox.history("qa") if d["commit"] == v2 and d["result"] == "succeeded"]) == 2,
            60,
            "the reapply",
        )
        last = sandbox.history("qa")[0]
        assert (last["kind"], last["trigger"], last["reason"]) == ("reapply", "sync", "host rebuilt")
        # wait: 0 for a deployed commit, one line.
        proc = sandbox.command("wait", "qa", "--timeout", "30")
        assert proc.stdout.startswith(f"shop/qa: {v2[:7]} deployed and verified (deployment #")
        assert len(proc.stdout.splitlines()) == 1


@converged
def test_wait_right_after_sync_waits_for_the_reapply_not_the_deployment_before_it(sandbox):
    with Daemon(sandbox) as daemon:
        head = sandbox.head("qa")
        before = daemon.wait_state("qa", "in-sync", head)["last_deployment"]
        sandbox.command("sync", "qa", "--reason", "host rebuilt")
        proc = sandbox.command("wait", "qa", "--timeout", "60")
        reapply = sandbox.history("qa")[0]  # read after wait returned: it exists, and it is what wait named
        assert (reapply["kind"], reapply["result"]) == ("reapply", "succeeded") and reapply["id"] != before["id"]
        assert proc.stdout == f"shop/qa: {head[:7]} deployed and verified (deployment #{reapply['id']}, reapply)\n"


@converged
def test_a_failed_reapply_is_shown_failed_until_a_later_run_succeeds(sandbox):
    with Daemon(sandbox) as daemon:
        head = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", head)
        daemon.wait_state("staging", "in-sync")
        failing = max(d["id"] for d in sandbox.history()) + 1
        (sandbox.out / f"qa-1.{failing}").mkdir()  # the test playbook cannot write its record there: the run fails
        sandbox.command("sync", "qa")
        proc = sandbox.command("wait", "qa", "--timeout", "60", check=False)
        assert proc.returncode == 1, proc.stdout
        assert proc.stdout.startswith(f"shop/qa: {head[:7]} failed: the reapply of {head[:7]} failed (deployment #{failing}: "), (
            proc.stdout
        )
        time.sleep(3)  # past the retry backoff: nothing re-runs it by itself, and it still says so
        row = sandbox.status()["qa"]
        assert (row["state"], row["deployed"], row["last_deployment"]["id"]) == ("failed", head, failing), row
        assert "`gitopsd sync qa` re-applies it again" in row["reason"]
        sandbox.command("sync", "qa")
        assert sandbox.command("wait", "qa", "--timeout", "60").stdout.startswith(f"shop/qa: {head[:7]} deployed and verified")
        assert sandbox.status()["qa"]["state"] == "in-sync"


@converged
def test_wait_exits_1_when_the_deployment_stalls_and_2_on_timeout(sandbox):
    sandbox.write("FAIL", "all")
    bad = sandbox.commit("broken")
    sandbox.push("main", "main:qa")
    proc = sandbox.command("wait", "qa", "--timeout", "1", check=False)  # no daemon: nothing happens
    assert proc.returncode == 2
    assert proc.stdout == f"shop/qa: timed out after 1s waiting for {bad[:7]} (out-of-sync)\n"
    with Daemon(sandbox):
        proc = sandbox.command("wait", "qa", "--commit", bad, "--timeout", "90", check=False)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.startswith(f"shop/qa: {bad[:7]} stalled: ") and len(proc.stdout.splitlines()) == 1


def test_check_config_warns_about_inventory_and_playbook_files_missing_from_branch_heads(sandbox):
    sandbox.remove("environments/staging/hosts.yml")
    moved = sandbox.commit("staging's inventory moved")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/staging", moved)
    sandbox.env_options["qa"] = {"playbook": "playbooks/site.yml"}
    sandbox.write_config()
    proc = sandbox.command("check-config")
    assert proc.returncode == 0 and "ok (1 repository, 2 environments)" in proc.stdout
    assert proc.stderr.splitlines() == [
        "gitopsd: warning: shop/qa: the playbook playbooks/site.yml is not in branch qa: its next deployment fails "
        "until a commit adds it",
        "gitopsd: warning: shop/staging: the inventory environments/staging/hosts.yml is not in branch staging: its "
        "next deployment fails until a commit adds it",
    ]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="another user needs root and setpriv")
def test_check_config_as_a_user_who_cannot_read_a_repository_says_so_in_one_line(tmp_path_factory):
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        repo = folder / "shop.git"
        git(folder, "init", "-q", "--bare", str(repo))
        repo.chmod(0o700)
        config = folder / "gitopsd.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state_dir": str(folder / "state"),
                    "runtime_dir": str(folder / "run"),
                    "repositories": [{"name": "shop", "path": str(repo)}],
                }
            )
        )
        config.chmod(0o644)
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); from gitopsd.cli.main import main; "
            f"sys.exit(main(['check-config', '--config', {str(config)!r}]))"
        )
        proc = run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c", code],
            check=False,
            env={"PATH": os.environ["PATH"]},
            cwd=folder,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert f"repositories[0].path: {repo} cannot be read by nobody (run `gitopsd doctor` as root to see why)" in proc.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
