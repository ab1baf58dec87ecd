"""/metrics' figures from a real store, SQLite and PostgreSQL (gitopsd/metrics.py), and the hook's refusal reports.

Real: the store in a temp folder, prometheus_client's text output, promtool. No daemon: the e2e test
(tests/e2e/test_monitoring.py) has one, scraped by a real Prometheus.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from gitopsd.adapters.store import Store
from gitopsd.core.settings import Config, Environment, Repository
from gitopsd.gate.nudge import REFUSED, Nudge, rule_id
from gitopsd.metrics import Metrics


def config(tmp: Path) -> Config:
    envs = [Environment(name=name, branch=name, promote_from=src, inventory=f"environments/{name}/hosts.yml",
                        playbook="playbooks/deploy.yml") for name, src in (("qa", "main"), ("production", "qa"))]
    return Config(source=tmp / "gitopsd.yml", state_dir=tmp, repositories=[Repository(name="shop", path=tmp / "shop.git",
                                                                                       environments=envs)])


def deploy(store: Store, env: str, n: int, result: str, kind: str = "deploy", trigger: str = "push",
           seconds: float = 3.0, checks: list[tuple[str, bool]] = ()) -> int:
    dep = store.begin(repo="shop", env=env, commit=f"{n:040x}", tree=f"{n:040x}", previous_commit=None, kind=kind,
                      trigger=trigger, actor="test", now=1000.0 + n * 10, queued=result == "queued")
    if result not in ("running", "queued"):
        store.finish(dep, result, now=1000.0 + n * 10 + seconds,
                     detail={"batches": [{"checks": [{"ok": ok, "name": name, "detail": ""} for name, ok in checks]}]})
    return dep


def samples(metrics: Metrics) -> dict[str, float]:
    text = metrics.exposition()[0].decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("gitopsd_") and not line.startswith("gitopsd_process")}


def test_totals_kept_between_scrapes_equal_a_fresh_read_after_a_restart(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    store.record_seen("shop", [(f"{1:040x}", "branch-push")], 900.0, [f"{1:040x}"])
    first_id = deploy(store, "qa", 1, "succeeded", checks=[("http qa-1", True), ("playbook playbooks/verify.yml", True)])
    first = store.get(first_id)
    assert first is not None
    store.record_deployed_commits(first, [first.commit], ("promote",))
    running = deploy(store, "production", 2, "running")
    deploy(store, "qa", 3, "failed", seconds=400, checks=[("prometheus error-rate", False)])
    kept = Metrics(lambda: cfg, store_factory(cfg.database, readonly=True))
    first = samples(kept)
    assert first['gitopsd_deployments_running{env="production",repo="shop"}'] == 1
    assert first['gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="failed"}'] == 1
    store.finish(running, "failed", now=1100.0)
    deploy(store, "production", 4, "succeeded", kind="rollback", trigger="auto-rollback")
    deploy(store, "qa", 5, "queued")
    after = samples(kept)
    restarted = samples(Metrics(lambda: cfg, store_factory(cfg.database, readonly=True)))
    assert after == restarted
    assert after['gitopsd_deployments_total{env="production",kind="deploy",repo="shop",result="failed"}'] == 1
    assert after['gitopsd_rollbacks_total{cause="automatic",env="production",repo="shop"}'] == 1
    assert after['gitopsd_deployments_running{env="production",repo="shop"}'] == 0
    assert after['gitopsd_deployments_queued{env="qa",repo="shop"}'] == 1
    assert after['gitopsd_checks_total{env="qa",repo="shop",result="passed",type="playbook"}'] == 1
    assert after['gitopsd_checks_total{env="qa",repo="shop",result="failed",type="prometheus"}'] == 1
    assert after['gitopsd_deployment_duration_seconds_bucket{env="qa",le="5.0",repo="shop"}'] == 1
    assert after['gitopsd_deployment_duration_seconds_bucket{env="qa",le="600.0",repo="shop"}'] == 2
    # Lead time from when the commit first reached the server (900) to the end of its first deployment (1013),
    # as `gitopsd dora` counts it.
    assert after['gitopsd_lead_time_seconds_sum{env="qa",repo="shop"}'] == 113
    assert after['gitopsd_last_successful_deployment_timestamp_seconds{env="production",repo="shop"}'] == 1043


def test_a_scrape_passes_promtool_check_metrics(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    deploy(store, "qa", 1, "succeeded")
    metrics = Metrics(lambda: cfg, store_factory(cfg.database, readonly=True))
    metrics.refused("shop", "qa", "deploy-window")
    metrics.refused("shop", "nonsense", "free text here")   # never a label: '' and other
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert b'gitopsd_pushes_refused_total{env="",repo="shop",rule="other"} 1.0' in body


def test_each_refusal_rule_has_a_short_stable_id():
    lines = {
        "environment branches cannot be deleted": "delete",
        "environment branches are created by `gitopsd init` only": "create",
        "production waits for its first promotion": "first-promotion",
        "environment branches only move forward (no force-push, no rewritten history)": "non-fast-forward",
        "production only takes trees that were deployed and verified in staging": "not-verified-upstream",
        "qa only takes trees from main": "not-on-source",
        "qa only takes trees that passed its required checks (ci/test)": "required-checks",
        "production only takes trees signed off after manual testing in staging": "signoff",
        "production only takes release candidates with their approvals": "approvals",
        "promotions to production are closed now: the deploy window is closed: outside 'weekdays'": "deploy-window",
        "the deploy window is closed: inside 'freeze'; bob may not override it": "deploy-window",
        "replace refs (refs/replace/*) are not accepted in a deployment repository": "reserved-ref",
        "something new": "other",
    }
    assert {line: rule_id(line) for line in lines} == lines


def test_a_refusal_report_carries_only_environments_and_rule_ids():
    sent = Nudge(repo="/srv/git/shop.git", trigger=REFUSED, refusals=(("qa", "not-on-source"), ("production", "x y")))
    got = Nudge.decode(sent.encode(), 1000)
    assert got is not None and got.trigger == REFUSED
    assert got.refusals == (("qa", "not-on-source"), ("production", "other"))
