"""Shared fixtures.

What is real: Git repositories in temp folders, git push through the installed hooks,
ansible-runner and ansible-playbook with `ansible_connection=local` hosts, the daemon as a
process, and real `sshd` hosts on loopback addresses (tests/sshhosts.py). What is faked: only
the Git and Ansible ports of the reconciler core, in tests/unit.
"""
from __future__ import annotations

import os

import pytest

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
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test():
    from tests.support import Daemon
    yield
    while Daemon.started:
        daemon = Daemon.started.pop()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
