"""Two-person break-glass with real Unix users: one asks, a second identity in override_by confirms; the daemon takes
each caller's identity from its control socket (SO_PEERCRED). Real pushes, real CLI calls, the daemon as a process."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.integration.test_human_gates import as_user, said
from tests.support import Daemon, Sandbox, git, unix_users

PEOPLE = ("gt-bg-alice", "gt-bg-bob", "gt-bg-carol")  # bob asks, carol confirms, alice may not
GROUP = "gt-bg-people"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "userdel")),
    reason="real Unix users need root, setpriv, useradd and groupadd",
)


@pytest.fixture
def server(short_tmp):
    with unix_users(PEOPLE, GROUP):
        short_tmp.chmod(0o755)
        sandbox = Sandbox(
            short_tmp,
            {"qa": ["qa-1"], "staging": ["staging-1"]},
            env_options={
                "staging": {
                    "override_by": ["gt-bg-bob", "gt-bg-carol"],  # and a deny window
                    "windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}],
                }
            },
        )
        sandbox.runtime.mkdir()
        shutil.chown(sandbox.runtime, "root", GROUP)
        sandbox.runtime.chmod(0o2750)  # the sockets take the folder's group: the people may use them, not replace them
        with Daemon(sandbox) as daemon:
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))  # read from the store: the socket may come later
            daemon.wait_for(lambda: (sandbox.runtime / "control.sock").exists(), 60, "the control socket")
            yield sandbox, daemon
            # staging's window is closed for good: judging it once cost seconds, the loop never got to SIGTERM
            assert daemon.stop() == 0, daemon.log()[-2000:]


def test_a_promotion_into_a_locked_environment_inside_a_deny_window_needs_a_second_person_and_both_are_recorded(server):
    sandbox, daemon = server
    sandbox.write("app.txt", "hotfix")
    sandbox.commit("hotfix")
    sandbox.push("main", "main:qa")
    daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    locked = as_user(sandbox, "gt-bg-alice", "lock", "staging", "--reason", "incident 7")
    assert locked.returncode == 0 and "shop/staging locked by gt-bg-alice" in said(locked), said(locked)
    assert "locked by gt-bg-alice" in said(sandbox.command("promote", "qa", "staging", check=False))

    asked = as_user(sandbox, "gt-bg-bob", "override", "staging", "--reason", "the hotfix for incident 7")
    assert asked.returncode == 0 and "break-glass #1 for shop/staging asked by gt-bg-bob" in said(asked), said(asked)
    assert "gitopsd override confirm 1" in said(asked)
    # Asking is not enough: the promotion is still refused.
    assert sandbox.command("promote", "qa", "staging", check=False).returncode == 1
    own = as_user(sandbox, "gt-bg-bob", "override", "confirm", "1")
    assert own.returncode == 1 and "the same person cannot confirm their own" in said(own), said(own)
    outsider = as_user(sandbox, "gt-bg-alice", "override", "confirm", "1")
    assert outsider.returncode == 1 and "gt-bg-alice may not confirm a break-glass in staging" in said(outsider)
    confirmed = as_user(sandbox, "gt-bg-carol", "override", "confirm", "1", "--reason", "checked the diff")
    assert confirmed.returncode == 0 and "break-glass #1 confirmed by gt-bg-carol" in said(confirmed), said(confirmed)
    again = as_user(sandbox, "gt-bg-carol", "override", "confirm", "1")
    assert again.returncode == 1 and "confirmed already by gt-bg-carol" in said(again)

    promoted = sandbox.command("promote", "qa", "staging")
    assert "break-glass #1 asked by gt-bg-bob, confirmed by gt-bg-carol (checked the diff)" in promoted.stdout
    head = sandbox.head("staging")
    deployed = daemon.wait_result("staging", head, "succeeded", timeout=120)
    assert "break-glass #1 asked by gt-bg-bob, confirmed by gt-bg-carol" in deployed["reason"]
    assert "the hotfix for incident 7" in deployed["reason"]
    notes = git(sandbox.repo, "log", "--notes=gitopsd", "--format=%N", "staging").stdout
    assert "break-glass #1 for staging asked by gt-bg-bob" in notes and "confirmed by gt-bg-carol" in notes
    listed = sandbox.command("locks").stdout
    assert "incident 7" in listed and "confirmed by gt-bg-carol, in force until" in listed


def test_break_glass_requests_that_make_no_sense_are_refused_in_one_line(server):
    sandbox, _daemon = server
    unknown = as_user(sandbox, "gt-bg-bob", "override", "confirm", "99")
    assert unknown.returncode == 1 and "no break-glass request #99" in said(unknown)
    nobody = as_user(sandbox, "gt-bg-bob", "override", "qa", "--reason", "x")
    assert nobody.returncode == 1 and "its override_by is empty" in said(nobody)
    silent = as_user(sandbox, "gt-bg-bob", "override", "staging")
    assert silent.returncode != 0 and "say why with --reason" in said(silent)
    for proc in (unknown, nobody, silent):
        assert "Traceback" not in said(proc) and len(said(proc).splitlines()) == 1
