"""Deploy windows are judged by the daemon for every trigger but a rollback: a nudge claims nothing it cannot prove.

Real: the daemon as a process, a bare repository with the installed hook, `gitopsd sync`, `git update-ref`, and a
nudge datagram on the daemon's socket whose sender the kernel reports (SCM_CREDENTIALS) as another uid: root may
send any credentials, which is how the datagram of another member of the daemon's group looks to the daemon.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import struct
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from gitopsd.config import load
from gitopsd.gate.nudge import Nudge
from tests.support import Daemon, Sandbox, git

MEMBER_UID = 54331  # another account of the daemon's group: not the repository's owner, not root, not the daemon


def freeze(sandbox: Sandbox, daemon: Daemon, windows: list[dict[str, str]], override_by: tuple[str, ...] = ()) -> None:
    """Give qa these deploy windows (and who may override them) and make the running daemon read them."""
    data = yaml.safe_load(sandbox.config.read_text())
    qa = next(e for e in data["repositories"][0]["environments"] if e["name"] == "qa")
    qa["windows"], qa["override_by"] = windows, list(override_by)
    sandbox.config.write_text(yaml.safe_dump(data))
    reloads = daemon.log().count("configuration reloaded")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.log().count("configuration reloaded") > reloads, 30, "reload")


def now_frozen() -> list[dict[str, str]]:
    """A freeze that started a minute ago and lasts two hours, in the real clock."""
    start = datetime.now(UTC) - timedelta(minutes=1)
    return [{"name": "release freeze", "deny": f"{start.minute} {start.hour} * * *", "duration": "2h", "timezone": "UTC"}]


@pytest.mark.skipif(os.geteuid() != 0, reason="sending another uid's credentials needs root")
def test_a_push_nudge_from_an_account_other_than_the_hooks_announces_nothing_and_the_head_meets_the_closed_window(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("a.txt", "v2, during the freeze")
        v2 = sandbox.commit("v2")
        sandbox.push("main")
        freeze(sandbox, daemon, now_frozen())
        # What the hook says after judging a push with the windows, sent by a group member for a head it moves by hand.
        forged = Nudge(repo=str(sandbox.repo), trigger="push", actor="alice", commits=(v2,)).encode()
        creds = struct.pack("3i", os.getpid(), MEMBER_UID, MEMBER_UID)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendmsg(
                [forged], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0, str(load(sandbox.config).nudge_socket)
            )
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", v2)
        row = daemon.wait_state("qa", "blocked", v2)
        assert row["reason"].startswith(
            "promotions to qa are closed now: the deploy window is closed: inside 'release freeze'"
        ), row
        assert not [d for d in sandbox.history("qa") if d["commit"] == v2]
        # The window opens: the daemon deploys the head (so the test can tell a block from a daemon that does nothing).
        freeze(sandbox, daemon, [])
        daemon.wait_result("qa", v2, "succeeded")


def test_gitopsd_sync_during_a_closed_window_waits_for_it_to_open_and_then_reapplies(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        v1 = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", v1)
        freeze(sandbox, daemon, now_frozen())
        said = sandbox.command("sync", "qa").stdout
        assert f"re-applying {v1[:7]}" in said
        held = f"re-applying {v1[:7]}: the deploy window is closed: inside 'release freeze'; it waits until "
        daemon.wait_for(lambda: held in daemon.log(), 60, "the sync held by the window")
        assert [d["kind"] for d in sandbox.history("qa")] == ["deploy"]
        freeze(sandbox, daemon, [])
        daemon.wait_for(
            lambda: sorted(d["kind"] for d in sandbox.history("qa") if d["result"] == "succeeded") == ["deploy", "reapply"],
            60,
            "the re-apply once the window is gone",
        )


def test_retry_force_by_an_identity_in_override_by_still_deploys_a_blocked_head_during_the_closed_window(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("a.txt", "the fix for an outage")
        fix = sandbox.commit("fix")
        sandbox.push("main")
        freeze(sandbox, daemon, now_frozen(), override_by=(pwd.getpwuid(os.geteuid()).pw_name,))
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", fix)
        daemon.wait_state("qa", "blocked", fix)
        sandbox.command("retry", "qa", "--force", "--reason", "customer outage")  # the operator's override
        daemon.wait_result("qa", fix, "succeeded")
