"""The daemon on a real PostgreSQL (tests/postgres_fixture.py): pushes through the real hook, real ansible-playbook runs."""

from __future__ import annotations

import sqlite3
import time

import psutil
import pytest

from gitopsd.adapters.store import Store
from tests.e2e.test_service import NotifySocket
from tests.postgres_fixture import PgServer
from tests.support import Daemon, Sandbox


def _sleeping(seconds: str, sandbox: Sandbox) -> bool:
    """Is a `sleep SECONDS` of this sandbox's playbook alive? (test_supersede's playbooks sleep 4 too.)"""
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:2] == ["sleep", seconds] and proc.environ().get("GITOPSD_TEST_OUT") == str(sandbox.out):
                return True
        except psutil.Error:
            continue
    return False


def pg_sandbox(root, url: str) -> Sandbox:
    return Sandbox(root, {"qa": ["qa-1"], "staging": ["staging-1"]}, extra={"database": url})


def test_push_deploy_promote_and_rollback_with_the_records_in_postgresql(short_tmp, postgres_url):
    sandbox = pg_sandbox(short_tmp, postgres_url)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        v1 = sandbox.head("staging")
        sandbox.write("app.txt", "v2")
        v2 = sandbox.commit("v2")
        # The hook judges from its SQLite copy of the records: v2's tree was not deployed in qa yet.
        refused = sandbox.push(f"{v2}:refs/heads/staging", check=False)
        assert refused.returncode != 0 and "push to refs/heads/staging refused" in refused.stderr, refused.stderr
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", v2)
        promoted = sandbox.command("promote", "qa", "staging").stdout
        assert "staging" in promoted
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        assert sandbox.tree("staging") == sandbox.tree(v2)
        sandbox.command("rollback", "staging")
        revert = sandbox.head("staging")
        daemon.wait_state("staging", "in-sync", revert)
    assert sandbox.tree(revert) == sandbox.tree(v1)
    last = sandbox.history("staging")[0]
    assert last["kind"] == "rollback" and last["result"] == "succeeded"
    assert not (sandbox.state / "state.db").exists()  # no SQLite store: only the hook's copy
    with Store(sandbox.state / "x.db", url=postgres_url, readonly=True) as pg:
        rows = [(d.env, d.kind, d.result) for d in pg.history(limit=100)]
    copy = sqlite3.connect(sandbox.state / "hook-ledger.db")
    mirrored = copy.execute("SELECT env, kind, result FROM deployments ORDER BY id DESC").fetchall()
    assert rows == mirrored and ("staging", "rollback", "succeeded") in rows


def test_an_unreachable_database_at_start_is_said_retried_and_not_ready(short_tmp):
    server = PgServer()
    try:
        url = server.create_database()
        server.stop()
        sandbox = pg_sandbox(short_tmp, url)
        notify = NotifySocket(sandbox.root / "notify.sock")
        with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path)) as daemon:
            daemon.wait_for(
                lambda: daemon.log().count("cannot start yet: cannot reach the PostgreSQL state database") >= 2,
                30,
                "two tries said",
            )
            line = next(x for x in daemon.log().splitlines() if "cannot start yet" in x)
            assert f"127.0.0.1:{server.port}" in line and "Start PostgreSQL or fix `database:`" in line
            assert notify.fields("STATUS=waiting for the database") and not notify.fields("READY=1")
            server.start()
            notify.wait("READY=1", timeout=60)
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    finally:
        server.close()


def test_a_database_lost_mid_deployment_gets_the_record_when_it_is_back(short_tmp):
    server = PgServer()
    try:
        sandbox = pg_sandbox(short_tmp, server.create_database())
        with Daemon(sandbox) as daemon:
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            sandbox.write("SLEEP", "4")
            slow = sandbox.commit("slow")
            sandbox.push("main", "main:qa")
            daemon.wait_for(lambda: _sleeping("4", sandbox), 30, "the slow deployment running")
            server.stop()
            daemon.wait_for(lambda: not _sleeping("4", sandbox), 30, "the playbook done while the database is down")
            daemon.wait_for(lambda: "went away" in daemon.log(), 30, "the daemon waiting for the database")
            time.sleep(2)
            server.start()
            row = daemon.wait_result("qa", slow, "succeeded", timeout=60)
            assert row["kind"] == "deploy"
            daemon.wait_state("qa", "in-sync", slow)
        assert [d["result"] for d in sandbox.history("qa") if d["commit"] == slow] == ["succeeded"]
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_leftover_sleep(short_tmp):
    yield
    for proc in psutil.process_iter():  # this test's only: other files' playbooks sleep 4 at the same time
        try:
            if proc.cmdline()[:2] == ["sleep", "4"] and proc.environ().get("GITOPSD_TEST_OUT", "").startswith(str(short_tmp)):
                proc.kill()
        except psutil.Error:
            continue
