"""Production rollout checks that fail a batch (an HTTP check during the bake, a verification playbook, a Prometheus
threshold) and what a failed rollout records per host: the real daemon, real ansible-playbook runs on local hosts, real
HTTP servers standing in for app health and Prometheus. (Split from test_rollout.py so two workers share the rollouts.)"""

from __future__ import annotations

import json
import threading
import time

from tests.rollout_support import Server, batches_of, rollout_sandbox
from tests.support import Daemon, free_port
from tests.webclient import Browser, token, web_up


def test_an_http_check_failing_during_the_bake_fails_the_batch(short_tmp):
    failing = threading.Event()
    server = Server(lambda path: (500, {"ok": False}) if failing.is_set() else (200, {"ok": True}))
    try:
        sandbox = rollout_sandbox(
            short_tmp,
            rollout={"batches": ["50%"], "bake": 3},
            verify={"http": {"url": f"http://127.0.0.1:{server.port}/health", "retries": 0}},
        )
        with Daemon(sandbox) as daemon:
            daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=90)
            good = sandbox.head("production")
            sandbox.write("app.txt", "v2")
            bad = sandbox.commit("v2 degrades after a while")
            sandbox.push("main", "main:production")
            daemon.wait_for(lambda: "rolling out: batch 1/2" in daemon.log(), 30, "batch 1 started")
            time.sleep(1.0)
            failing.set()  # the app goes bad during batch 1's bake
            daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
            failing.clear()  # the rolled-back release is healthy again
            daemon.wait_state("production", "in-sync", sandbox.head("production"))
    finally:
        server.close()
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
    assert "failed the check http" in failed["outcome"]
    assert len(batches_of(failed, sandbox)) == 1


def test_a_failed_rollout_records_what_happened_to_each_host_in_history_and_on_its_page(short_tmp):
    failing = threading.Event()
    server = Server(lambda path: (503, {"ok": False}) if failing.is_set() and path == "/health/p-2" else (200, {}))
    port = free_port()
    try:
        sandbox = rollout_sandbox(
            short_tmp,
            auto_rollback=False,
            rollout={"batches": [2, "100%"]},
            verify={"http": {"url": f"http://127.0.0.1:{server.port}/health/{{inventory_hostname}}", "retries": 0}},
        )
        sandbox.write_config(
            api={"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            web={"roles": {"*": {"viewer": ["*"]}}},
        )
        with Daemon(sandbox) as daemon:
            web_up(daemon)
            daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=90)
            failing.set()  # the new release is unhealthy on p-2 only
            sandbox.write("app.txt", "v2")
            bad = sandbox.commit("v2 is unhealthy on p-2")
            sandbox.push("main", "main:production")
            failed = daemon.wait_result("production", bad, "failed", timeout=90)
            browser = Browser(port)
            assert browser.login(token(sandbox, "viewer", "read", owner="vera")).status == 303
            page = browser.get(f"/deployments/{failed['id']}")
    finally:
        server.close()
    # p-1 ran and passed its check; p-2 ran but its check failed; batch 2 never ran.
    assert failed["hosts"] == {"p-1": "changed", "p-2": "check-failed", "p-3": "skipped", "p-4": "skipped"}
    assert page.status == 200
    for line in ("p-1: changed", "p-2: check-failed", "p-3: skipped", "p-4: skipped"):
        assert f"<li>{line}</li>" in page.text


def test_a_failing_verification_playbook_fails_the_batch(short_tmp):
    # One batch and no rollback: each batch runs the playbook twice (deploy, verify); the failure is the point.
    sandbox = rollout_sandbox(
        short_tmp, auto_rollback=False, rollout={"batches": ["100%"]}, verify={"playbook": "playbooks/verify.yml"}
    )
    sandbox.write(
        "playbooks/verify.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.fail: msg=smoke test failed\n"
        "      when: (gitopsd_workdir + '/SMOKE_FAILS') is exists\n",
    )
    sandbox.commit("add verify playbook")
    sandbox.push("main")
    import subprocess

    subprocess.run(["git", "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main"], check=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("SMOKE_FAILS", "yes")
        bad = sandbox.commit("smoke fails")
        sandbox.push("main", "main:production")
        failed = daemon.wait_result("production", bad, "failed")
    assert "failed the check playbook playbooks/verify.yml" in failed["outcome"]


def test_a_prometheus_threshold_breached_fails_the_batch_and_notifications_fire(short_tmp):
    error_rate = {"value": "0.01"}
    prom = Server(
        lambda path: (
            200,
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), error_rate["value"]]}]},
            },
        )
    )
    hook = Server(lambda path: (204, {}))
    events = short_tmp / "events.jsonl"
    script = short_tmp / "notify.sh"
    script.write_text(f"#!/bin/sh\ncat >> {events}\necho >> {events}\n")
    script.chmod(0o755)
    try:
        sandbox = rollout_sandbox(
            short_tmp,
            rollout={"batches": ["100%"]},
            verify={
                "prometheus": {
                    "url": f"http://127.0.0.1:{prom.port}",
                    "query": 'rate(errors{commit="{commit}"}[1m])',
                    "max": 0.05,
                }
            },
            notify={"command": [str(script)], "webhook": f"http://127.0.0.1:{hook.port}/hook"},
        )
        with Daemon(sandbox) as daemon:
            daemon.wait_state("production", "in-sync", sandbox.head("production"))
            error_rate["value"] = "0.5"
            sandbox.write("app.txt", "v2")
            bad = sandbox.commit("v2 with errors")
            sandbox.push("main", "main:production")
            daemon.wait_for(lambda: sandbox.history("production")[0]["kind"] == "rollback", 60, "rollback started")
            error_rate["value"] = "0.0"
            daemon.wait_state("production", "in-sync", sandbox.head("production"))
            daemon.wait_for(lambda: events.exists() and events.read_text().count("\n") >= 2, 20, "notifications")
    finally:
        prom.close()
        hook.close()
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
    assert "failed the check prometheus" in failed["outcome"]
    from urllib.parse import unquote_plus

    assert any(f'commit="{bad}"' in unquote_plus(r) for r in prom.requests)
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines() if line.strip()]
    assert kinds == ["deploy-failed", "rollback-succeeded"]
    assert sum(1 for r in hook.requests if '"event"' in r) == 2
