"""The daemon under real inotify limits: it starts, says once what is not watched, and still deploys.

The limits are the kernel's own (the same per-user count that `fs.inotify.max_user_watches` and
`fs.inotify.max_user_instances` bound), lowered for the daemon alone: it runs in a new user
namespace whose /proc/sys/user/max_inotify_* limits the test sets. Lowering the machine-wide
sysctl instead would starve every other process of the same user while the test runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from tests.e2e.test_service import NotifySocket
from tests.support import Daemon, Sandbox, git, run

# Set the namespace's inotify limits, then become `gitopsd` (argv: watches instances gitopsd-args...).
LIMITED = (
    "import os, sys\n"
    "for kind, value in zip(('watches', 'instances'), sys.argv[1:3]):\n"
    "    with open('/proc/sys/user/max_inotify_' + kind, 'w') as f:\n"
    "        f.write(value)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'gitopsd', *sys.argv[3:]])\n"
)
UNSHARE = ["unshare", "--user", "--map-root-user", "--"]


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*UNSHARE, sys.executable, "-c", "open('/proc/sys/user/max_inotify_watches', 'w').write('5')"], capture_output=True
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not _namespaces_work(), reason="needs root and a user namespace whose inotify limits can be set"
)


def limited_daemon(sandbox: Sandbox, watches: int, instances: int, **env: str) -> Daemon:
    """`gitopsd run` as a real process, under the given inotify limits."""
    daemon = Daemon.__new__(Daemon)  # as Daemon() does, with the limits in front
    Daemon.started.append(daemon)
    daemon.sandbox, daemon.log_path = sandbox, sandbox.root / "daemon.log"
    daemon._log = open(daemon.log_path, "w")  # noqa: SIM115 (the daemon writes to it until stop)
    daemon.proc = subprocess.Popen(
        [
            *UNSHARE,
            sys.executable,
            "-c",
            LIMITED,
            str(watches),
            str(instances),
            "run",
            "--config",
            str(sandbox.config),
            "--log-level",
            "debug",
        ],
        stdout=daemon._log,
        stderr=subprocess.STDOUT,
        env=sandbox.environ(**env),
        start_new_session=True,
    )
    return daemon


def several_repositories(short_tmp, extra: int = 3) -> Sandbox:
    """The sandbox's repository "shop" (pushed to, with the real hook) listed after `extra` copies of it."""
    # The sandbox (bubblewrap, as nobody) needs more users than this namespace maps; it is not what is tested.
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, sweep_interval=3, sandbox_options={"enabled": False})
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    copies = []
    for i in range(extra):
        path = short_tmp / f"copy{i}.git"
        git(short_tmp, "clone", "--quiet", "--bare", str(sandbox.repo), str(path))
        copies.append({**shop, "name": f"copy{i}", "path": str(path)})
    data["repositories"] = [*copies, shop]  # shop last: the first to go without a watch
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    return sandbox


def fallback_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if "are not watched" in line]


# Each repository takes two watches here (its folder and refs/heads): 5 watch the first two copies only.
@pytest.mark.parametrize(
    "limit, watches, instances, unwatched",
    [
        ("fs.inotify.max_user_watches", 5, 128, "2 of 4 repositories are not watched"),
        ("fs.inotify.max_user_instances", 8192, 0, "4 of 4 repositories are not watched"),
    ],
)
def test_the_daemon_starts_under_inotify_limits_says_so_once_and_still_deploys(short_tmp, limit, watches, instances, unwatched):
    sandbox = several_repositories(short_tmp)
    notify = NotifySocket(short_tmp / "notify.sock")
    with limited_daemon(sandbox, watches, instances, NOTIFY_SOCKET=str(notify.path)) as daemon:
        daemon.wait_for(lambda: notify.fields("READY=1"), 60, "READY=1")
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        [line] = fallback_lines(daemon)
        assert unwatched in line and "shop" in line, line
        assert f"sysctl -w {limit}=" in line and "/etc/sysctl.d/" in line, line
        assert "push nudge and the periodic sweep" in line

        # A ref moved behind the hook's back (first: a push's follow-up looks would find it too).
        moved = run(
            ["git", "--git-dir", str(sandbox.repo), "commit-tree", "-p", "qa", "-m", "again, by hand", "qa^{tree}"]
        ).stdout.strip()
        run(["git", "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", moved])
        daemon.wait_result("qa", moved, "succeeded", timeout=60)
        assert sandbox.history("qa")[0]["trigger"] == "sweep"

        # A push: the hook's nudge (and its follow-up looks) find the ref move.
        git(sandbox.work, "fetch", "--quiet", "origin")
        git(sandbox.work, "reset", "--quiet", "--hard", "origin/qa")
        sandbox.write("app.txt", "v2")
        pushed = sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        daemon.wait_result("qa", pushed, "succeeded", timeout=60)
        assert sandbox.history("qa")[0]["trigger"] == "push"

        shown = [line for line in sandbox.command("status").stdout.splitlines() if "are not watched" in line]
        assert [line.split(":")[0] for line in shown] == sorted(
            ["shop", "copy2"] if "2 of 4" in unwatched else ["shop", "copy0", "copy1", "copy2"]
        ), shown
        time.sleep(1)
        assert len(fallback_lines(daemon)) == 1  # said once, not at every recheck
        assert "Traceback" not in daemon.log()
