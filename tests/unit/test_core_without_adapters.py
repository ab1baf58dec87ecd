"""The core runs without the adapters' libraries: pygit2, ansible-runner, psutil, inotify_simple, APScheduler, the web.

Real: a Python subprocess whose import system refuses those libraries (as a virtualenv without them
would), the core modules, the SQLite store; and pytest run the same way on the core's own unit test
files (issue 11: "unit tests of the core run in a virtualenv without pygit2, ansible-runner or psutil").
Fake: Git, the playbook runner, the judge and notifications.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("pygit2", "ansible_runner", "ansible", "psutil", "inotify_simple", "apscheduler", "starlette", "uvicorn")
# The unit tests that need no adapter library: the reconciler, decisions, rollouts, the gate's rules, the config.
CORE_TESTS = (
    "test_reconciler.py",
    "test_rollout.py",
    "test_policy.py",
    "test_windows.py",
    "test_required.py",
    "test_gate.py",
    "test_config.py",
    "test_transient_errors.py",
)

REFUSE = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Refuse(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Refuse())
""")

SCRIPT = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Refuse(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Refuse())
    import random, tempfile
    from pathlib import Path
    from gitopsd.core import batches, decide, deployment, errors, ports, reconcile, settings, tree, types
    from gitopsd.core.reconcile import Look, Reconciler
    from gitopsd.adapters.store import Store

    class Git:
        def head(self, repo, branch):
            return types.Head("1" * 40, "2" * 40)
        def export(self, repo, commit, dest):
            (dest / "playbooks").mkdir(parents=True)
            (dest / "playbooks" / "deploy.yml").write_text("- hosts: all\\n")
            (dest / "hosts.yml").write_text("all: {}\\n")
        def revert(self, repo, branch, head, good_tree, *, reason):
            return None

    class Accept:
        accepted, kind, rule, detail = True, "promotion", "accepted", []

    with tempfile.TemporaryDirectory() as tmp:
        env = settings.Environment("qa", "qa", "main", "hosts.yml", "playbooks/deploy.yml")
        config = settings.Config(Path(tmp) / "c.yml", state_dir=Path(tmp) / "state",
                                 repositories=(settings.Repository("shop", Path(tmp) / "shop.git", (env,)),))
        store = Store(config.database)
        ran = []
        def run_playbook(run, cancel):
            ran.append(run.extravars["gitopsd_commit"])
            return types.RunOutcome(True, "successful", 0, "succeeded on 1 host", {"qa-1": "ok"})
        reconciler = Reconciler(config, store, Git(), deployment.Toolbox(run_playbook=run_playbook),
                                submit=lambda job: job(), schedule=lambda look, at: None, judge=lambda *a: Accept(),
                                notify=lambda target, event: None, rng=random.Random(1))
        reconciler.look(Look("shop", "qa", "test"))
        assert ran == ["1" * 40] and store.deployed("shop", "qa").commit == "1" * 40, ran
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("ok", loaded)
""")


def test_the_core_imports_and_reconciles_with_the_adapters_libraries_refused():
    code = f"BLOCKED = {BLOCKED!r}\n" + SCRIPT
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok []"


def test_the_guard_itself_refuses_an_adapter():
    """Without this, a broken guard would let the test above pass with pygit2 loaded."""
    code = f"BLOCKED = {BLOCKED!r}\n" + SCRIPT.replace(
        "from gitopsd.core import", "import gitopsd.adapters.gitrepo\nfrom gitopsd.core import", 1
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def pytest_with_adapters_refused(*files: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on `files` in a subprocess that refuses the adapters' libraries.

    No plugins from the environment and no conftest (tests/conftest.py sets up real sshd hosts, which need psutil).
    """
    code = f"BLOCKED = {BLOCKED!r}\n" + REFUSE + "import pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
    return subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "-q",
            "-p",
            "no:cacheprovider",
            "--noconftest",
            *(str(ROOT / "tests" / "unit" / f) for f in files),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )


def test_the_cores_unit_tests_pass_with_the_adapters_libraries_refused():
    proc = pytest_with_adapters_refused(*CORE_TESTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "error" not in proc.stdout.splitlines()[-1]


def test_unit_tests_that_need_an_adapter_library_fail_there():
    """The same run refuses a test file that imports the playbook runner (ansible-runner, psutil): the guard works."""
    proc = pytest_with_adapters_refused("test_operator_verbs.py")
    assert proc.returncode != 0 and "blocked by the test" in proc.stdout
