"""Shared fixtures.

What is real: Git repositories in temp folders, git push through the installed hooks,
ansible-runner and ansible-playbook with `ansible_connection=local` hosts, the daemon as a
process, real `sshd` hosts on loopback addresses (tests/sshhosts.py), and a real PostgreSQL on loopback
(tests/postgres_fixture.py) under the store's tests, which run on both backends (`store_factory`). What is faked: only
the Git and Ansible ports of the reconciler core, in tests/unit. A Sandbox's repository is a copy of one this
process made the long way (tests/support.py); the tests of install-hooks and init run the real commands.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.postgres_fixture import postgres_server, postgres_url  # noqa: F401  (a real PostgreSQL on loopback)
from tests.sshhosts import ssh_hosts  # noqa: F401  (the real-sshd hosts fixture, for every test module)

# Commits made by tests must not depend on the user's git configuration.
os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
os.environ["GIT_AUTHOR_NAME"] = os.environ["GIT_COMMITTER_NAME"] = "Test"
os.environ["GIT_AUTHOR_EMAIL"] = os.environ["GIT_COMMITTER_EMAIL"] = "test@example.com"


@pytest.fixture
def short_tmp(tmp_path_factory):
    """A short temp folder: Unix socket paths must stay under 108 bytes."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))
    yield path
    import shutil

    if not os.environ.get("KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


# The files that take longest, longest first (seconds per file from a full run, issue 24): under `--dist loadfile` a
# worker takes the next file in collection order when it finishes one, so the long files start early and the short
# ones fill the tail of every worker instead of one long file starting last.
LONGEST_FILES = (
    "tests/e2e/test_rollout.py",
    "tests/e2e/test_watch_drift.py",
    "tests/e2e/test_preview.py",
    "tests/e2e/test_alert_freeze.py",
    "tests/e2e/test_daemon.py",
    "tests/e2e/test_installed.py",
    "tests/e2e/test_monitoring.py",
    "tests/e2e/test_standby.py",
    "tests/e2e/test_service.py",
    "tests/integration/test_install.py",
    "tests/e2e/test_real_team.py",
    "tests/integration/test_permissions.py",
    "tests/e2e/test_store_file.py",
    "tests/e2e/test_ssh_rollout.py",
    "tests/e2e/test_ssh_supersede.py",
    "tests/integration/test_ssh_trust.py",
    "tests/integration/test_change_control.py",
    "tests/e2e/test_web_browser.py",
    "tests/integration/test_break_glass.py",
    "tests/integration/test_promotion.py",
    "tests/e2e/test_rollout_checks.py",
    "tests/e2e/test_postgresql.py",
    "tests/integration/test_operator_commands.py",
    "tests/integration/test_execution_nodes.py",
    "tests/e2e/test_chat_approvals.py",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "sandbox(envs, **options): the `sandbox` fixture's environments and Sandbox options")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would order files by their number of tests, not their seconds
    if getattr(config.option, "testrunuid", "") is None and not hasattr(config, "workerinput"):
        import uuid

        config.option.testrunuid = uuid.uuid4().hex  # the workers' templates folder, named here to remove it at the end


def pytest_sessionfinish(session):
    """The run's shared sandbox templates (tests/support.py, `_built_once`) go when the last worker is done."""
    run = getattr(session.config.option, "testrunuid", None)
    if run and not hasattr(session.config, "workerinput"):
        import shutil

        from tests.support import shared_templates

        shutil.rmtree(shared_templates(run), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Put the longest files first (LONGEST_FILES); the rest, and the tests inside each file, keep their order."""
    rank = {path: i for i, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONGEST_FILES)))


@pytest.fixture
def make_sandbox(short_tmp):
    """Make a Sandbox in the test's short temp folder: `make_sandbox(envs={"qa": ["qa-1"]}, **Sandbox options)`."""
    from tests.support import Sandbox

    def make(envs=None, **options):
        return Sandbox(short_tmp, envs or {"qa": ["qa-1"]}, **options)

    return make


@pytest.fixture
def sandbox(request, make_sandbox):
    """The test's Sandbox, as the closest `sandbox` mark says (`pytestmark = pytest.mark.sandbox(envs, **options)` for a
    module); qa with one host without one."""
    mark = request.node.get_closest_marker("sandbox")
    return make_sandbox(*mark.args, **mark.kwargs) if mark else make_sandbox()


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test():
    from tests.support import Daemon

    yield
    while Daemon.started:
        daemon = Daemon.started.pop()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(request):
    """Open a Store on each backend: `store_factory(path, readonly=False)`; with PostgreSQL, `path` is the hook's
    SQLite file and the records live in a fresh database of the session's server. Every store opened is closed."""
    from gitopsd.adapters.store import Store

    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    opened = []

    def open_store(path, readonly=False):
        store = Store(path, readonly=readonly, url=url)
        opened.append(store)
        return store

    open_store.backend = request.param
    open_store.url = url
    yield open_store
    for store in opened:
        with contextlib.suppress(Exception):  # closed by the test already
            store.close()
