"""Locks and their reasons, end to end: the daemon as a process, real pushes through the hook, `gitopsd` commands over
the control socket (the caller's identity from SO_PEERCRED: the Unix user running the tests)."""

from __future__ import annotations

import math
import os
import pwd
import time
from datetime import datetime

import pytest

from gitopsd.adapters.control import call
from tests.support import Daemon, Sandbox, git

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def server(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["staging-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        yield sandbox, daemon


def said(proc) -> str:
    return (proc.stdout + proc.stderr).strip()


def ship(sandbox: Sandbox, text: str) -> str:
    sandbox.write("app.txt", text)
    return sandbox.commit(text)


def test_a_lock_refuses_pushes_and_promotions_naming_who_why_and_until_when_and_a_rollback_still_goes_through(server):
    sandbox, daemon = server
    v2 = ship(sandbox, "v2")
    sandbox.push("main", "main:qa")
    daemon.wait_state("qa", "in-sync", v2)

    locked = sandbox.command("lock", "qa", "--reason", "database migration", "--for", "2h")
    assert locked.returncode == 0 and f"shop/qa locked by {ME} until " in locked.stdout, said(locked)
    v3 = ship(sandbox, "v3")
    refused = sandbox.push("main", "main:qa", check=False)
    assert refused.returncode != 0, said(refused)
    assert "promotions to qa are stopped: it is locked" in refused.stderr
    assert f"shop/qa locked by {ME} until " in refused.stderr and "database migration" in refused.stderr
    assert "rollbacks are still accepted: gitopsd rollback qa" in refused.stderr
    assert sandbox.head("qa") != v3
    row = sandbox.status()["qa"]
    assert row["locks"] and "database migration" in row["locks"][0]
    assert "promotions stopped: shop/qa locked by" in sandbox.command("status").stdout

    # A whole repository: a promotion is refused the same way, with its own words.
    sandbox.command("lock", "--repo", "shop", "--reason", "release freeze")
    promoted = sandbox.command("promote", "qa", "staging", check=False)
    assert promoted.returncode == 1 and "every environment of shop locked by" in said(promoted)
    assert "release freeze" in said(promoted)

    # Rollbacks always pass.
    sandbox.command("rollback", "qa")
    rollback = daemon.wait_for(
        lambda: next((d for d in sandbox.history("qa") if d["kind"] == "rollback" and d["result"] == "succeeded"), None),
        120,
        "the rollback deployed",
    )
    assert sandbox.tree(rollback["commit"]) == sandbox.tree(f"{v2}~1")

    # Unlock lifts a person's lock of exactly that scope and says what still holds.
    lifted = sandbox.command("unlock", "qa", "--reason", "migration done")
    assert f"shop/qa unlocked by {ME}; still in force: every environment of shop locked by" in lifted.stdout
    sandbox.command("unlock", "--repo", "shop")
    sandbox.push("main")  # the refused push took main with it: pre-receive refuses all or nothing
    sandbox.command("promote", "main", "qa")
    daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    assert sandbox.tree("qa") == sandbox.tree(v3)
    notes = git(sandbox.repo, "log", "--notes=gitopsd", "--format=%N", "qa").stdout
    assert "database migration" in notes and "migration done" in notes


def test_a_lock_blocks_a_head_that_skipped_the_hook_and_it_deploys_when_the_lock_expires(server):
    sandbox, daemon = server
    v2 = ship(sandbox, "v2")
    sandbox.push("main")
    before = time.time()
    locked = sandbox.command(
        "lock", "qa", "--reason", "incident 42", "--for", "20s"
    )  # long enough for a busy machine to see it blocked
    assert "incident 42" in locked.stdout
    # A head nobody pushed through the hook (git update-ref): the daemon judges it again.
    git(sandbox.repo, "update-ref", "refs/heads/qa", v2)
    row = daemon.wait_state("qa", "blocked", v2, timeout=60)
    assert f"locked by {ME}" in row["reason"] and "incident 42" in row["reason"]
    deployed = daemon.wait_result("qa", v2, "succeeded", timeout=240)
    started = datetime.fromisoformat(deployed["started_at"]).timestamp()
    # Not before the lock ran out (the same machine's clock); the record keeps whole seconds.
    assert started >= math.floor(before) + 20
    assert sandbox.status()["qa"]["locks"] == []


def test_bad_lock_requests_get_one_line_saying_what_is_wrong(server):
    sandbox, _daemon = server
    past = sandbox.command("lock", "qa", "--reason", "x", "--until", "2001-01-01T00:00", check=False)
    assert past.returncode != 0 and "is in the past" in past.stderr and len(past.stderr.strip().splitlines()) == 1
    unknown = sandbox.command("lock", "prod", "--reason", "x", check=False)
    assert unknown.returncode != 0 and "has no environment 'prod' (it has: qa, staging)" in unknown.stderr
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    nothing = sandbox.command("lock", "--reason", "x", check=False)
    assert nothing.returncode != 0 and "name what to lock" in nothing.stderr
    garbled = sandbox.command("lock", "qa", "--reason", "x", "--for", "soon", check=False)
    assert garbled.returncode != 0 and "--for" in garbled.stderr
    assert sandbox.command("locks").stdout.strip() == "nothing is locked"
    # Over the control socket each carries its kind and a reason id naming the situation: what a client matches on.
    control = sandbox.runtime / "control.sock"
    asked = {
        "bad_time": {"op": "lock", "env": "qa", "reason": "x", "until": "2001-01-01T00:00"},
        "env_not_found": {"op": "lock", "env": "prod", "reason": "x"},
        "bad_lock_scope": {"op": "lock", "reason": "x"},
        "nothing_changed": {"op": "unlock", "env": "qa"},
        "rc_not_found": {"op": "approve", "rc": "nope", "note": "x"},
    }
    answers = {reason: call(control, request) for reason, request in asked.items()}
    assert {reason: (a["ok"], a["reason"]) for reason, a in answers.items()} == {r: (False, r) for r in asked}
    assert [a["kind"] for a in answers.values()] == ["invalid", "missing", "invalid", "conflict", "missing"]


def test_overrides_unlocks_and_approvals_carry_their_reason_and_the_lock_history_shows_who_lifted_and_why(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, env_options={"qa": {"override_by": [ME]}}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.command("lock", "qa", "--reason", "vendor maintenance")
        sandbox.command("unlock", "qa", "--reason", "vendor is back")
        past = sandbox.command("locks", "--history", "5").stdout
        assert f"shop/qa locked by {ME} until unlocked" in past and "vendor maintenance" in past
        assert f"lifted by {ME} at " in past and ": vendor is back" in past
        # Forcing a head past the rule is an override: it says why, or it is refused in one line.
        silent = sandbox.command("retry", "qa", "--force", check=False)
        assert silent.returncode == 1 and silent.stderr.strip().splitlines() == [
            "gitopsd: error: say why with --reason '...': forcing a head past the promotion rule in qa is recorded "
            "with your name and its reason"
        ]
        assert "admitted past the promotion rule" in sandbox.command("retry", "qa", "--force", "--reason", "hotfix").stdout
        # Approvals take --reason as well as --note: the same word everywhere.
        named = sandbox.command("approve", "nope", "--reason", "looks good", check=False)
        assert "no release candidate rc/nope" in named.stderr, named.stderr


def test_a_confirmed_break_glass_lets_a_promotion_through_a_lock_and_a_closed_deny_window_naming_both_people(short_tmp):
    """policy.judge itself, as the hook and the daemon call it: real git, the records as plain values."""
    from datetime import timedelta

    from gitopsd.core.windows import Cron, Window
    from gitopsd.gate import policy
    from gitopsd.gate.locks import BreakGlass, Lock
    from gitopsd.gate.snapshot import GateEnvironment, GateRepository
    from tests.integration.test_metrics import Records, shop

    class Glass(Records):
        def break_glass(self, repo: str, env: str, now: float) -> BreakGlass:
            return BreakGlass(3, "bob", "checkout hotfix", "carol", "read the diff", 0.0, 9e9)

    path, c = shop(short_tmp / "shop.git")
    freeze = (Window("freeze", False, Cron.parse("* * * * *"), timedelta(hours=1), "UTC"),)
    env = GateEnvironment("qa", "qa", "main", windows=freeze)
    repo = GateRepository("shop", str(path), [env])
    lock = Lock(1, "shop", "qa", "person", "", "alice", "incident 9", 0.0, None)
    judge = lambda records: policy.judge(repo, str(path), records, env, None, c["base"], identity="dave")  # noqa: E731
    assert judge(Records(locks=[lock])).rule_id == "locked"
    assert judge(Records()).rule_id == "deploy-window"
    for records in (Glass(locks=[lock]), Glass()):
        verdict = judge(records)
        assert verdict.accepted and verdict.override == (
            "break-glass #3 asked by bob, confirmed by carol (read the diff): checkout hotfix"
        ), verdict
    assert "locked by alice" in judge(Glass(locks=[lock])).rule and "inside 'freeze'" in judge(Glass()).rule
