"""The records survive their file: a state.db deleted or replaced under the daemon, backups, restore, rebuild.

Real: `gitopsd run` as a process, pushes through the installed hook, ansible-playbook, SQLite files.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox, free_port, git, unix_users

pytestmark = pytest.mark.sandbox({"qa": ["qa-1"]}, sweep_interval=1, converged=True)


def _db(sandbox: Sandbox):
    return sandbox.state / "state.db"


def _remove_store(sandbox: Sandbox) -> None:
    for suffix in ("", "-wal", "-shm"):
        (sandbox.state / f"state.db{suffix}").unlink(missing_ok=True)


def _nothing_deploys_after_a_push(sandbox: Sandbox, daemon: Daemon) -> None:
    runs = sandbox.runs()
    sandbox.write("app.txt", f"after {time.monotonic_ns()}")
    sandbox.commit("a change made after the store was lost")
    sandbox.push("main", "main:qa")
    time.sleep(4)  # four sweeps and the nudge: any of them would have started it
    assert sandbox.runs() == runs
    assert daemon.proc.poll() is None


def _rescued(sandbox: Sandbox) -> list[int]:
    [copy] = list((sandbox.state / "backups").glob("rescued-*.db"))
    assert copy.stat().st_mode & 0o777 == 0o640
    with sqlite3.connect(copy) as db:
        return [row[0] for row in db.execute("SELECT id FROM deployments WHERE result = 'succeeded'")]


def test_a_state_database_deleted_while_the_daemon_runs_is_noticed_and_nothing_more_deploys(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        _remove_store(sandbox)
        daemon.wait_for(lambda: "was deleted while the daemon had it open" in daemon.log(), 10, "the error line")
        _nothing_deploys_after_a_push(sandbox, daemon)
        [line] = [ln for ln in daemon.log().splitlines() if " error: " in ln and "was deleted" in ln]
        assert "gitopsd db restore" in line and "gitopsd db rebuild" in line
        status = sandbox.command("status").stdout.splitlines()
        assert status[0].startswith("gitopsd: store-replaced: the state database") and "deleted" in status[0]
        assert sandbox.command("history").stderr.startswith("gitopsd: store-replaced: the state database")
        assert _rescued(sandbox), "the records the daemon still held are kept"
    assert not _db(sandbox).exists(), "the daemon wrote no new file"


def _gauge(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return next(line for line in answer.read().decode().splitlines() if line.startswith("gitopsd_store_replaced "))


def test_a_state_database_replaced_by_another_file_is_noticed_and_the_new_file_is_not_written(short_tmp):
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        sweep_interval=1,
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        assert _gauge(metrics) == "gitopsd_store_replaced 0.0"
        other = sandbox.state / "other.db"  # an empty store, as the next opener would have made
        sandbox.command("db", "upgrade", "--database", f"sqlite:{other}")
        os.replace(other, _db(sandbox))
        daemon.wait_for(lambda: "was replaced by another file" in daemon.log(), 10, "the error line")
        _nothing_deploys_after_a_push(sandbox, daemon)
        assert "store-replaced" in sandbox.command("status").stdout.splitlines()[0]
        assert _gauge(metrics) == "gitopsd_store_replaced 1.0"
        with sqlite3.connect(_db(sandbox)) as db:
            assert db.execute("SELECT count(*) FROM deployments").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM env_heads").fetchone()[0] == 0
        assert _rescued(sandbox)


def test_a_backup_made_while_the_daemon_runs_brings_the_history_back_after_a_stop(sandbox):
    copy = sandbox.root / "copy.db"
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        made = sandbox.command("db", "backup", "--to", str(copy))
        assert made.stdout.startswith(f"copied the state database {_db(sandbox)} to {copy}")
        assert copy.stat().st_mode & 0o777 == 0o640
        refused = sandbox.command("db", "restore", str(copy), check=False)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.strip() == (
            f"gitopsd: error: the daemon is running with the state folder "
            f"{sandbox.state}: stop it first (systemctl stop gitopsd), then "
            f"gitopsd db restore {copy}"
        )
    before = sandbox.history("qa")
    assert before
    _remove_store(sandbox)
    assert sandbox.history("qa") == []
    restored = sandbox.command("db", "restore", str(copy))
    assert restored.stdout.startswith(f"restored {_db(sandbox)} from {copy} ({len(before)} deployment")
    assert sandbox.history("qa") == before


def test_a_restore_over_a_store_keeps_the_old_file_beside_it(sandbox):
    copy = sandbox.root / "copy.db"
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    sandbox.command("db", "backup", "--to", str(copy))
    out = sandbox.command("db", "restore", str(copy)).stdout
    [aside] = list(sandbox.state.glob("state.db.before-restore-*Z"))
    assert f"the file it replaced was moved to {aside}" in out


def test_a_restore_of_a_file_that_is_not_a_store_says_so_in_one_line_and_changes_nothing(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    before = _db(sandbox).stat().st_ino, sandbox.history("qa")
    text = sandbox.root / "notes.txt"
    text.write_text("not a database\n" * 100)
    empty = sandbox.root / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    for bad, why in (
        (text, "file is not a database"),
        (empty, "no deployments, env_status, schema_version table"),
        (sandbox.root / "missing.db", "is not a file"),
    ):
        out = sandbox.command("db", "restore", str(bad), check=False)
        assert out.returncode == 1 and out.stdout == ""
        [line] = out.stderr.splitlines()
        assert line.startswith(f"gitopsd: error: {bad}") and why in line, line
    assert (_db(sandbox).stat().st_ino, sandbox.history("qa")) == before
    assert list(sandbox.state.glob("state.db.before-restore-*")) == []


def test_a_backup_to_a_place_that_cannot_be_written_says_so_in_one_line(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        plain = sandbox.root / "plain-file"
        plain.write_text("")
        out = sandbox.command("db", "backup", "--to", str(plain / "copy.db"), check=False)
        assert out.returncode == 1 and out.stdout == ""
        [line] = out.stderr.splitlines()
        assert line.startswith(f"gitopsd: error: cannot write the backup {plain / 'copy.db'}: ") and "--to FILE" in line


def test_the_daemon_keeps_the_newest_scheduled_backups(short_tmp):
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        sweep_interval=1,
        extra={"backup": {"interval": "1m", "keep": 2, "dir": str(short_tmp / "copies")}},
    )
    folder = short_tmp / "copies"
    folder.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (folder / f"state-{stamp}.db").write_text("old")
    with Daemon(sandbox) as daemon:  # a copy at start, then one each interval
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_for(lambda: "state database copied to" in daemon.log(), 10, "the first copy")
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0] == "state-20200103T000000Z.db", names


def test_a_bad_backup_section_is_reported_with_its_key(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"backup": {"interval": "10s", "keep": 0, "every": 1}})
    out = sandbox.command("check-config", check=False)
    assert out.returncode == 1
    assert "backup.interval: must be at least 1m, not '10s'" in out.stdout + out.stderr
    assert "backup.keep" in out.stdout + out.stderr and "every" in out.stdout + out.stderr


def test_db_rebuild_restores_the_ledger_from_the_notes_so_nothing_redeploys_and_promotion_works(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["prod-1"]}, converged=True)
    with Daemon(sandbox) as daemon:
        for env in ("qa", "staging", "production"):
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        sandbox.write("app.txt", "v2")
        v2 = sandbox.commit("v2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", v2)
        sandbox.command("promote", "qa", "staging")
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        daemon.wait_for(
            lambda: (
                "deploy to staging succeeded"
                in git(sandbox.root, "--git-dir", str(sandbox.repo), "log", "-1", "--notes=gitopsd", "--format=%N", v2).stdout
                + git(
                    sandbox.root, "--git-dir", str(sandbox.repo), "log", "-1", "--notes=gitopsd", "--format=%N", "staging"
                ).stdout
            ),
            10,
            "the note of staging's deployment",
        )
    before = {env: sandbox.history(env) for env in ("qa", "staging")}
    runs = sandbox.runs()
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "gitopsd started" in daemon.log(), 30, "the start")
        refused = sandbox.command("db", "rebuild", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("gitopsd: error: the daemon is running")
    _remove_store(sandbox)
    git(
        sandbox.root,
        "--git-dir",
        str(sandbox.repo),
        "notes",
        "--ref=gitopsd",
        "append",
        "-m",
        "gitopsd: deploy to qa went sideways somehow",
        v2,
    )  # a line no gitopsd writes: named, not guessed at
    out = sandbox.command("db", "rebuild").stdout
    assert f"shop/qa: {len(before['qa'])} deployments restored" in out
    assert f"shop/staging: {len(before['staging'])} deployments restored" in out
    assert (
        f"1 note line could not be read (not restored):\n  shop {v2[:7]}: gitopsd: deploy to qa went sideways somehow"
    ) in out, out
    after = sandbox.history("staging")
    assert [(d["id"], d["commit"], d["tree"], d["kind"], d["result"], d["actor"]) for d in after] == [
        (d["id"], d["commit"], d["tree"], d["kind"], d["result"], d["actor"]) for d in before["staging"]
    ]
    with Daemon(sandbox) as daemon:
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        daemon.wait_state("qa", "in-sync", v2)
        assert sandbox.runs() == runs, "nothing was deployed again"
        sandbox.command("promote", "staging", "production")
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
    assert sandbox.tree(sandbox.head("production")) == sandbox.tree(v2)


def test_db_rebuild_restores_sign_offs_release_candidates_and_approvals_so_the_release_still_reaches_production(short_tmp):
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]},
        env_options={
            "staging": {"signoff_by": ["sf-alice"]},
            "production": {
                "require_signoff": {"env": "staging", "count": 1},
                "approvals": {"required": 2, "approvers": ["group:approvers"]},
            },
        },
        extra={
            "groups": {"approvers": ["sf-bob", "sf-carol"]},
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
        },
    )
    base = f"http://127.0.0.1:{port}/api/v1/repos/shop"

    def post(path: str, token: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 201

    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 30, "the API up")
        sandbox.write("app.txt", "release 2")
        v2 = sandbox.commit("release 2")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", v2)
        sandbox.command("promote", "qa", "staging")
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        alice, bob, carol = (
            sandbox.command("token", "create", name, "--scope", "approvals:write").stdout.strip()
            for name in ("sf-alice", "sf-bob", "sf-carol")
        )
        post("/environments/staging/signoffs", alice, {"note": "tested by hand"})
        post("/rcs", alice, {"name": "r2"})
        post("/rcs/r2/approvals", bob, {"kind": "approve", "note": "ok"})
        post("/rcs/r2/approvals", carol, {"kind": "approve", "note": "ok too"})
    _remove_store(sandbox)
    out = sandbox.command("db", "rebuild").stdout
    assert "shop: 1 sign-off, 1 release candidate, 2 approvals restored" in out, out
    assert "could not be read" not in out, out
    shown = json.loads(sandbox.command("rc", "show", "r2", "--json").stdout)
    assert shown["state"] == "approved" and shown["approved_by"] == ["sf-bob", "sf-carol"]
    again = sandbox.command("db", "rebuild").stdout  # twice is once: nothing is written a second time
    assert "restored" not in again and "records were already in the store: kept" in again, again
    assert json.loads(sandbox.command("rc", "show", "r2", "--json").stdout) == shown
    with Daemon(sandbox) as daemon:
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        sandbox.command("promote", "rc/r2", "production")
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
    assert sandbox.tree(sandbox.head("production")) == sandbox.tree(v2)


def test_a_deployment_that_ends_after_the_store_is_lost_is_not_written_but_its_note_says_how_it_ended(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("SLEEP", "6")
        slow = sandbox.commit("a slow deployment")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "deploying", slow)
        _remove_store(sandbox)
        daemon.wait_for(lambda: "was deleted while the daemon had it open" in daemon.log(), 10, "the error line")
        note = daemon.wait_for(
            lambda: git(
                sandbox.root, "--git-dir", str(sandbox.repo), "log", "-1", "--notes=gitopsd", "--format=%N", slow
            ).stdout.strip(),
            30,
            "the note",
        )
        assert "gitopsd: deploy to qa succeeded (deployment #" in note
        assert "deployment worker failed" not in daemon.log() and "Traceback" not in daemon.log()
    assert not _db(sandbox).exists()


SERVICE, GROUP = "gt-sf-svc", "gt-sf"  # this file's own user: the daemon's, owner of the state folder


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a Unix user: root only")
def test_a_backup_made_by_root_belongs_to_the_daemons_user_and_so_does_its_folder(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
    with unix_users((SERVICE,), GROUP):
        shutil.chown(sandbox.state, SERVICE, GROUP)
        made = sandbox.command("db", "backup").stdout
        copy = Path(made.split(" to ", 1)[1].split(";", 1)[0])
        assert copy.parent == sandbox.state / "backups" and copy.name.startswith("state-")
        for path in (copy, copy.parent):
            assert pwd.getpwuid(path.stat().st_uid).pw_name == SERVICE
        assert copy.stat().st_mode & 0o777 == 0o640
        restored = sandbox.command("db", "restore", str(copy))
        assert pwd.getpwuid(_db(sandbox).stat().st_uid).pw_name == SERVICE, restored.stdout


def test_a_clean_stop_leaves_the_state_database_whole_with_no_write_ahead_log_for_readers_to_recover(short_tmp):
    """Every connection the daemon holds (its readers for /metrics, `status`, the sweeps) closes before its writer,
    the last, which folds the log into state.db: readers after the stop (the hook's Python as the git user, `history`)
    open one file, not a log they must read again on every start."""
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        sweep_interval=1,
        converged=True,
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"]}}},  # the dashboard on: its readers too
        },
    )
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            assert b"gitopsd_deployments_total" in answer.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=30) as answer:
            assert answer.status == 200
        assert sandbox.command("status", "--json").returncode == 0  # asked of the daemon: its status reader opens
        sandbox.write("app.txt", "one more")
        commit = sandbox.commit("one more")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", commit)
        assert (sandbox.state / "state.db-wal").exists()
        assert daemon.stop() == 0
    assert sorted(p.name for p in sandbox.state.glob("state.db*")) == ["state.db"], daemon.log()[-3000:]
