"""A leader and its standby: two real `gitopsd run` processes, one real PostgreSQL, one shared repository path.

The two daemons share the bare repository (the "shared path" layout of docs/install.md, "Standby daemon"),
each with its own state folder, runtime folder and API port, as two machines would have.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import yaml

from tests.e2e.test_service import NotifySocket
from tests.support import Daemon, Sandbox, free_port
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.usefixtures("postgres_server")


class Second:
    """The same sandbox seen from the second daemon's machine: its own config file (state, runtime, API port)."""

    def __init__(self, sandbox: Sandbox, port: int | None = None, database: str | None = None):
        self.sandbox = sandbox
        data = yaml.safe_load(sandbox.config.read_text())
        data.update({"state_dir": str(sandbox.root / "state-b"), "runtime_dir": str(sandbox.root / "run-b")})
        if port is not None:
            data["api"] = {**data["api"], "listen": f"127.0.0.1:{port}"}
        if database is not None:
            data["database"] = database
        self.config = sandbox.root / "gitopsd-b.yml"
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        (sandbox.root / "state-b").mkdir()
        self.root = sandbox.root

    def environ(self, **extra: str) -> dict[str, str]:
        return self.sandbox.environ(GITOPSD_CONFIG=str(self.config), **extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sandbox, name)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sleeping(seconds: str, sandbox: Sandbox) -> int:
    """How many `sleep SECONDS` of this test's playbook runs live (other tests' runs carry another output folder)."""
    count = 0
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:2] == ["sleep", seconds] and proc.environ().get("GITOPSD_TEST_OUT") == str(sandbox.out):
                count += 1
        except psutil.Error:
            continue
    return count


def status_saying(sandbox: Sandbox, words: str) -> str | None:
    out = sandbox.command("status").stdout
    return out if words in out else None


def epochs(url: str) -> list[tuple[int, str, str, int]]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT id, env, result, epoch FROM deployments ORDER BY id").fetchall()


@pytest.fixture
def pair(short_tmp, postgres_url):
    port_a, port_b = free_port(), free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={"database": postgres_url, "api": {"listen": f"127.0.0.1:{port_a}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    return sandbox, Second(sandbox, port_b), port_a, port_b, postgres_url


@pytest.fixture(autouse=True)
def _no_leftover_sleep(short_tmp):
    yield
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:1] == ["sleep"] and proc.environ().get("GITOPSD_TEST_OUT", "").startswith(str(short_tmp)):
                proc.kill()
        except psutil.Error:
            continue


def test_the_standby_waits_ready_then_takes_over_a_killed_leader_within_ten_seconds(pair):
    sandbox, second, port_a, port_b, url = pair
    notify_a, notify_b = NotifySocket(sandbox.root / "a.sock"), NotifySocket(sandbox.root / "b.sock")
    leader = Daemon(sandbox, NOTIFY_SOCKET=str(notify_a.path))
    leader.wait_state("qa", "in-sync", sandbox.head("qa"))
    assert "this gitopsd leads now (epoch 1)" in leader.log()
    standby = Daemon(second, NOTIFY_SOCKET=str(notify_b.path))
    try:
        notify_b.wait("READY=1")
        name_a = f"{os.uname().nodename}:{sandbox.state}"
        status = notify_b.fields("STATUS=standby: the leader is")
        assert status and f"the leader is {name_a} (epoch 1" in status[0][1]
        assert notify_a.fields("STATUS=leader (epoch 1)")
        # /metrics says which one leads; the standby's API sends callers to the leader
        assert "gitopsd_leader 1.0" in get(port_a, "/metrics")[1]
        code, text = get(port_b, "/metrics")
        assert code == 200 and "gitopsd_leader 0.0" in text and "gitopsd_leader_epoch 1.0" in text
        assert "gitopsd_deployments_total" not in text  # counted once, by the leader
        code, text = get(port_b, "/api/v1/health")
        assert code == 503 and f"this gitopsd is the standby; the leader is {name_a}" in json.loads(text)["message"]
        shown = leader.wait_for(lambda: status_saying(sandbox, "standby"), 20, "the standby in gitopsd status")
        assert f"leader   {name_a}" in shown and f"standby  {os.uname().nodename}:{sandbox.root / 'state-b'}" in shown

        # a deployment the leader is running when it is killed
        sandbox.write("SLEEP", "6")
        slow = sandbox.commit("slow")
        sandbox.push("main", "main:qa")
        leader.wait_for(lambda: sleeping("6", sandbox), 30, "the slow deployment running on the leader")
        killed_at = time.monotonic()
        leader.proc.kill()
        leader.proc.wait()
        standby.wait_for(lambda: "this gitopsd leads now (epoch 2)" in standby.log(), 15, "the takeover")
        took = time.monotonic() - killed_at
        assert took < 10, f"the standby took over after {took:.1f} s"
        notify_b.wait("STATUS=leader (epoch 2)")
        # the interrupted run is said, its leftover processes reaped; the environment converges, one run at a time
        most = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            most = max(most, sleeping("6", sandbox))
            if any(d["commit"] == slow and d["result"] == "succeeded" for d in sandbox.history("qa")):
                break
            time.sleep(0.05)
        assert most <= 1
        rows = [(r[2], r[3]) for r in epochs(url) if r[1] == "qa"]
        assert rows[-2:] == [("interrupted", 2), ("succeeded", 2)], rows  # interrupted: marked by the new leader
        standby.wait_state("qa", "in-sync", slow)
        name_b = f"{os.uname().nodename}:{sandbox.root / 'state-b'}"
        shown = standby.wait_for(lambda: status_saying(sandbox, f"leader   {name_b}"), 20, "the new leader in status")
        assert f"leader   {name_a} (" not in shown  # the killed leader's row went with its lead
        # the shared repository's hooks now point at the new leader: a push deploys at once
        sandbox.remove("SLEEP")
        fix = sandbox.commit("fast again")
        sandbox.push("main", "main:qa")
        standby.wait_state("qa", "in-sync", fix)

        # the old leader, started again, is the standby; a clean stop of the leader hands over at once
        again = Daemon(sandbox, NOTIFY_SOCKET=str(notify_a.path))
        again.wait_for(lambda: "standby: the leader is" in again.log(), 30, "the restarted daemon as the standby")
        stopped_at = time.monotonic()
        assert standby.stop() == 0
        again.wait_for(lambda: "this gitopsd leads now (epoch 3)" in again.log(), 10, "the handover")
        assert time.monotonic() - stopped_at < 8
        again.wait_state("qa", "in-sync", fix)
        again.stop()
    finally:
        standby.stop()
        leader.stop()


def test_a_leader_cut_off_and_back_records_and_starts_nothing_and_steps_down(pair):
    """Two leaders for a moment: the old one's session was dropped by the server (a network cut) while it was paused."""
    sandbox, second, _port_a, _port_b, url = pair
    leader = Daemon(sandbox)
    leader.wait_state("qa", "in-sync", sandbox.head("qa"))
    standby = Daemon(second)
    try:
        standby.wait_for(lambda: "standby: the leader is" in standby.log(), 30, "the standby")
        sandbox.write("SLEEP", "7")
        slow = sandbox.commit("slow")
        sandbox.push("main", "main:qa")
        leader.wait_for(lambda: sleeping("7", sandbox), 30, "the slow deployment running on the leader")
        before = epochs(url)
        os.kill(leader.proc.pid, signal.SIGSTOP)
        with psycopg.connect(url, autocommit=True) as db:  # the server gives up on the paused leader's session
            held = db.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchall()
            assert len(held) == 1
            db.execute("SELECT pg_terminate_backend(%s)", (held[0][0],))
        standby.wait_for(lambda: "this gitopsd leads now (epoch 2)" in standby.log(), 15, "the takeover")
        standby.wait_for(lambda: any(r[2] == "running" and r[3] == 2 for r in epochs(url)), 30, "the new leader deploying")
        os.kill(leader.proc.pid, signal.SIGCONT)
        assert leader.proc.wait(30) == 75
        assert "this gitopsd no longer leads (epoch 1)" in leader.log()
        standby.wait_result("qa", slow, "succeeded", timeout=60)
        after = epochs(url)
        old_rows = {r[0] for r in before}
        assert all(r[3] == 2 for r in after if r[0] not in old_rows)  # nothing new from the old leader
        interrupted = [r for r in after if r[0] in old_rows and r[2] == "interrupted"]
        assert len(interrupted) == 1 and interrupted[0][3] == 2, after
    finally:
        try:
            os.kill(leader.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        standby.stop()
        leader.stop()


def test_a_leader_cut_off_from_the_database_stops_its_run_before_the_standby_starts_it(short_tmp, postgres_server, postgres_url):
    """The leader's link to PostgreSQL goes silent (no FIN); the server drops its session 6 s later, as keepalives do."""
    proxy = CuttableProxy(postgres_server.port)
    through_proxy = postgres_url.replace(f":{postgres_server.port}/", f":{proxy.port}/")
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"database": through_proxy})
    second = Second(sandbox, database=postgres_url)
    leader = Daemon(sandbox)
    standby = None
    try:
        leader.wait_state("qa", "in-sync", sandbox.head("qa"))
        standby = Daemon(second)
        standby.wait_for(lambda: "standby: the leader is" in standby.log(), 30, "the standby")
        time.sleep(2.5)  # the leader's heartbeat has seen the standby waiting
        sandbox.write("SLEEP", "9")
        slow = sandbox.commit("slow")
        sandbox.push("main", "main:qa")
        leader.wait_for(lambda: sleeping("9", sandbox), 30, "the slow deployment running on the leader")
        cut = time.monotonic()
        proxy.cut(server_notices=6)
        old_run_ended = standby_running = None
        most = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and standby_running is None:
            count = sleeping("9", sandbox)
            most = max(most, count)
            if count == 0 and old_run_ended is None:
                old_run_ended = time.monotonic() - cut
            if any(r[2] == "running" and r[3] == 2 for r in epochs(postgres_url)):
                standby_running = time.monotonic() - cut
            time.sleep(0.05)
        assert old_run_ended is not None and standby_running is not None, (old_run_ended, standby_running)
        assert old_run_ended < 5, f"the cut-off leader's run went on for {old_run_ended:.1f} s"
        assert 6 <= standby_running < 10, standby_running
        print(f"cut: old run ended after {old_run_ended:.2f} s, the standby deploying after {standby_running:.2f} s")
        assert old_run_ended < standby_running and most == 1
        assert leader.proc.wait(30) == 75
        assert "could not be confirmed" in leader.log() and "this gitopsd no longer leads (epoch 1)" in leader.log()
        # the records as the new leader sees them (the old config's database is behind the cut)
        standby.wait_for(
            lambda: [r[2:] for r in epochs(postgres_url)][-2:] == [("interrupted", 2), ("succeeded", 2)],
            60,
            "the interrupted run marked and run again",
        )
        assert slow
    finally:
        if standby is not None:
            standby.stop()
        leader.stop()
        proxy.close()


def test_a_single_daemon_on_postgresql_leads_alone_and_says_so(short_tmp, postgres_url):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"database": postgres_url})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        out = daemon.wait_for(lambda: status_saying(sandbox, "leader "), 20, "the leader line")
        assert "standby" not in out
    assert Path(sandbox.state / "hook-ledger.db").exists()
