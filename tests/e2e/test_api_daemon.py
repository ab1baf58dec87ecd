"""The daemon as a real process serving its HTTP API: a CI job reports with a token, the hook takes what passed.

Real: `gitopsd run`, uvicorn on loopback, `gitopsd token create`, HTTP through urllib, git push through the
installed pre-receive hook, ansible-playbook for the deployment. Nothing faked.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.support import Daemon, free_port


@pytest.fixture
def sandbox(make_sandbox, short_tmp):
    port = free_port()
    box = make_sandbox(
        {"qa": ["qa-1"]},
        env_options={"qa": {"require_checks": ["ci/test"]}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    box.api_base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return box


def http(method: str, url: str, token: str | None = None, body: object = None) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


def test_a_ci_job_reports_success_with_a_token_and_qa_takes_that_commit_but_refuses_an_untested_one(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: http("GET", f"{sandbox.api_base}/api/v1/health")[0] == 200, 30, "the API up")
        # Created while the daemon runs: it reads the tokens file again, no restart.
        token = sandbox.command("token", "create", "jenkins", "--scope", "statuses:write").stdout.strip()
        sandbox.write("app.txt", "tested")
        tested = sandbox.commit("tested")
        sandbox.push("main")
        code, stored = http(
            "POST",
            f"{sandbox.api_base}/api/v1/repos/shop/statuses/{tested}",
            token,
            {"state": "success", "context": "ci/test", "target_url": "https://ci.example.com/job/1"},
        )
        assert code == 201 and stored["reporter"] == "jenkins", stored
        pushed = sandbox.push("main:qa")
        assert pushed.returncode == 0
        daemon.wait_state("qa", "in-sync", tested)

        sandbox.write("app.txt", "untested")
        untested = sandbox.commit("untested")
        sandbox.push("main")
        refused = sandbox.push("main:qa", check=False)
        assert refused.returncode != 0
        assert "ci/test: not reported" in refused.stderr and f"gitopsd ci status {untested[:7]}" in refused.stderr
        assert sandbox.head("qa") == tested
        assert daemon.stop() == 0
    log = daemon.log()
    assert f"API POST /api/v1/repos/shop/statuses/{tested} -> 201" in log and "(token jenkins)" in log
    assert "Traceback" not in log and token not in log


def test_the_daemon_deploys_without_its_api_when_the_port_is_taken(sandbox):
    host, port = sandbox.api_base.removeprefix("http://").split(":")
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        with Daemon(sandbox) as daemon:
            daemon.wait_for(lambda: "the HTTP API is not started" in daemon.log(), 30, "the API error")
            sandbox.command("ci", "report", "--commit", sandbox.head("qa"), "--context", "ci/test", "--state", "success")
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            assert daemon.stop() == 0
    log = daemon.log()
    assert f"cannot listen on 127.0.0.1:{port}" in log and "api.listen" in log and "Traceback" not in log
