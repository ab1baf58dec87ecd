"""The running daemon with a metrics totals file it cannot use: it goes on, says so in one line, and /metrics counts.

Real: `gitopsd run` with its HTTP API on loopback, a deployment through ansible-runner, /metrics scraped over HTTP.
"""

from __future__ import annotations

import urllib.request

from gitopsd.services.metricsfile import NAME
from tests.support import Daemon, Sandbox, free_port

QA_SUCCEEDED = 'gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="succeeded"}'


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (loopback, this test's daemon)
        assert answer.status == 200
        return answer.read().decode()


def test_a_garbled_totals_file_leaves_the_daemon_running_with_one_line_and_its_figures_added_up_again(short_tmp):
    port = free_port()
    api = {"listen": f"127.0.0.1:{port}", "tokens_file": "tokens.yml"}
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"api": api}, converged=True)  # the store's figures: one deployment
    box.state.mkdir(exist_ok=True)
    (box.state / NAME).write_text("[" * 100000)  # JSON nested past the parser's depth
    with Daemon(box) as daemon:
        daemon.wait_state("qa", "in-sync", box.head("qa"))
        url = f"http://127.0.0.1:{port}/metrics"
        daemon.wait_for(lambda: QA_SUCCEEDED in scrape(url), 60, "the store's figures on /metrics")
        assert f"{QA_SUCCEEDED} 1.0" in scrape(url)
        log = daemon.log()
    said = [line for line in log.splitlines() if NAME in line]
    assert len(said) == 1 and "added up again" in said[0], said
    assert "Traceback" not in log, log[-4000:]
