"""Production rollout in batches with checks, bake and automatic rollback: the real daemon, real
ansible-playbook runs on local hosts, real HTTP servers standing in for app health and Prometheus."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.support import Daemon, Sandbox, git, inventory
from tests.webclient import Browser, free_port, token, web_up

HOSTS = ["p-1", "p-2", "p-3", "p-4"]


class Server:
    """A real HTTP server on 127.0.0.1; `answer(path)` returns (status, JSON body)."""

    def __init__(self, answer):
        outer = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                status, body = answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(self.rfile.read(length).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def rollout_sandbox(root: Path, **options) -> Sandbox:
    env = {"auto_rollback": True, "rollout": {"batches": [1, "25%", "100%"]}, **options}
    return Sandbox(root, {"production": HOSTS}, env_options={"production": env})


def batches_of(deployment: dict, sandbox: Sandbox) -> list[dict]:
    import sqlite3
    with sqlite3.connect(sandbox.state / "state.db") as db:
        detail = db.execute("SELECT detail FROM deployments WHERE id = ?", (deployment["id"],)).fetchone()[0]
    return json.loads(detail)["batches"]


def test_batches_of_1_then_25_percent_then_the_rest_run_in_order(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("app.txt", "v2")
        sandbox.write("SLEEP", "1")
        new = sandbox.commit("v2")
        sandbox.push("main", "main:production")
        # `gitopsd status` shows the rollout in progress.
        row = daemon.wait_for(lambda: (r := sandbox.status()["production"])["state"] == "deploying"
                              and "batch 2 of 3" in (r["reason"] or "") and r, 60, "batch 2 in status")
        assert row["reason"] == f"rolling out {new[:7]}: batch 2 of 3"
        daemon.wait_state("production", "in-sync", new)
        assert "rolling out: batch 3/3" in daemon.log()
    last = sandbox.history("production")[0]
    assert [b["hosts"] for b in batches_of(last, sandbox)] == [["p-1"], ["p-2"], ["p-3", "p-4"]]
    assert "in 3 batches" in last["outcome"]
    logs = sandbox.cli("logs", str(last["id"])).stdout
    assert "# batch 1: passed on p-1" in logs and "# batch 3: passed on p-3, p-4" in logs


def test_a_failing_first_batch_stops_the_rollout_and_rolls_back_automatically(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        sandbox.write("FAIL", "p-1")
        bad = sandbox.commit("breaks p-1")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert)
        time.sleep(2)   # the failed tree is not retried
    history = sandbox.history("production")
    failed = next(d for d in history if d["commit"] == bad)
    assert [d["commit"] for d in history].count(bad) == 1
    assert [(b["hosts"], b["result"]) for b in batches_of(failed, sandbox)] == [(["p-1"], "failed")]
    assert failed["outcome"].startswith("batch 1/3 failed")
    # Batch 2 never started: no host but p-1 ever ran the bad commit.
    bad_runs = [r for r in sandbox.runs() if bad in r]
    assert {r.split(".")[0] for r in bad_runs} == {"p-1"}
    # The rollback went to every host, and the branch's tree is the good one.
    rollback = history[0]
    assert rollback["kind"] == "rollback" and rollback["result"] == "succeeded"
    assert {r.split(".")[0] for r in sandbox.runs() if f".{rollback['id']}:" in r} == set(HOSTS)
    assert sandbox.tree(revert) == sandbox.tree(good)


def test_a_failed_deployment_and_its_automatic_rollback_each_get_a_note_saying_how_they_ended(short_tmp):
    sandbox = rollout_sandbox(short_tmp)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        sandbox.write("FAIL", "p-1")
        bad = sandbox.commit("breaks p-1")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
        revert = sandbox.head("production")
        daemon.wait_state("production", "in-sync", revert)
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)

    def note(commit: str) -> str:
        return git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", commit).stdout

    assert note(bad).splitlines() == [
        f"gitopsd: deploy to production failed (deployment #{failed['id']}, push by {failed['actor']}) at "
        f"{failed['finished_at'][:16].replace('T', ' ')} UTC: batch 1/3 failed: failed on p-1 (failed)"]
    assert "rollback to production succeeded" in note(revert)


def test_an_http_check_failing_during_the_bake_fails_the_batch(short_tmp):
    failing = threading.Event()
    server = Server(lambda path: (500, {"ok": False}) if failing.is_set() else (200, {"ok": True}))
    try:
        sandbox = rollout_sandbox(short_tmp, rollout={"batches": ["50%"], "bake": 3},
                                  verify={"http": {"url": f"http://127.0.0.1:{server.port}/health",
                                                   "retries": 0}})
        with Daemon(sandbox) as daemon:
            daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=90)
            good = sandbox.head("production")
            sandbox.write("app.txt", "v2")
            bad = sandbox.commit("v2 degrades after a while")
            sandbox.push("main", "main:production")
            daemon.wait_for(lambda: "rolling out: batch 1/2" in daemon.log(), 30, "batch 1 started")
            time.sleep(1.0)
            failing.set()   # the app goes bad during batch 1's bake
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
        sandbox = rollout_sandbox(short_tmp, auto_rollback=False, rollout={"batches": [2, "100%"]},
                                  verify={"http": {"url": f"http://127.0.0.1:{server.port}/health/{{inventory_hostname}}",
                                                   "retries": 0}})
        sandbox.write_config(api={"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
                             web={"roles": {"*": {"viewer": ["*"]}}})
        with Daemon(sandbox) as daemon:
            web_up(daemon)
            daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=90)
            failing.set()   # the new release is unhealthy on p-2 only
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
    sandbox = rollout_sandbox(short_tmp, verify={"playbook": "playbooks/verify.yml"})
    sandbox.write("playbooks/verify.yml", "- hosts: all\n  gather_facts: false\n  tasks:\n"
                  "    - ansible.builtin.fail: msg=smoke test failed\n"
                  "      when: (gitopsd_workdir + '/SMOKE_FAILS') is exists\n")
    sandbox.commit("add verify playbook")
    sandbox.push("main")
    import subprocess
    subprocess.run(["git", "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main"],
                   check=True)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("SMOKE_FAILS", "yes")
        bad = sandbox.commit("smoke fails")
        sandbox.push("main", "main:production")
        failed = daemon.wait_result("production", bad, "failed")
    assert "failed the check playbook playbooks/verify.yml" in failed["outcome"]


def test_a_prometheus_threshold_breached_fails_the_batch_and_notifications_fire(short_tmp):
    error_rate = {"value": "0.01"}
    prom = Server(lambda path: (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [time.time(), error_rate["value"]]}]}}))
    hook = Server(lambda path: (204, {}))
    events = short_tmp / "events.jsonl"
    script = short_tmp / "notify.sh"
    script.write_text(f"#!/bin/sh\ncat >> {events}\necho >> {events}\n")
    script.chmod(0o755)
    try:
        sandbox = rollout_sandbox(short_tmp, verify={"prometheus": {
            "url": f"http://127.0.0.1:{prom.port}", "query": 'rate(errors{commit="{commit}"}[1m])', "max": 0.05}},
            notify={"command": [str(script)], "webhook": f"http://127.0.0.1:{hook.port}/hook"})
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


def test_an_unreachable_host_fails_its_batch(short_tmp):
    sandbox = rollout_sandbox(short_tmp, rollout={"batches": [2, "100%"]})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        good = sandbox.head("production")
        broken_inventory = inventory("p-1", "p-3", "p-4").replace(
            "    p-1: {}", "    p-1: {}\n    p-2: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1}")
        sandbox.write("environments/production/hosts.yml", broken_inventory)
        bad = sandbox.commit("p-2 is unreachable")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: sandbox.head("production") not in (good, bad), 60, "revert")
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
    assert "p-2 (unreachable)" in failed["outcome"]


def test_a_timed_out_batch_leaves_no_process_behind(short_tmp):
    sandbox = rollout_sandbox(short_tmp, timeout=15)   # room for a busy machine; the hang (41 s) still outlasts it
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("SLEEP", "41")
        bad = sandbox.commit("hangs")
        sandbox.push("main", "main:production")
        daemon.wait_result("production", bad, "failed")
        time.sleep(0.5)
        assert not [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "41"]]
    failed = next(d for d in sandbox.history("production") if d["commit"] == bad)
    assert "timed out" in failed["outcome"]


@pytest.mark.parametrize("batches, hosts, expected", [
    (["100%"], 4, [4]), ([1], 4, [1, 1, 1, 1]), (["25%"], 5, [1, 1, 1, 1, 1]), ([2, "100%"], 5, [2, 3]),
])
def test_batch_sizes_split_real_inventories(short_tmp, batches, hosts, expected):
    names = [f"h-{i}" for i in range(1, hosts + 1)]
    sandbox = Sandbox(short_tmp, {"production": names},
                      env_options={"production": {"rollout": {"batches": batches}}})
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=120)
    first = sandbox.history("production")[0]
    assert [len(b["hosts"]) for b in batches_of(first, sandbox)] == expected


def test_an_empty_inventory_fails_the_rollout_without_running_anything(short_tmp):
    sandbox = rollout_sandbox(short_tmp, auto_rollback=False)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
        sandbox.write("environments/production/hosts.yml", "all:\n  hosts: {}\n")
        empty = sandbox.commit("no hosts left")
        sandbox.push("main", "main:production")
        row = daemon.wait_state("production", "stalled", empty)
    failed = next(d for d in sandbox.history("production") if d["commit"] == empty)
    assert "no hosts matched" in failed["outcome"]
    assert not [r for r in sandbox.runs() if empty in r]
    assert row["deployed"] != empty
