"""The daemon's /metrics scraped by a real Prometheus, with the shipped alerts and dashboard (docs/monitoring.md).

Real: `gitopsd run` with its HTTP API on loopback, git pushes through the installed hook, ansible-playbook,
Debian's prometheus and promtool. One scenario runs once for the module (deployments to qa and production,
a verification check, a refused push, a failed production deployment and its automatic rollback), and each
test reads what Prometheus made of it while the daemon still runs.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.prometheus_fixture import prometheus
from tests.support import ROOT, Daemon, Sandbox, free_port

ALERTS = ROOT / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
VERIFY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: the release answers
      ansible.builtin.debug:
        msg: ok
"""


@pytest.fixture(scope="module")
def scenario():
    root = Path(tempfile.mkdtemp(prefix="gm-", dir="/tmp"))
    port = free_port()
    box = Sandbox(
        root / "box",
        {"qa": ["qa-1"], "production": ["prod-1"]},
        env_options={"production": {"auto_rollback": True}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(root / "tokens.yml")}},
    )
    box.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    try:
        with prometheus(root / "prometheus", f"127.0.0.1:{port}", [ALERTS]) as prom:
            daemon = Daemon(box)
            Daemon.started.remove(daemon)  # it must outlive each test of this module: stopped below
            try:
                daemon.wait_state("qa", "in-sync")
                daemon.wait_state("production", "in-sync")
                prom.wait_for('gitopsd_deployments_total{env="production", result="succeeded"} > 0')
                # From v2 on, production runs a verification playbook (a check) after each deployment.
                box.env_options["production"]["verify"] = {"playbook": "playbooks/verify.yml"}
                box.write_config()
                daemon.proc.send_signal(signal.SIGHUP)
                daemon.wait_for(lambda: "configuration reloaded" in daemon.log(), 30, "the reload")
                box.write("playbooks/verify.yml", VERIFY)
                box.write("app.txt", "v2")
                v2 = box.commit("v2")
                box.push("main", "main:qa")
                daemon.wait_state("qa", "in-sync", v2)
                box.command("promote", "qa", "production")
                daemon.wait_state("production", "in-sync", box.head("production"))
                box.write("app.txt", "v3")
                box.commit("v3 straight to qa, never pushed to main")
                refused = box.push("main:qa", check=False)
                assert refused.returncode != 0 and "qa only takes trees from main" in refused.stderr
                box.write("FAIL", "prod-1")
                v4 = box.commit("v4 breaks production only")
                box.push("main", "main:qa")
                daemon.wait_state("qa", "in-sync", v4)
                box.command("promote", "qa", "production")
                daemon.wait_for(
                    lambda: any(d["kind"] == "rollback" and d["result"] == "succeeded" for d in box.history("production")),
                    120,
                    "the automatic rollback",
                )
                prom.wait_for('gitopsd_rollbacks_total{env="production", cause="automatic"} > 0')
                # The DORA figures are kept a minute unless production moved: the rollback's rendering has them.
                prom.wait_for('gitopsd_dora_recovery_time_median_seconds{repo="shop"} >= 0', timeout=30)
                yield box, prom, daemon
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_promtool_accepts_the_shipped_alert_rules():
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_no_leader_fires_only_when_every_daemon_is_a_standby_for_a_minute(tmp_path):
    """promtool's rule tests: a leader and its standby, the leader gone and the standby not taking over."""
    cases = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {"series": 'gitopsd_leader{instance="a:8470"}', "values": "1x8 stale"},  # killed after 2 min: its series ends
                    {"series": 'gitopsd_leader{instance="b:8470"}', "values": "0x20"},
                ],  # never takes over
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "GitopsdNoLeader", "exp_alerts": []},
                    {"eval_time": "2m30s", "alertname": "GitopsdNoLeader", "exp_alerts": []},  # pending: not a minute yet
                    {
                        "eval_time": "4m",
                        "alertname": "GitopsdNoLeader",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "gitopsd: no daemon leads; nothing is deployed",
                                    "description": "See `journalctl -u gitopsd` on each deploy server and `gitopsd status` (its daemons list).",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "no_leader_test.yml"
    path.write_text(yaml.safe_dump(cases))
    tested = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_scrape_of_the_daemon_passes_promtool_check_metrics(scenario):
    box, _prom, _daemon = scenario
    with urllib.request.urlopen(box.metrics_url, timeout=10) as answer:
        body = answer.read()
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = body.decode()
    for name in (
        "gitopsd_environment_info",
        "gitopsd_deployments_total",
        "gitopsd_deployment_duration_seconds_bucket",
        "gitopsd_last_successful_deployment_timestamp_seconds",
        "gitopsd_lead_time_seconds_bucket",
        "gitopsd_pushes_refused_total",
        "gitopsd_checks_total",
        "gitopsd_rollbacks_total",
        "gitopsd_drifted_hosts",
        "gitopsd_deployments_running",
        "gitopsd_deployments_queued",
    ):
        assert f"\n{name}{{" in text, name
    assert 'gitopsd_checks_total{env="production",repo="shop",result="passed",type="playbook"}' in text


def test_a_refused_push_is_counted_by_its_rule(scenario):
    _box, prom, _daemon = scenario
    found = prom.query('gitopsd_pushes_refused_total{repo="shop"}')
    assert [(s["metric"]["env"], s["metric"]["rule"], s["value"][1]) for s in found] == [("qa", "not-on-source", "1")]


def test_a_failed_deployment_and_the_automatic_rollback_fire_their_alerts_in_prometheus(scenario):
    _box, prom, daemon = scenario
    deadline = time.monotonic() + 30
    firing: set[tuple[str, str]] = set()
    while (
        time.monotonic() < deadline
        and not {("GitopsdDeploymentFailed", "production"), ("GitopsdAutomaticRollback", "production")} <= firing
    ):
        firing = {(a["labels"]["alertname"], a["labels"].get("env", "")) for a in prom.alerts() if a["state"] == "firing"}
        time.sleep(0.5)
    assert ("GitopsdDeploymentFailed", "production") in firing, prom.alerts()
    assert ("GitopsdAutomaticRollback", "production") in firing, prom.alerts()
    assert not any(name in ("GitopsdEnvironmentStalled", "GitopsdDriftDetected") for name, _env in firing)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, with Grafana's variables as the test sets them."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"$__range_s": "900", "$__range": "15m", "$repo": "shop", "$env": ".+"}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, (panel["title"], expr)
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_panel_gets_data_from_prometheus(scenario):
    _box, prom, _daemon = scenario
    queries = panel_queries()
    assert len(queries) >= 20
    empty = []
    for title, expr in queries:
        samples = prom.query(expr)
        if not any(re.fullmatch(r"-?[0-9.e+-]+", s["value"][1]) for s in samples):  # NaN or nothing: no data
            empty.append((title, expr, samples))
    assert not empty, "\n".join(f"{t}: {e} -> {s}" for t, e, s in empty)
