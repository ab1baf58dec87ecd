"""Running as a systemd service, tested for real without systemd as PID 1: the unit through
systemd-analyze, the notify protocol on a real AF_UNIX datagram socket, signals on the real daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gitopsd.gate.snapshot import file_stamp
from gitopsd.installers.service import render_unit
from tests.support import GITOPSD, Daemon, Sandbox, run

ROOT = Path(__file__).resolve().parents[2]
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    path = tmp_path / "gitopsd.service"
    path.write_text(
        render_unit(str(Path(sys.executable).parent / "gitopsd"), Path("/etc/gitopsd/gitopsd.yml"), "gitopsd", "gitopsd")
    )
    return path


@needs_analyze
def test_the_unit_verifies_without_a_single_warning(unit):
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""


@needs_analyze
def test_the_unit_scores_2_6_or_better_in_systemd_analyze_security(unit):
    # 1.4 before the playbook sandbox: bubblewrap needs user, mount and PID namespaces, its mount
    # system calls, and a /proc with nothing mounted over it (docs/install.md, "Run it as a service");
    # 2.5 before CI steps and inventory reads lost the network: a network namespace and netlink (+0.1).
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=26", str(unit)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Overall exposure level for gitopsd.service: 2." in proc.stdout


def test_every_hardening_directive_carries_a_comment_saying_why():
    lines = (ROOT / "systemd" / "gitopsd.service").read_text().splitlines()
    start = lines.index(next(l for l in lines if l.startswith("# --- Hardening")))
    end = lines.index("[Install]")
    directives = [i for i in range(start + 1, end) if lines[i].strip() and not lines[i].startswith("#")]
    assert len(directives) >= 25
    for i in directives:
        assert lines[i - 1].startswith("#"), f"line {i + 1} ({lines[i]}) has no comment above it saying why"


def test_install_service_dry_run_says_what_it_would_do_and_changes_nothing(tmp_path):
    out = run([*GITOPSD, "install-service", "--dry-run", "--root", str(tmp_path)]).stdout
    assert "would do:" in out and "gitopsd.service" in out and "systemctl enable --now gitopsd" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd")
def test_install_service_into_a_temporary_root(tmp_path):
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), tmp_path / "etc" / name)
    # install-service runs after `gitopsd init`, which writes the config (it writes none itself).
    (tmp_path / "etc/gitopsd").mkdir()
    (tmp_path / "etc/gitopsd/gitopsd.yml").write_text("repositories: [{name: shop, path: /srv/git/shop.git}]\n")
    out = run([*GITOPSD, "install-service", "--root", str(tmp_path), "--user", "gitopsd-test"]).stdout
    unit = (tmp_path / "etc/systemd/system/gitopsd.service").read_text()
    assert f"ExecStart={Path(sys.executable).parent / 'gitopsd'} run --config /etc/gitopsd/gitopsd.yml" in unit
    assert "User=gitopsd-test" in unit
    assert any(l.startswith("gitopsd-test:") for l in (tmp_path / "etc/passwd").read_text().splitlines())
    assert "journalctl -u gitopsd -f" in out
    again = run([*GITOPSD, "install-service", "--root", str(tmp_path), "--user", "gitopsd-test"]).stdout
    assert "create system user" not in again  # idempotent


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            for field in data.decode().split("\n"):
                self.messages.append((time.monotonic(), field))

    def fields(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, f) for t, f in self.messages if f.startswith(prefix)]

    def wait(self, prefix: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.fields(prefix)
            if found:
                return found[0][0]
            time.sleep(0.02)
        raise AssertionError(f"no {prefix} in {self.messages}")


pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]}, env_options={"staging": {"promote_from": "main"}})


def test_notify_ready_after_the_first_sweep_status_during_deploys_watchdog_pings_and_stopping(sandbox):
    notify = NotifySocket(sandbox.root / "notify.sock")
    with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="600000") as daemon:
        ready_at = notify.wait("READY=1")
        # The first sweep has looked at every environment before READY: both deployments were started.
        assert daemon.log().count("deploying ") >= 2
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        # The start's adoption over (STATUS= says "adopting: ..." until nothing runs): the next status is plain.
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))

        def adopted() -> bool:
            last = max([ready_at] + [t for t, _ in notify.fields("STATUS=adopting")])
            return any(t > last for t, _ in notify.fields("STATUS=watching 2 environments"))

        daemon.wait_for(adopted, 30, "adoption done")
        sandbox.write("SLEEP", "2")
        slow = sandbox.commit("slow")
        sandbox.push("main", "main:qa")
        deploying = daemon.wait_for(lambda: notify.fields(f"STATUS=deploying qa {slow[:7]}"), 20, "deploying status")
        daemon.wait_state("qa", "in-sync", slow)
        daemon.wait_for(
            lambda: [t for t, _ in notify.fields("STATUS=watching 2 environments") if t > deploying[0][0]],
            10,
            "watching status after the deployment",
        )
        # WATCHDOG_USEC=0.6 s: pings every 0.2 s, well under half the deadline.
        t0 = time.monotonic()
        time.sleep(2)
        pings = [t for t, _ in notify.fields("WATCHDOG=1") if t0 <= t <= t0 + 2]
        assert 6 <= len(pings) <= 14, len(pings)
        assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 0.3
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(20) == 0
        notify.wait("STOPPING=1")
    assert ready_at < notify.wait("STOPPING=1")
    # No child ever saw NOTIFY_SOCKET.
    assert all("notify=none" in line for line in sandbox.runs()), sandbox.runs()


def test_watchdog_pings_stop_when_the_main_loop_is_wedged(sandbox):
    notify = NotifySocket(sandbox.root / "notify.sock")
    daemon = Daemon(sandbox, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="300000", GITOPSD_TRIGGERS="nudge")
    try:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        notify.wait("WATCHDOG=1")
        # Wedge the loop for real: the next look opens a branch that is a FIFO nobody writes to.
        ref = sandbox.repo / "refs" / "heads" / "staging"
        ref.unlink()
        os.mkfifo(ref)
        from gitopsd.gate.nudge import Nudge, send

        send(sandbox.runtime / "nudge.sock", Nudge(repo=str(sandbox.repo), trigger="push"))
        time.sleep(1.0)
        t0 = time.monotonic()
        time.sleep(1.5)
        assert [t for t, _ in notify.fields("WATCHDOG=1") if t > t0] == []
    finally:
        daemon.proc.kill()
        daemon.stop()


def test_sighup_reloads_a_good_config_and_refuses_a_broken_one_without_interrupting_a_deployment(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        sandbox.write("SLEEP", "3")
        slow = sandbox.commit("slow")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "deploying")
        good = yaml.safe_load(sandbox.config.read_text())
        sandbox.config.write_text("repositories: [broken\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: "reload refused, keeping the running configuration" in daemon.log(), 10, "refusal")
        good["sweep_interval"] = 123
        sandbox.config.write_text(yaml.safe_dump(good))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: "configuration reloaded" in daemon.log(), 10, "reload")
        # The hook's snapshot is of the reloaded file, so pushes read no YAML.
        with sqlite3.connect(sandbox.state / "state.db") as db:
            stamp = db.execute("SELECT stamp FROM gate_config WHERE config = ?", (str(sandbox.config.resolve()),)).fetchone()
        assert stamp == (file_stamp(str(sandbox.config)),)
        daemon.wait_state("qa", "in-sync", slow)
        # After the reload, pushes still deploy.
        sandbox.remove("SLEEP")
        after = sandbox.commit("after reload")
        sandbox.push("main", "main:qa")
        daemon.wait_state("qa", "in-sync", after)
    results = [d["result"] for d in sandbox.history("qa") if d["commit"] == slow]
    assert results == ["succeeded"]


def test_a_bad_config_is_refused_before_the_daemon_starts(sandbox):
    sandbox.config.write_text(sandbox.config.read_text() + "surprise: 1\n")
    proc = subprocess.run(
        [*GITOPSD, "run", "--config", str(sandbox.config)], capture_output=True, text=True, env=sandbox.environ(), timeout=30
    )
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "surprise: unknown key" in proc.stderr


def test_journald_lines_have_no_timestamp_and_json_lines_name_repo_env_commit_and_deployment(sandbox):
    env = sandbox.environ(JOURNAL_STREAM="8:1234")
    proc = subprocess.Popen([*GITOPSD, "run", "--config", str(sandbox.config)], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    _wait_in_sync(sandbox)
    proc.send_signal(signal.SIGTERM)
    plain = proc.communicate(timeout=30)[1]
    deploying = next(l for l in plain.splitlines() if "deploying" in l)
    assert deploying.startswith("info: [shop/qa ") and "#1]" in deploying  # no timestamp, names all four

    sandbox.write("x", "y")
    commit = sandbox.commit("json")
    sandbox.push("main", "main:qa")
    proc = subprocess.Popen(
        [*GITOPSD, "run", "--config", str(sandbox.config), "--log-format", "json"],
        env=sandbox.environ(),
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_in_sync(sandbox, commit)
    proc.send_signal(signal.SIGTERM)
    lines = [json.loads(l) for l in proc.communicate(timeout=30)[1].splitlines()]
    done = next(l for l in lines if "deployment succeeded" in l["message"])
    labels = done["labels"]  # Elastic Common Schema names (docs/monitoring.md, "Logs for ELK")
    assert labels["repo"] == "shop" and labels["env"] == "qa" and labels["commit"] == commit[:7]
    assert labels["deployment"].isdigit() and done["log.level"] == "info" and "@timestamp" in done


def _wait_in_sync(sandbox: Sandbox, commit: str | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = sandbox.status()
        if all(r["state"] == "in-sync" for r in status.values()) and (commit is None or status["qa"]["deployed"] == commit):
            return
        time.sleep(0.2)
    raise AssertionError(f"not in sync: {sandbox.status()}")


def test_adoption_deploys_max_parallel_at_a_time_shows_the_rest_queued_and_counts_down_in_status(short_tmp):
    envs = {name: [f"{name}-1"] for name in ("dev", "qa", "uat")}
    sandbox = Sandbox(short_tmp, envs, env_options={name: {"promote_from": "main"} for name in envs}, extra={"max_parallel": 1})
    sandbox.write("SLEEP", "2")
    sandbox.commit("slow enough to see the queue")
    sandbox.push("main", *(f"main:{name}" for name in envs))
    notify = NotifySocket(sandbox.root / "notify.sock")
    with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path)) as daemon:
        notify.wait("READY=1")
        states = daemon.wait_for(
            lambda: (
                sorted(r["state"] for r in sandbox.status().values())
                if "queued" in [r["state"] for r in sandbox.status().values()]
                else None
            ),
            30,
            "queued",
        )
        assert states == ["deploying", "queued", "queued"]
        for name in envs:
            daemon.wait_state(name, "in-sync", sandbox.head(name), timeout=60)
    adopting = [f for _t, f in notify.fields("STATUS=adopting")]
    assert adopting[0].startswith("STATUS=adopting: 0 of 3 environments; deploying ")
    assert any(f.startswith("STATUS=adopting: 2 of 3 environments") for f in adopting)
    # Queue time is not deployment time: each one started when its worker took it, one after the other.
    runs = sorted(sandbox.history(), key=lambda d: d["started_at"])
    assert [d["result"] for d in runs] == ["succeeded"] * 3
    assert len({d["started_at"] for d in runs}) == 3


def test_a_notify_socket_nobody_reads_never_holds_up_a_deployment(short_tmp):
    """systemd reads its socket, but a stuck or slow receiver fills the queue: the daemon's notifications must not
    wait for room (a deployment thread sending its STATUS= line hung on one, seen with a test's socket)."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    path = sandbox.root / "notify.sock"
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel's smallest: a few lines fill it
    deaf.bind(str(path))
    try:
        with Daemon(sandbox, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="300000") as daemon:
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            for n in range(3):
                sandbox.write("app.txt", f"release {n}")
                commit = sandbox.commit(f"release {n}")
                sandbox.push("main", "main:qa")
                daemon.wait_state("qa", "in-sync", commit, timeout=60)
            assert daemon.stop() == 0
    finally:
        deaf.close()
