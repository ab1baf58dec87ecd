"""An idle daemon sleeps until something is due (issue 28: at 1,000 repositories its wake-ups between sweeps were about
0.25 % of a core). Real: the daemon as a process with its HTTP API, its threads' voluntary context switches read from
/proc (a thread that blocks until something happens switches only when it does).
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from tests.support import Daemon, Sandbox, free_port


def wakeups(pid: int) -> int:
    """Voluntary context switches of all the process's threads so far: each is a wake-up after a wait."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:  # a thread that ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches:"))
    return total


def test_an_idle_daemon_with_its_api_wakes_about_once_a_second_and_renders_metrics_only_once_scraped(tmp_path):
    port = free_port()
    api = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens.yml")}
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]}, extra={"api": api}, converged=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", timeout=180)
        daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 60, "the API up")
        time.sleep(2)  # the deployment's last looks and timers
        before, t0 = wakeups(daemon.proc.pid), time.monotonic()
        time.sleep(5)
        per_second = (wakeups(daemon.proc.pid) - before) / (time.monotonic() - t0)
        # At 1,000 repositories the first rendering of /metrics was most of an idle daemon's CPU: none until scraped.
        assert "metrics: rendered" not in daemon.log()
        url = f"http://127.0.0.1:{port}/metrics"
        daemon.wait_for(
            lambda: b"gitopsd_deployments_total{" in urllib.request.urlopen(url, timeout=30).read(), 120, "the store's figures"
        )
    # Before: the main loop each second, the nudge and control sockets twice a second, uvicorn ten times: about 15.
    # Now uvicorn's tick, once a second (its Date header), and whatever the machine's load adds.
    assert per_second < 5, f"{per_second:.1f} wake-ups a second"
