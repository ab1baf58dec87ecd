"""`gitopsd doctor` says, before repositories go unwatched, when the ref watcher's inotify watches will not fit.

Real: a sandbox repository with nested branch folders and `gitopsd doctor` run as a command. The kernel's limit
cannot be lowered on a shared machine, so the small limit of an older kernel is given to the check directly.
"""

from __future__ import annotations

from pathlib import Path

from gitopsd.config import load
from gitopsd.installers import doctor
from tests.support import GITOPSD, Sandbox, git, run


def test_doctor_counts_the_watches_the_ref_watcher_needs_against_the_kernels_limit(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    git(sandbox.root, "--git-dir", str(sandbox.repo), "branch", "feature/a/b", "main")
    proc = run([*GITOPSD, "doctor", "--config", str(sandbox.config)], env=sandbox.environ(), check=False)
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    # The repository folder, refs/heads, refs/heads/feature, refs/heads/feature/a.
    assert (
        f"ok       the ref watcher needs 4 inotify watches for 1 repositories; fs.inotify.max_user_watches is "
        f"{limit} for all of the daemon user's processes"
    ) in proc.stdout


def test_doctor_warns_when_the_watches_would_take_more_than_half_the_limit_and_says_the_sysctl(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    [finding] = doctor._inotify_room(load(sandbox.config), limit=3)
    assert not finding.ok
    assert finding.text() == (
        "PROBLEM  the ref watcher needs 2 inotify watches for 1 repositories; fs.inotify.max_user_watches is 3 for all "
        "of the daemon user's processes\n         fix: sysctl -w fs.inotify.max_user_watches=65536; echo "
        "fs.inotify.max_user_watches=65536 > /etc/sysctl.d/90-gitopsd.conf; then systemctl reload gitopsd"
    )
