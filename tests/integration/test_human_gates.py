"""Sign-offs, release candidates and approvals with real Unix users: the daemon takes each caller's
identity from its control socket (SO_PEERCRED), never from the environment; real pushes, real CLI calls."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox, git, sh, unix_users

NOTIFY = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + chr(10))"
PEOPLE = ("gt-alice", "gt-bob", "gt-carol", "gt-dave")  # alice tests; bob, carol and dave approve
GROUP = "gt-people"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "userdel")),
    reason="real Unix users need root, setpriv, useradd and groupadd",
)


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    with unix_users(PEOPLE, GROUP):
        yield


@pytest.fixture
def server(short_tmp: Path, people: None) -> Iterator[tuple[Sandbox, Daemon]]:
    short_tmp.chmod(0o755)
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]},
        env_options={
            "staging": {"signoff_by": ["gt-alice"]},
            "production": {
                "notify": {"command": [sys.executable, "-c", NOTIFY, str(short_tmp / "events.jsonl")]},
                "require_signoff": {"env": "staging", "count": 1},
                "approvals": {"required": 2, "approvers": ["group:approvers"], "forbid_self_approval": True},
            },
        },
        extra={"groups": {"approvers": ["gt-bob", "gt-carol", "gt-dave"]}},
        converged=True,
    )
    sandbox.runtime.mkdir()
    shutil.chown(sandbox.runtime, "root", GROUP)
    sandbox.runtime.chmod(0o2750)  # the sockets take the folder's group: the people may use them, not replace them
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        yield sandbox, daemon


def as_user(sandbox: Sandbox, user: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(user)
    return sh(
        [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--",
            sys.executable,
            "-m",
            "gitopsd",
            *args,
            "--config",
            str(sandbox.config),
        ],
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent", **(env or {})},
    )


def said(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stdout + proc.stderr).strip()


def ship_to_staging(sandbox: Sandbox, daemon: Daemon, text: str, pusher: str) -> str:
    sandbox.write("app.txt", text)
    commit = sandbox.commit(text)
    subprocess.run(
        ["git", "push", "-q", "origin", "main", "main:qa"], cwd=sandbox.work, check=True, env=sandbox.environ(GITOPSD_USER=pusher)
    )
    daemon.wait_state("qa", "in-sync", commit)
    sandbox.command("promote", "qa", "staging")
    daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
    return commit


def test_signoff_rc_and_two_approvals_let_a_release_into_production_and_each_mistake_is_refused(server):
    sandbox, daemon = server
    ship_to_staging(sandbox, daemon, "release 2", pusher="gt-bob")
    # Without sign-off nothing goes on: neither a promotion nor a release candidate.
    refused = sandbox.command("promote", "staging", "production", check=False)
    assert refused.returncode == 1 and "production only takes trees signed off after manual testing in staging" in said(refused)
    assert "0 of 1 sign-off in staging; may sign off: gt-alice" in said(refused)
    proc = as_user(sandbox, "gt-alice", "rc", "create")
    assert proc.returncode == 1 and "lacks its sign-offs for production" in said(proc)

    # Only signoff_by may sign off; the environment cannot make someone else of the caller.
    proc = as_user(
        sandbox, "gt-bob", "signoff", "staging", "--note", "looks fine", env={"GITOPSD_USER": "gt-alice", "SUDO_USER": "gt-alice"}
    )
    assert proc.returncode == 1 and said(proc) == "gitopsd: error: gt-bob may not sign off in staging; who may: gt-alice"
    proc = as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "checkout and refunds tested by hand")
    assert proc.returncode == 0, said(proc)
    assert "gt-alice signed off staging's tree" in said(proc)
    again = as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "again")
    assert again.returncode == 1 and "already signed off" in said(again) and "nothing changed" in said(again)

    proc = as_user(sandbox, "gt-alice", "rc", "create", "--name", "r2")
    assert proc.returncode == 0, said(proc)
    assert "release candidate rc/r2 created" in said(proc) and "needs 2 approvals" in said(proc)
    tag = git(sandbox.root, "--git-dir", str(sandbox.repo), "cat-file", "-p", "refs/tags/rc/r2").stdout
    assert "Release candidate r2 for production" in tag and "release 2" in tag and "gt-alice: signoff" in tag
    taken = as_user(sandbox, "gt-alice", "rc", "create", "--name", "r2")
    assert taken.returncode == 1 and "rc/r2 exists already" in said(taken)
    bad = as_user(sandbox, "gt-alice", "rc", "create", "--name", "no/slash")
    assert bad.returncode == 1 and "is not a valid release candidate name" in said(bad)

    # Nobody can make or move an rc/* tag by pushing.
    pushed = sandbox.push("HEAD:refs/tags/rc/forged", check=False)
    assert pushed.returncode == 1 and "release candidates (rc/* tags) are made by gitopsd only" in pushed.stderr

    # Production takes the candidate only with two valid approvals.
    refused = sandbox.command("promote", "rc/r2", "production", check=False)
    assert refused.returncode == 1 and "rc/r2, which is not approved" in said(refused)
    assert "0 of 2 approvals" in said(refused)
    proc = as_user(sandbox, "gt-alice", "approve", "r2", "--note", "mine")
    assert proc.returncode == 1 and "gt-alice may not approve for production; who may: gt-bob, gt-carol, gt-dave" in said(proc)
    proc = as_user(sandbox, "gt-bob", "approve", "r2", "--note", "lgtm")  # bob pushed one of its changes
    assert proc.returncode == 1 and "it is their own" in said(proc)
    proc = as_user(sandbox, "gt-carol", "approve", "r2", "--note", "product ok")
    assert proc.returncode == 0 and "1 of 2 approvals (by gt-carol)" in said(proc), said(proc)
    twice = as_user(sandbox, "gt-carol", "approve", "r2", "--note", "again")
    assert twice.returncode == 1 and "already approved rc/r2" in said(twice)
    refused = sandbox.command("promote", "rc/r2", "production", check=False)
    assert refused.returncode == 1 and "1 of 2 approvals (by gt-carol)" in said(refused)
    proc = as_user(sandbox, "gt-dave", "approve", "r2", "--note", "pm ok")
    assert proc.returncode == 0 and "approved: production takes it now" in said(proc), said(proc)

    import json

    events = [json.loads(line) for line in (sandbox.root / "events.jsonl").read_text().splitlines()]
    events = [e for e in events if e["event"].startswith("rc-")]
    assert [e["event"] for e in events] == ["rc-created", "rc-approved"]
    assert events[0]["rc"] == "r2" and events[0]["approvals_required"] == 2 and events[0]["created_by"] == "gt-alice"
    assert events[1]["approved_by"] == ["gt-carol", "gt-dave"]
    listed = as_user(sandbox, "gt-bob", "rc", "list")
    assert "r2" in listed.stdout and "approved" in listed.stdout and "gt-carol, gt-dave" in listed.stdout
    sandbox.command("promote", "rc/r2", "production")
    production = sandbox.head("production")
    daemon.wait_state("production", "in-sync", production)
    assert sandbox.tree(production) == sandbox.tree("refs/tags/rc/r2")

    # The audit trail travels with the repository: git notes on the commit.
    notes = git(
        sandbox.root, "--git-dir", str(sandbox.repo), "log", "--notes=gitopsd", "-n", "3", "--format=%H%n%N", "refs/heads/staging"
    ).stdout
    for line in (
        "signed off in staging by gt-alice",
        "release candidate rc/r2 for production created by gt-alice",
        "rc/r2 approved by gt-carol",
        "rc/r2 approved by gt-dave",
    ):
        assert line in notes, (line, notes)
    daemon.wait_for(
        lambda: (
            "deploy to production succeeded"
            in git(
                sandbox.root, "--git-dir", str(sandbox.repo), "log", "--notes=gitopsd", "-n", "1", "--format=%N", production
            ).stdout
        ),
        10,
        "the deployment's note",
    )
    shown = sandbox.command("rc", "show", "r2")
    assert "State: approved" in shown.stdout and "gt-dave: approve: pm ok" in shown.stdout

    # The next candidate lists only what production does not run yet.
    ship_to_staging(sandbox, daemon, "release 2b", pusher="gt-alice")
    assert as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "tested").returncode == 0
    assert as_user(sandbox, "gt-alice", "rc", "create", "--name", "r2b").returncode == 0
    tag = git(sandbox.root, "--git-dir", str(sandbox.repo), "cat-file", "-p", "refs/tags/rc/r2b").stdout
    changes = tag.split("Changes since production's last release")[1].split("Checks:")[0]
    assert "release 2b" in changes and "release 2\n" not in changes and "initial content" not in changes, tag


def test_a_rejection_blocks_a_candidate_until_its_author_withdraws_it_and_a_new_tree_needs_new_approvals(server):
    sandbox, daemon = server
    ship_to_staging(sandbox, daemon, "release 3", pusher="gt-alice")
    assert as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "tested").returncode == 0
    assert as_user(sandbox, "gt-alice", "rc", "create", "--name", "r3").returncode == 0
    tag = git(sandbox.root, "--git-dir", str(sandbox.repo), "cat-file", "-p", "refs/tags/rc/r3").stdout
    changes = tag.split("Changes since production's last release")[1].split("Checks:")[0]
    assert "release 3" in changes and "release 2" not in changes and "(none)" not in changes, tag
    for user in ("gt-bob", "gt-dave"):
        assert as_user(sandbox, user, "approve", "r3", "--note", "ok").returncode == 0
    proc = as_user(sandbox, "gt-carol", "reject", "r3", "--note", "legal has not cleared the texts")
    assert proc.returncode == 0 and "rejected by gt-carol: legal has not cleared the texts" in said(proc)
    refused = sandbox.command("promote", "rc/r3", "production", check=False)
    assert refused.returncode == 1 and "rejected by gt-carol" in said(refused)
    assert '"event": "rc-rejected"' in (sandbox.root / "events.jsonl").read_text()
    other = as_user(sandbox, "gt-bob", "withdraw", "r3")  # only carol can take her rejection back
    assert other.returncode == 0  # (bob withdraws his own approval)
    assert as_user(sandbox, "gt-bob", "approve", "r3", "--note", "ok again").returncode == 0
    assert as_user(sandbox, "gt-carol", "withdraw", "r3").returncode == 0
    sandbox.command("promote", "rc/r3", "production")
    daemon.wait_state("production", "in-sync", sandbox.head("production"))

    # A new tree in staging is a new candidate: r3's approvals do not carry over.
    ship_to_staging(sandbox, daemon, "release 4", pusher="gt-alice")
    refused = sandbox.command("promote", "staging", "production", check=False)
    assert refused.returncode == 1 and "signed off after manual testing" in said(refused)


def test_two_approvals_racing_are_each_counted_once(server):
    sandbox, daemon = server
    ship_to_staging(sandbox, daemon, "release 5", pusher="gt-alice")
    assert as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "tested").returncode == 0
    assert as_user(sandbox, "gt-alice", "rc", "create", "--name", "r5").returncode == 0
    procs = [
        subprocess.Popen(
            [
                "setpriv",
                f"--reuid={pwd.getpwnam(u).pw_uid}",
                f"--regid={pwd.getpwnam(u).pw_gid}",
                "--init-groups",
                "--",
                sys.executable,
                "-m",
                "gitopsd",
                "approve",
                "r5",
                "--note",
                "go",
                "--config",
                str(sandbox.config),
            ],
            cwd="/",
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        )
        for u in ("gt-bob", "gt-carol", "gt-carol", "gt-dave")
    ]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert sorted(code for _o, _e, code in results) == [0, 0, 0, 1]  # carol's second is refused: already approved
    shown = sandbox.command("rc", "show", "r5", "--json")
    import json

    view = json.loads(shown.stdout)
    assert view["approved_by"] == ["gt-bob", "gt-carol", "gt-dave"] and view["state"] == "approved"
    assert [h["actor"] for h in view["history"]].count("gt-carol") == 1


def test_with_auto_promote_the_daemon_promotes_the_candidate_once_its_approvals_are_complete(server):
    import signal

    sandbox, daemon = server
    sandbox.env_options["production"]["auto_promote"] = True
    sandbox.write_config()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: "configuration reloaded" in daemon.log(), 20, "the reload")
    ship_to_staging(sandbox, daemon, "release 6", pusher="gt-alice")
    before = sandbox.head("production")
    assert as_user(sandbox, "gt-alice", "signoff", "staging", "--note", "tested").returncode == 0
    assert as_user(sandbox, "gt-alice", "rc", "create", "--name", "r6").returncode == 0
    assert as_user(sandbox, "gt-bob", "approve", "r6", "--note", "ok").returncode == 0
    time.sleep(1.5)
    assert sandbox.head("production") == before  # one approval of two: nothing moves
    proc = as_user(sandbox, "gt-carol", "approve", "r6", "--note", "ok")
    assert "the daemon promotes it to production" in said(proc)
    daemon.wait_for(
        lambda: sandbox.tree(sandbox.head("production")) == sandbox.tree("refs/tags/rc/r6"),
        20,
        "production promoted by the daemon",
    )
    row = daemon.wait_result("production", sandbox.head("production"), "succeeded")
    assert row["trigger"] == "auto-promote" and row["actor"] == "gitopsd"
