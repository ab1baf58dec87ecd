"""Built-in CI steps for real: a real bare repository and pushes through the real hook, the steps run by
the real StepRunner in the real bubblewrap sandbox, statuses in the real store, artifacts on disk.

Only the daemon's loop is left out: the tests hand the runner the HeadEvents the loop would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gitopsd import config as config_mod
from gitopsd.adapters import runner
from gitopsd.adapters.store import Store
from gitopsd.ci import runs
from gitopsd.ci.artifacts import ArtifactStore
from gitopsd.ci.heads import HeadEvent
from gitopsd.ci.steps import StepRunner
from gitopsd.daemon.wiring import sandbox_policy
from tests.integration.test_api import Api
from tests.support import GITOPSD, Sandbox, free_port

BUILD = """\
import os, pathlib, sys, tarfile
pathlib.Path("dist").mkdir(exist_ok=True)
with tarfile.open("dist/app.tar.gz", "w:gz") as tar:
    tar.add("app.txt")
pathlib.Path("dist/env.json").write_text(__import__("json").dumps(dict(os.environ)))
print("built dist/app.tar.gz")
"""


def steps(*items: dict) -> dict:
    return {"ci": {"steps": list(items), "branches": ["main", "feature-*"]}}


class Harness:
    """A repository with `ci.steps`, and a StepRunner over its store, artifacts and sandbox as the daemon builds them."""

    def __init__(self, root: Path, ci: dict, max_parallel: int = 4, env_options: dict | None = None, extra: dict | None = None):
        self.sandbox = Sandbox(
            root, {"qa": ["qa-1"]}, env_options=env_options or {}, extra={"max_parallel": max_parallel, **(extra or {})}
        )
        data = config_mod_yaml(self.sandbox.config)
        data["repositories"][0].update(ci)
        self.sandbox.config.write_text(json.dumps(data))
        self.sandbox.write("build.py", BUILD)
        self.sandbox.write("app.txt", "v1\n")
        self.config = config_mod.load(self.sandbox.config, writable_folders=True)
        self.store = Store(self.config.database)
        self.looks: list[str] = []
        self.runner = self.new_runner()

    def new_runner(self) -> StepRunner:
        return StepRunner(
            self.config,
            self.store,
            ArtifactStore(self.config.artifacts_dir),
            policy=lambda: sandbox_policy(self.config),
            on_status=self.looks.append,
        )

    def push(self, message: str, branch: str = "main") -> HeadEvent:
        commit = self.sandbox.commit(message)
        self.sandbox.push(f"HEAD:{branch}")
        return HeadEvent("shop", branch, None, commit, self.sandbox.tree(commit), "alice")

    def statuses(self, event: HeadEvent) -> dict[str, tuple[str, str]]:
        return {s.context: (s.state, s.description or "") for s in self.store.statuses("shop", event.tree)}

    def wait_done(self, event: HeadEvent, n: int, timeout: float = 60) -> dict[str, tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.statuses(event)
            if len(got) == n and all(state != "pending" for state, _ in got.values()):
                return got
            time.sleep(0.1)
        raise AssertionError(f"CI did not finish: {self.statuses(event)}")

    def run_record(self, number: int = 1) -> dict:
        record = runs.load(self.config.ci_dir, number)
        assert record is not None
        return record


def config_mod_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def marked(marker: str) -> list[int]:
    return [p.pid for p in runner.processes_of(marker)]


@pytest.fixture
def harness_for(short_tmp):
    made: list[Harness] = []

    def make(ci: dict, **kw) -> Harness:
        h = Harness(short_tmp, ci, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.runner.stop()
        h.store.close()


def test_steps_run_in_order_in_the_sandbox_with_a_clean_environment_and_keep_their_artifacts(harness_for):
    h = harness_for(
        steps(
            {"name": "build", "run": [sys.executable, "build.py"], "artifacts": ["dist/*.tar.gz", "dist/env.json"]},
            # The export is state/ci/1/work/tree: the state folder and the config must be hidden from it.
            {
                "name": "test",
                "run": [
                    "sh",
                    "-c",
                    "test -f dist/app.tar.gz && test ! -e ../../../../state.db"
                    " && ! grep -q repositories ../../../../../gitopsd.yml",
                ],
            },
        )
    )
    event = h.push("v1")
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 2)
    assert done["gitopsd/build"][0] == "success", done
    assert done["gitopsd/test"][0] == "success", done
    assert "artifacts: dist/app.tar.gz, dist/env.json" in done["gitopsd/build"][1]
    assert "gitopsd logs --ci 1" in done["gitopsd/test"][1]
    assert set(h.looks) == {"shop"}  # the daemon is told after each status
    record = h.run_record()
    assert record["state"] == "succeeded" and [s["state"] for s in record["steps"]] == ["success", "success"]
    # The environment was cleared: only what the step needs, the reaper's marker, the sandbox's TMPDIR and PWD.
    manifest = json.loads((h.config.artifacts_dir / "manifests" / "shop" / f"{event.tree}.json").read_text())
    env = json.loads(Path(manifest["artifacts"]["dist/env.json"]["path"]).read_text())
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "CI",
        "GITOPSD_COMMIT",
        "GITOPSD_TREE",
        "GITOPSD_BRANCH",
        "GITOPSD_STEP",
        runner.MARKER,
        "TMPDIR",
        "PWD",
    }, env
    assert env["GITOPSD_COMMIT"] == event.after and env["GITOPSD_STEP"] == "build" and env["CI"] == "true"
    assert "GITOPSD_CONFIG" not in env and "GITOPSD_TEST_OUT" not in env
    # Content-addressed, with its sha256; the same bytes as the step built.
    art = manifest["artifacts"]["dist/app.tar.gz"]
    blob = Path(art["path"])
    assert blob == h.config.artifacts_dir / "sha256" / art["sha256"]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == art["sha256"] and blob.stat().st_size == art["size"]
    assert h.runner.artifacts.for_deployment("shop", event.tree)["dist/app.tar.gz"] == {
        "path": str(blob),
        "sha256": art["sha256"],
    }
    # `gitopsd logs --ci 1` shows each step and its output.
    out = subprocess.run(
        [*GITOPSD, "logs", "--ci", "1", "--config", str(h.sandbox.config)],
        capture_output=True,
        text=True,
        env=h.sandbox.environ(),
        check=True,
    ).stdout
    assert "# CI run #1: shop main" in out and "# --- step build: success" in out and "built dist/app.tar.gz" in out
    assert f"# artifact dist/app.tar.gz: sha256 {art['sha256']}" in out


def test_a_step_that_hangs_is_killed_at_its_timeout_with_every_process_it_started(harness_for):
    # A child in the step's group, one that left it with setsid, and one that double-forked away.
    hang = ["sh", "-c", "sleep 300 & setsid sleep 301 & (sh -c 'sleep 302 &') ; echo started; sleep 303"]
    h = harness_for(steps({"name": "hang", "run": hang, "timeout": 2}, {"name": "test", "run": ["true"]}))
    event = h.push("hangs")
    started = time.monotonic()
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 2)
    assert time.monotonic() - started < 20
    assert done["gitopsd/hang"] == (
        "failure",
        "stopped after 2s (time limit), with every process it started (gitopsd logs --ci 1)",
    )
    assert done["gitopsd/test"] == ("error", "not run: hang failed")
    assert not marked(h.runner.marker(1)), "a process of the step survived its timeout"
    assert (
        not [  # test_ci_builtin's hanging step sleeps 300-302 too: only this step's, by the run's marker
            p
            for p in psutil.process_iter(["cmdline", "environ"])
            if (p.info["cmdline"] or [""])[0] == "sleep"
            and p.info["cmdline"][1:] in (["300"], ["301"], ["302"], ["303"])
            and (p.info["environ"] or {}).get(runner.MARKER) == h.runner.marker(1)
        ]
    )
    log = (h.config.ci_dir / "1" / "1-hang.log").read_text()
    assert "started" in log and "stopped after 2s (time limit)" in log


def test_a_failing_step_reports_failure_and_later_steps_report_error(harness_for):
    h = harness_for(
        steps(
            {"name": "lint", "run": ["true"]},
            {"name": "test", "run": ["sh", "-c", "echo 'FAILED: test_app'; exit 3"]},
            {"name": "package", "run": ["true"]},
        )
    )
    event = h.push("red")
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 3)
    assert done["gitopsd/lint"][0] == "success"
    assert done["gitopsd/test"][0] == "failure" and done["gitopsd/test"][1].startswith("exit code 3 after")
    assert done["gitopsd/package"] == ("error", "not run: test failed")
    assert h.run_record()["state"] == "failed"
    assert "FAILED: test_app" in (h.config.ci_dir / "1" / "2-test.log").read_text()


def test_the_builtin_tests_failure_stands_against_any_token_and_any_user(harness_for, short_tmp):
    """Issue 23: a statuses:write token posted success for gitopsd/test over the built-in CI's failure, and qa,
    which requires it, took the failing tree. gitopsd/ contexts are the built-in CI's alone."""
    h = harness_for(
        steps({"name": "test", "run": ["sh", "-c", "exit 3"]}),
        env_options={"qa": {"require_checks": ["gitopsd/test"], "auto_promote": True}},
        extra={"api": {"listen": f"127.0.0.1:{free_port()}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    event = h.push("red")
    h.runner.sink(h.config.repository("shop"), event)
    assert h.wait_done(event, 1)["gitopsd/test"][0] == "failure"  # the built-in CI still writes it
    reserved = (
        "the context 'gitopsd/test' is reserved: contexts starting with gitopsd/ are written only by "
        "gitopsd's built-in CI; report yours under another context, e.g. ci/jenkins"
    )
    api = Api(h.sandbox)
    try:
        for token in (api.token("jenkins", "statuses:write"), api.token("all", "statuses:write", "read", "approvals:write")):
            code, _h, doc = api.post(event.after, token, state="success", context="gitopsd/test")
            assert (code, doc) == (403, {"message": reserved, "kind": "forbidden", "reason": "reserved_context", "field": None})
        code, _h, doc = api.call(
            "POST", f"/api/v1/repos/acme/shop/statuses/{event.after}", token, {"state": "success", "context": "GitOpsD/test"}
        )
        assert code == 403 and doc["message"].startswith("the context 'GitOpsD/test' is reserved")
        assert api.combined(event.after, token)["state"] == "failure" and api.looks == []
    finally:
        api.close()
    refused = h.sandbox.command(
        "ci", "report", "--commit", event.after, "--context", "gitopsd/test", "--state", "success", check=False
    )
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", f"gitopsd: error: {reserved}\n")
    assert h.statuses(event)["gitopsd/test"][0] == "failure"
    pushed = h.sandbox.push(f"{event.after}:refs/heads/qa", check=False)
    assert pushed.returncode == 1 and "gitopsd/test: failure" in pushed.stderr


def test_an_artifact_glob_that_matches_nothing_fails_the_step_with_that_message(harness_for):
    h = harness_for(
        steps(
            {"name": "build", "run": [sys.executable, "build.py"], "artifacts": ["dist/*.whl"]}, {"name": "test", "run": ["true"]}
        )
    )
    event = h.push("no wheel")
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 2)
    assert done["gitopsd/build"][0] == "failure"
    assert done["gitopsd/build"][1].startswith("artifact glob 'dist/*.whl' matched no file in the export")
    assert done["gitopsd/test"] == ("error", "not run: build failed")
    assert h.runner.artifacts.for_deployment("shop", event.tree) == {}


def test_an_artifact_that_is_a_symlink_leading_out_of_the_export_is_refused(harness_for):
    h = harness_for(
        steps(
            {
                "name": "build",
                "run": ["sh", "-c", "mkdir -p dist && ln -s /etc/passwd dist/x.tar.gz"],
                "artifacts": ["dist/*.tar.gz"],
            }
        )
    )
    event = h.push("escape")
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 1)
    assert done["gitopsd/build"][0] == "failure" and "leads out of the export" in done["gitopsd/build"][1]
    assert not list((h.config.artifacts_dir / "sha256").glob("*"))


def test_a_newer_head_of_the_same_branch_cancels_the_older_run(harness_for):
    h = harness_for(
        steps(
            {"name": "slow", "run": ["sh", "-c", "test -f FAST || sleep 300"], "timeout": 600}, {"name": "test", "run": ["true"]}
        )
    )
    old = h.push("slow one")
    h.runner.sink(h.config.repository("shop"), old)
    deadline = time.monotonic() + 30
    while not marked(h.runner.marker(1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked(h.runner.marker(1)), "the first run's step did not start"
    h.sandbox.write("FAST", "")
    new = h.push("fast one")
    h.runner.sink(h.config.repository("shop"), new)
    done_old = h.wait_done(old, 2, timeout=20)
    assert done_old["gitopsd/slow"][0] == "error"
    assert done_old["gitopsd/slow"][1].startswith(f"canceled: a newer commit {new.after[:7]} of main replaced it")
    assert done_old["gitopsd/test"][0] == "error"
    assert h.wait_done(new, 2) == {
        "gitopsd/slow": h.statuses(new)["gitopsd/slow"],
        "gitopsd/test": h.statuses(new)["gitopsd/test"],
    }
    assert {s for s, _ in h.statuses(new).values()} == {"success"}
    assert not marked(h.runner.marker(1))
    assert h.run_record(1)["state"] == "canceled" and h.run_record(2)["state"] == "succeeded"


def test_runs_of_other_branches_are_not_canceled_and_unlisted_branches_run_nothing(harness_for):
    h = harness_for(steps({"name": "test", "run": ["sh", "-c", "sleep 1"]}))
    a = h.push("feature", branch="feature-x")
    h.runner.sink(h.config.repository("shop"), a)
    h.sandbox.write("b.txt", "b")
    b = h.push("main")
    h.runner.sink(h.config.repository("shop"), b)
    h.sandbox.write("c.txt", "c")
    c = h.push("other", branch="other")
    h.runner.sink(h.config.repository("shop"), c)
    assert h.wait_done(a, 1)["gitopsd/test"][0] == "success"
    assert h.wait_done(b, 1)["gitopsd/test"][0] == "success"
    assert h.statuses(c) == {}


def test_a_run_left_by_a_stopped_daemon_is_interrupted_reaped_and_its_statuses_end(harness_for):
    h = harness_for(steps({"name": "build", "run": ["true"]}, {"name": "test", "run": ["true"]}))
    event = h.push("interrupted")
    # What a daemon killed during step `test` leaves: run.json saying running, a pending status, a live process.
    folder = runs.folder(h.config.ci_dir, 7)
    folder.mkdir(parents=True)
    runs.save(
        h.config.ci_dir,
        {
            "id": 7,
            "repo": "shop",
            "branch": "main",
            "commit": event.after,
            "tree": event.tree,
            "pusher": "alice",
            "state": "running",
            "reason": None,
            "steps": [
                {"name": "build", "state": "success", "description": "passed"},
                {"name": "test", "state": "running", "description": "running"},
            ],
        },
    )
    h.store.add_status(
        repo="shop",
        commit=event.after,
        tree=event.tree,
        context="gitopsd/build",
        state="success",
        reporter="gitopsd",
        now=time.time(),
    )
    h.store.add_status(
        repo="shop",
        commit=event.after,
        tree=event.tree,
        context="gitopsd/test",
        state="pending",
        reporter="gitopsd",
        now=time.time(),
    )
    leftover = subprocess.Popen(["sleep", "300"], env={**os.environ, runner.MARKER: h.runner.marker(7)}, start_new_session=True)
    h.new_runner().recover()
    assert leftover.wait(timeout=10) is not None
    assert h.statuses(event)["gitopsd/build"][0] == "success"
    assert h.statuses(event)["gitopsd/test"] == (
        "error",
        "interrupted: the daemon stopped during this run; push again to run the steps",
    )
    assert h.run_record(7)["state"] == "interrupted"
    # The next run takes the next number.
    h.runner.sink(h.config.repository("shop"), event)
    deadline = time.monotonic() + 30
    while h.run_record(8)["state"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert h.run_record(8)["state"] == "succeeded"


def test_retention_keeps_deployed_artifacts_and_the_newest_others(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    export = tmp_path / "export"
    trees = []
    for i in range(4):
        (export / "dist").mkdir(parents=True, exist_ok=True)
        (export / "dist" / "app.tar.gz").write_text(f"build {i}")
        tree = f"{i:040x}"
        store.keep("shop", tree, export, ("dist/*.tar.gz",))
        trees.append(tree)
        time.sleep(0.01)
    deployed = store.for_deployment("shop", trees[0])["dist/app.tar.gz"]
    assert store.prune({"shop": 1}) == 2
    assert Path(deployed["path"]).read_text() == "build 0"  # a deployment used it: kept for good
    assert store.for_deployment("shop", trees[3])  # the newest other tree: kept
    assert store.for_deployment("shop", trees[1]) == {} and store.for_deployment("shop", trees[2]) == {}
    assert len(list((tmp_path / "artifacts" / "sha256").iterdir())) == 2
