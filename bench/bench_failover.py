"""`make bench` section (l), failover: the leader killed mid-deployment -> the standby deploying (docs/install.md, "Standby daemon").

Two `gitopsd run` share a PostgreSQL on loopback and one repository path (the shared-path layout). Each round kills
the leader (SIGKILL) while it runs a deployment, and times until the standby has marked it interrupted and started
its own deployment of the same commit (its row `running`, written with the new epoch). The killed daemon is then
started again and waits as the standby for the next round. Beside it, in the same run: one daemon killed and
started again at once on the same database (what a restart without a standby gives at best: systemd adds
RestartSec=5 to it).
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import psycopg
import yaml

from tests.postgres_fixture import PgServer
from tests.support import Daemon, Sandbox

SLEEP = "8"  # each deployment runs this long: the kill always finds one running


def _running_after(url: str, after_id: int, timeout: float = 60) -> tuple[float, int, int]:
    """Wait for a deployment above `after_id` to be running; (when, its id, its epoch)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as db:
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT id, epoch FROM deployments WHERE id > %s AND result = 'running' ORDER BY id LIMIT 1", (after_id,)
            ).fetchone()
            if row:
                return time.monotonic(), int(row[0]), int(row[1])
            time.sleep(0.005)
    raise RuntimeError(f"no deployment above #{after_id} started within {timeout:g} s")


def _second_config(sandbox: Sandbox) -> Path:
    data = yaml.safe_load(sandbox.config.read_text())
    data.update({"state_dir": str(sandbox.root / "state-b"), "runtime_dir": str(sandbox.root / "run-b")})
    path = sandbox.root / "gitopsd-b.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (sandbox.root / "state-b").mkdir(exist_ok=True)
    return path


class _Other:
    """The sandbox as the second daemon sees it (its own config file)."""

    def __init__(self, sandbox: Sandbox, config: Path):
        self.sandbox, self.config, self.root = sandbox, config, sandbox.root

    def environ(self, **extra: str) -> dict[str, str]:
        return self.sandbox.environ(GITOPSD_CONFIG=str(self.config), **extra)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.sandbox, name)


def _slow_deployment(sandbox: Sandbox, url: str) -> int:
    """Start a deployment that runs SLEEP seconds on the leader; its id."""
    with psycopg.connect(url, autocommit=True) as db:
        top = db.execute("SELECT COALESCE(MAX(id), 0) FROM deployments").fetchone()[0]
    sandbox.write("SLEEP", SLEEP)
    sandbox.write("round.txt", str(time.time_ns()))
    sandbox.commit("a slow deployment")
    sandbox.push("main", "main:qa")
    _when, dep, _epoch = _running_after(url, top)
    return dep


def bench_failover(root: Path, rounds: int = 5) -> dict:
    server = PgServer()
    daemons: list[Daemon] = []
    try:
        # The standby: kill the leader, time the standby's takeover to a running deployment.
        url = server.create_database()
        sandbox = Sandbox(root / "pair", {"qa": ["qa-1"]}, extra={"database": url})
        other = _Other(sandbox, _second_config(sandbox))
        views = [sandbox, other]
        leader = Daemon(sandbox)
        daemons.append(leader)
        leader.wait_state("qa", "in-sync", sandbox.head("qa"))
        standby = Daemon(other)  # type: ignore[arg-type]
        daemons.append(standby)
        standby.wait_for(lambda: "standby: the leader is" in standby.log(), 60, "the standby")
        takeovers, lead = [], 0  # views[lead] is the leader's
        for _ in range(rounds):
            dep = _slow_deployment(sandbox, url)
            killed = time.monotonic()
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()
            started, _new, _epoch = _running_after(url, dep)
            takeovers.append(started - killed)
            leader, standby = standby, Daemon(views[lead])  # type: ignore[arg-type]  # back, as the standby
            lead = 1 - lead
            daemons.append(standby)
            standby.wait_for(lambda s=standby: "standby: the leader is" in s.log(), 60, "the standby again")
        for d in daemons:
            d.stop()
        # The baseline: one daemon, killed and started again at once.
        url = server.create_database()
        single = Sandbox(root / "single", {"qa": ["qa-1"]}, extra={"database": url})
        daemon = Daemon(single)
        daemons.append(daemon)
        daemon.wait_state("qa", "in-sync", single.head("qa"))
        restarts = []
        for _ in range(rounds):
            dep = _slow_deployment(single, url)
            killed = time.monotonic()
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
            daemon = Daemon(single)
            daemons.append(daemon)
            started, _new, _epoch = _running_after(url, dep)
            restarts.append(started - killed)
        failover, restart = statistics.median(takeovers), statistics.median(restarts)
        return {
            "rounds": rounds,
            "failover_median_s": round(failover, 2),
            "failover_max_s": round(max(takeovers), 2),
            "restart_median_s": round(restart, 2),
            "ratio": round(failover / restart, 2),
            "failovers_s": [round(t, 2) for t in takeovers],
            "restarts_s": [round(t, 2) for t in restarts],
        }
    finally:
        for d in daemons:
            d.stop()
        server.close()
