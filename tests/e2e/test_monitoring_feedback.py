"""Feedback from the pipeline (issue 14): ECS log lines with one summary event per deployment, Grafana
annotations, and the DORA figures of the daemon's own history.

Real: the daemon as a process (`--log-format json`), pushes through the installed hook, ansible-playbook,
an HTTP server on loopback standing in for Grafana's /api/annotations, `gitopsd dora`. Nothing faked.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import GITOPSD, Daemon, Sandbox


class Receiver:
    """A local HTTP server recording every POST (path, headers, JSON body); `status` is what it answers."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.posts: list[tuple[str, dict[str, str], dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                receiver.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": 1, "message": "Annotation added"}')

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class JsonDaemon(Daemon):
    """`gitopsd run --log-format json`, its stderr kept apart (every line must be JSON)."""

    def __init__(self, sandbox: Sandbox):
        Daemon.started.append(self)
        self.sandbox = sandbox
        self.log_path = sandbox.root / "daemon.jsonl"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (the daemon writes to it until stop)
        self.proc = subprocess.Popen(
            [*GITOPSD, "run", "--config", str(sandbox.config), "--log-format", "json"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=sandbox.environ(),
            start_new_session=True,
        )


@pytest.fixture
def grafana():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_logs_annotations_and_dora_figures_follow_each_deployment(short_tmp, grafana):
    token = short_tmp / "grafana.token"
    token.write_text("glsa_test_token\n")
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={"grafana": {"url": grafana.url, "token_file": str(token), "dashboard_uid": "gitopsd-1"}},
    )
    pushed_at = {}
    with JsonDaemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))  # the first deployment: qa's baseline
        for name, fail in (("A", False), ("B", True), ("C", False)):
            if fail:
                sandbox.write("FAIL", "all")
            elif (sandbox.work / "FAIL").exists():
                sandbox.remove("FAIL")
            sandbox.write("app.txt", name)
            commit = sandbox.commit(name)
            before = time.time()
            sandbox.push("main", "main:qa")
            pushed_at[name] = (commit, before, time.time())
            if fail:
                daemon.wait_state("qa", "stalled", commit, timeout=90)  # two attempts (retries: 1), both failed
            else:
                daemon.wait_state("qa", "in-sync", commit, timeout=90)
        daemon.wait_for(lambda: len(grafana.posts) >= len(sandbox.history("qa")), 15, "an annotation per deployment")
    history = sandbox.history("qa")
    assert [d["result"] for d in history[::-1]] == ["succeeded", "succeeded", "failed", "failed", "succeeded"]

    # Every line is JSON with ECS names; each deployment has exactly one summary event.
    lines = [json.loads(line) for line in daemon.log_path.read_text().splitlines()]
    assert all("@timestamp" in doc and "log.level" in doc and "message" in doc and "ecs.version" in doc for doc in lines)
    summaries = [doc for doc in lines if doc.get("event", {}).get("action") == "deployment"]
    assert sorted(int(s["labels"]["deployment"]) for s in summaries) == sorted(d["id"] for d in history)
    by_id = {d["id"]: d for d in history}
    for s in summaries:
        d = by_id[int(s["labels"]["deployment"])]
        assert s["event"]["outcome"] == {"succeeded": "success", "failed": "failure"}[d["result"]]
        assert s["labels"]["repo"] == "shop" and s["labels"]["env"] == "qa" and d["commit"].startswith(s["labels"]["commit"])
        assert isinstance(s["event"]["duration"], int) and 0 < s["event"]["duration"] < 120 * 10**9
        assert s["gitopsd"]["kind"] == "deploy" and s["gitopsd"]["trigger"] == d["trigger"]
        assert s["gitopsd"]["actor"] == d["actor"]

    # One annotation per deployment, with the token, the dashboard, the tags and the commit.
    assert len(grafana.posts) == len(history)
    for path, headers, body in grafana.posts:
        assert path == "/api/annotations" and headers["Authorization"] == "Bearer glsa_test_token"
        assert body["dashboardUID"] == "gitopsd-1" and body["timeEnd"] >= body["time"]
        assert {"gitopsd", "repo:shop", "env:qa", "kind:deploy"} <= set(body["tags"])
    failed = [b for _p, _h, b in grafana.posts if "result:failed" in b["tags"]]
    assert len(failed) == 2 and pushed_at["B"][0][:12] in failed[0]["text"]

    # Each pushed commit's first-seen time is its push, never its commit date.
    db = sqlite3.connect(sandbox.state / "state.db")
    seen = dict(db.execute("SELECT commit_id, first_seen FROM commits_seen"))
    vias = dict(db.execute("SELECT commit_id, via FROM commits_seen"))
    for name, (commit, before, after) in pushed_at.items():
        assert before <= seen[commit] <= after, name
        assert vias[commit] in ("push", "branch-push")
    brought = dict(db.execute("SELECT commit_id, deployment_id FROM commits_deployed WHERE env = 'qa'"))
    db.close()
    last = history[0]["id"]
    assert brought == {pushed_at["A"][0]: history[3]["id"], pushed_at["B"][0]: last, pushed_at["C"][0]: last}

    figures = json.loads(sandbox.command("dora", "--env", "qa", "--json").stdout)
    assert figures["deployments"] == 5 and figures["successful"] == 3
    assert figures["change_failures"] == 2 and figures["change_failure_rate"] == pytest.approx(0.4)
    assert figures["changes"] == 3 and 0 < figures["lead_time_median"] < 120
    assert figures["recoveries"] == 1 and figures["unrecovered"] == 0
    assert figures["fixes"] == 1 and figures["rework_rate"] == pytest.approx(0.2)
    text = sandbox.command("dora", "--env", "qa").stdout
    assert "lead time for changes" in text and "(3 commits)" in text


def test_a_grafana_that_hangs_or_refuses_never_delays_a_deployment(short_tmp):
    slow = Receiver(status=500, delay=30)
    token = short_tmp / "grafana.token"
    token.write_text("t\n")
    try:
        sandbox = Sandbox(
            short_tmp, {"qa": ["qa-1"]}, extra={"grafana": {"url": slow.url, "token_file": str(token), "timeout": 1}}
        )
        with Daemon(sandbox) as daemon:
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            sandbox.write("app.txt", "v2")
            commit = sandbox.commit("v2")
            started = time.monotonic()
            sandbox.push("main", "main:qa")
            daemon.wait_state("qa", "in-sync", commit, timeout=60)
            took = time.monotonic() - started
            daemon.wait_for(lambda: "could not annotate deployment" in daemon.log(), 15, "the warning")
        assert took < 30  # the annotation's 30 s hang is not in it
    finally:
        slow.close()
