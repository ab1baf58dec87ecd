"""CI triggers: the webhooks each kind of CI server gets, their retries, and what the log may say.

Real: an HTTP server on loopback that records every request, the sender's own worker thread and
urllib; for the last test, the daemon as a process and real pushes through the hook. Faked: nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gitopsd.ci.heads import HeadEvent
from gitopsd.ci.triggers import TriggerSender, backoff, safe_url
from gitopsd.core.settings import Ci, CiTrigger, Repository
from tests.support import Daemon, Sandbox, free_port

COMMIT, BEFORE, TREE = "a" * 40, "b" * 40, "c" * 40


class Recorder:
    """A loopback HTTP server that records each POST (then calls `on_post` with it) and answers with the next
    scripted status (then 200)."""

    def __init__(
        self,
        statuses: list[int] | None = None,
        body: bytes = b'{"ok": true}',
        headers: dict[str, str] | None = None,
        on_post: Callable[[dict], None] | None = None,
    ):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": self.rfile.read(length)}
                )
                if on_post is not None:  # what the CI server does on a trigger, before it answers
                    on_post(recorder.requests[-1])
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.requests) >= n, f"expected {n} requests, got {self.requests}"
        return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    servers: list[Recorder] = []

    def make(*args, **kwargs) -> Recorder:
        servers.append(Recorder(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def sender():
    sender = TriggerSender(backoff_base=0.01, backoff_max=0.05)
    sender.start()
    yield sender
    sender.stop()


def repo_with(*triggers: CiTrigger) -> Repository:
    return Repository(name="shop", path=Path("/srv/git/shop.git"), environments=(), ci=Ci(trigger=triggers))


def event(branch: str = "main", before: str | None = BEFORE) -> HeadEvent:
    return HeadEvent("shop", branch, before, COMMIT, TREE, "alice")


def secret(tmp_path: Path, value: str = "t0ken-123") -> Path:
    path = tmp_path / "token"
    path.write_text(value + "\n")
    return path


def ci_log(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "gitopsd.ci")


def test_generic_and_jenkins_get_gitopsd_json_with_the_secret_as_a_bearer_token(recorder, sender, tmp_path):
    server = recorder()
    sender.sink(
        repo_with(
            CiTrigger(url=f"{server.url}/hook", kind="generic"),
            CiTrigger(url=f"{server.url}/generic-webhook-trigger/invoke", kind="jenkins", secret_file=secret(tmp_path)),
        ),
        event(),
    )
    generic, jenkins = sorted(server.wait(2), key=lambda r: r["path"])[::-1]
    expected = {
        "repository": "shop",
        "ref": "refs/heads/main",
        "branch": "main",
        "before": BEFORE,
        "after": COMMIT,
        "tree": TREE,
        "pusher": "alice",
    }
    for request in (generic, jenkins):
        assert json.loads(request["body"]) == expected
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["User-Agent"] == "gitopsd"
    assert generic["path"] == "/hook" and "Authorization" not in generic["headers"]
    assert jenkins["path"] == "/generic-webhook-trigger/invoke"
    assert jenkins["headers"]["Authorization"] == "Bearer t0ken-123"


def test_a_first_seen_branch_has_no_before_commit(recorder, sender):
    server = recorder()
    sender.sink(repo_with(CiTrigger(url=server.url, kind="generic")), event(before=None))
    assert json.loads(server.wait(1)[0]["body"])["before"] is None


def test_gitlab_gets_the_pipeline_trigger_form_with_its_token_ref_and_variables(recorder, sender, tmp_path):
    server = recorder(body=b'{"id": 1}')
    sender.sink(
        repo_with(
            CiTrigger(
                url=f"{server.url}/api/v4/projects/42/trigger/pipeline", kind="gitlab", secret_file=secret(tmp_path, "glptt-abc")
            )
        ),
        event(),
    )
    [request] = server.wait(1)
    assert request["path"] == "/api/v4/projects/42/trigger/pipeline"
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in request["headers"]
    assert urllib.parse.parse_qsl(request["body"].decode()) == [
        ("token", "glptt-abc"),
        ("ref", "main"),
        ("variables[GITOPSD_COMMIT]", COMMIT),
        ("variables[GITOPSD_TREE]", TREE),
        ("variables[GITOPSD_REPO]", "shop"),
        ("variables[GITOPSD_PUSHER]", "alice"),
    ]


def test_circleci_gets_the_pipeline_api_body_with_its_circle_token_header(recorder, sender, tmp_path):
    server = recorder(statuses=[201])
    sender.sink(
        repo_with(
            CiTrigger(
                url=f"{server.url}/api/v2/project/gh/acme/shop/pipeline",
                kind="circleci",
                secret_file=secret(tmp_path, "circle-xyz"),
            )
        ),
        event(),
    )
    [request] = server.wait(1)
    assert request["path"] == "/api/v2/project/gh/acme/shop/pipeline"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Circle-Token"] == "circle-xyz"
    assert "Authorization" not in request["headers"]
    assert json.loads(request["body"]) == {
        "branch": "main",
        "parameters": {"gitopsd_commit": COMMIT, "gitopsd_tree": TREE, "gitopsd_repo": "shop"},
    }


def test_buildbot_gets_the_base_change_hook_form_and_its_secret_as_basic_auth(recorder, sender, tmp_path):
    server = recorder()
    sender.sink(
        repo_with(CiTrigger(url=f"{server.url}/change_hook/base", kind="buildbot", secret_file=secret(tmp_path, "hook:pw"))),
        event(),
    )
    [request] = server.wait(1)
    assert request["path"] == "/change_hook/base"
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"hook:pw").decode()
    fields = dict(urllib.parse.parse_qsl(request["body"].decode()))
    assert fields == {
        "revision": COMMIT,
        "branch": "main",
        "repository": "/srv/git/shop.git",
        "project": "shop",
        "author": "alice",
        "comments": "gitopsd: new head of main pushed by alice",
        "properties": json.dumps({"gitopsd_tree": TREE}),
    }


def test_a_500_is_retried_with_backoff_until_it_succeeds(recorder, sender, caplog):
    caplog.set_level(logging.INFO, logger="gitopsd.ci")
    server = recorder(statuses=[500, 503, 429])
    sender.sink(repo_with(CiTrigger(url=f"{server.url}/hook", retries=3)), event())
    assert len(server.wait(4)) == 4
    deadline = time.monotonic() + 5
    while "told about" not in ci_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = ci_log(caplog).splitlines()
    assert [line.split(": HTTP")[0] for line in lines[:3]] == [
        f"generic trigger {server.url}/hook failed for main at aaaaaaa (attempt {n} of 4)" for n in (1, 2, 3)
    ]
    assert "HTTP 500" in lines[0] and "HTTP 503" in lines[1] and "HTTP 429" in lines[2]
    assert all("next attempt in" in line for line in lines[:3])
    assert lines[3] == f"generic trigger {server.url}/hook told about main at aaaaaaa (HTTP 200, attempt 4 of 4)"
    assert {r.levelname for r in caplog.records if "failed for" in r.getMessage()} == {"WARNING"}


def test_giving_up_after_the_last_retry_is_an_error(recorder, sender, caplog):
    server = recorder(statuses=[502, 502, 502])
    sender.sink(repo_with(CiTrigger(url=f"{server.url}/hook", retries=2)), event())
    server.wait(3)
    deadline = time.monotonic() + 5
    while "giving up" not in ci_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    [final] = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert final.levelname == "ERROR" and "(attempt 3 of 3): HTTP 502" in final.getMessage()
    time.sleep(0.2)
    assert len(server.requests) == 3


def test_a_server_that_does_not_answer_is_retried_too(sender, caplog):
    port = free_port()  # a port nothing listens on
    sender.sink(repo_with(CiTrigger(url=f"http://127.0.0.1:{port}/hook", retries=1, timeout=1)), event())
    deadline = time.monotonic() + 5
    while "giving up" not in ci_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = ci_log(caplog).splitlines()
    assert len(lines) == 2 and "(attempt 1 of 2): no answer:" in lines[0] and "giving up" in lines[1]


def test_a_400_is_a_configuration_problem_logged_once_and_not_retried(recorder, sender, caplog, tmp_path):
    # The server echoes the token it was sent: the log line must not repeat it.
    server = recorder(statuses=[400], body=b'{"message": "token t0ken-123 is not valid"}')
    sender.sink(repo_with(CiTrigger(url=f"{server.url}/hook", kind="jenkins", secret_file=secret(tmp_path))), event())
    server.wait(1)
    time.sleep(0.3)
    assert len(server.requests) == 1
    [line] = [r for r in caplog.records if r.name == "gitopsd.ci"]
    assert line.levelname == "ERROR"
    assert line.getMessage() == (
        f"jenkins trigger {server.url}/hook refused main at aaaaaaa: HTTP 400 Bad Request: "
        '{"message": "token *** is not valid"}; not retried: check the trigger\'s url, '
        "kind and secret_file"
    )


def test_a_redirect_is_not_followed(recorder, sender, caplog):
    other = recorder()
    server = recorder(statuses=[302], headers={"Location": f"{other.url}/elsewhere"})
    sender.sink(repo_with(CiTrigger(url=f"http://user:pw@127.0.0.1:{server.port}/hook")), event())
    server.wait(1)
    time.sleep(0.3)
    assert other.requests == [] and len(server.requests) == 1
    assert "HTTP 302" in ci_log(caplog) and "not retried" in ci_log(caplog)


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged(recorder, sender, caplog):
    server = recorder(statuses=[500, 400])
    url = f"http://jenkins:s3cret-pass@127.0.0.1:{server.port}/generic-webhook-trigger/invoke?token=qu3ry-token"
    sender.sink(repo_with(CiTrigger(url=url, kind="jenkins")), event())
    first, _second = server.wait(2)
    assert first["path"] == "/generic-webhook-trigger/invoke?token=qu3ry-token"
    assert first["headers"]["Authorization"] == "Basic " + base64.b64encode(b"jenkins:s3cret-pass").decode()
    time.sleep(0.2)
    text = ci_log(caplog)
    assert f"http://127.0.0.1:{server.port}/generic-webhook-trigger/invoke " in text
    assert "s3cret" not in text and "qu3ry" not in text and "jenkins:" not in text
    assert safe_url("https://u:p@[::1]:8443/x?token=t#f") == "https://[::1]:8443/x"


def test_an_unreadable_secret_file_is_one_error_naming_the_file_and_nothing_is_sent(recorder, sender, caplog, tmp_path):
    server = recorder()
    sender.sink(repo_with(CiTrigger(url=server.url, kind="gitlab", secret_file=tmp_path / "missing")), event())
    deadline = time.monotonic() + 5
    while not ci_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ci_log(caplog) == (
        f"gitlab trigger {server.url} not sent for main at aaaaaaa: cannot read its secret_file "
        f"{tmp_path / 'missing'}: No such file or directory; put the token in that file, "
        "readable by gitopsd"
    )
    assert server.requests == []


def test_a_secret_file_of_several_lines_is_refused_before_anything_is_sent(recorder, sender, caplog, tmp_path):
    server = recorder()
    sender.sink(repo_with(CiTrigger(url=server.url, kind="jenkins", secret_file=secret(tmp_path, "a\nb"))), event())
    deadline = time.monotonic() + 5
    while not ci_log(caplog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ci_log(caplog).endswith(f"its secret_file {tmp_path / 'token'} is more than one line; put only the token in that file")
    assert server.requests == []


def test_a_server_that_does_not_speak_http_is_retried(sender, caplog):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def babble() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")
            conn.close()

    threading.Thread(target=babble, daemon=True).start()
    try:
        sender.sink(repo_with(CiTrigger(url=f"http://127.0.0.1:{listener.getsockname()[1]}/", retries=1)), event())
        deadline = time.monotonic() + 5
        while "giving up" not in ci_log(caplog) and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = ci_log(caplog).splitlines()
        assert len(lines) == 2 and "(attempt 1 of 2): no valid HTTP answer: BadStatusLine" in lines[0], lines
    finally:
        listener.close()


def test_only_triggers_whose_globs_match_the_branch_are_sent(recorder, sender):
    server = recorder()
    repo = repo_with(
        CiTrigger(url=f"{server.url}/main-only", branches=("main",)),
        CiTrigger(url=f"{server.url}/features", branches=("main", "feature/*")),
    )
    for branch in ("main", "feature/login", "release/1.0", "mainline"):
        sender.sink(repo, event(branch))
    server.wait(3)
    time.sleep(0.2)
    assert sorted((r["path"], json.loads(r["body"])["branch"]) for r in server.requests) == [
        ("/features", "feature/login"),
        ("/features", "main"),
        ("/main-only", "main"),
    ]


def test_the_sink_returns_at_once_while_the_server_is_slow(sender):
    # A server that accepts and never answers: the sink must not wait for it.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        start = time.monotonic()
        for _ in range(5):
            sender.sink(repo_with(CiTrigger(url=f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=5)), event())
        assert time.monotonic() - start < 0.1
    finally:
        listener.close()


def test_stopping_drops_pending_retries_with_one_line(recorder, caplog):
    server = recorder(statuses=[500] * 10)
    sender = TriggerSender(backoff_base=30, backoff_max=60)
    sender.start()
    sender.sink(repo_with(CiTrigger(url=server.url, retries=5), CiTrigger(url=server.url, retries=5)), event())
    server.wait(2)
    deadline = time.monotonic() + 5
    while sender.pending() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sender.stop()
    assert [r.getMessage() for r in caplog.records if "stopping" in r.getMessage()] == [
        "stopping: 2 CI triggers waiting to be sent or retried are dropped"
    ]
    assert len(server.requests) == 2


def test_backoff_doubles_is_capped_and_jittered():
    assert [backoff(n, 2, 300, rand=lambda: 1.0) for n in (1, 2, 3, 4, 10)] == [2, 4, 8, 16, 300]
    assert backoff(3, 2, 300, rand=lambda: 0.0) == 4


def test_the_daemon_triggers_the_ci_server_on_pushes_to_matching_branches_only(recorder, short_tmp):
    server = recorder()
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    config = yaml.safe_load(sandbox.config.read_text())
    config["repositories"][0]["ci"] = {"trigger": [{"url": f"{server.url}/hook", "branches": ["main", "feature/*"]}]}
    sandbox.config.write_text(yaml.safe_dump(config))
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: server.requests, 30, "the first look's trigger for main")
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        import subprocess

        subprocess.run(
            ["git", "push", "-q", "origin", "main", "main:feature/x", "main:other"],
            cwd=sandbox.work,
            check=True,
            env=sandbox.environ(GL_USER="alice"),
        )
        daemon.wait_for(lambda: len(server.requests) >= 3, 30, "triggers for main and feature/x")
        time.sleep(0.5)
    bodies = [json.loads(r["body"]) for r in server.requests]
    assert [(b["branch"], b["before"] is None) for b in bodies[:1]] == [("main", True)]
    pushed = sorted((b["branch"], b["after"], b["tree"]) for b in bodies[1:])
    assert pushed == [("feature/x", new, sandbox.tree(new)), ("main", new, sandbox.tree(new))]
    assert all(b["pusher"].startswith("alice") for b in bodies[1:])


def test_a_ci_server_that_reports_pending_as_soon_as_the_daemons_first_trigger_comes_reaches_the_api(recorder, short_tmp):
    port = free_port()
    sandbox = Sandbox(
        short_tmp, {"qa": ["qa-1"]}, extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}}
    )
    token = sandbox.command("token", "create", "jenkins", "--scope", "statuses:write").stdout.strip()
    answers: list[object] = []

    def report_pending(request: dict) -> None:
        commit = json.loads(request["body"])["after"]
        status = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/repos/shop/statuses/{commit}",
            method="POST",
            data=json.dumps({"state": "pending", "context": "ci/test"}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(status, timeout=10) as response:
                answers.append(response.status)
        except (urllib.error.URLError, OSError) as exc:  # e.g. connection refused: the API did not listen yet
            answers.append(repr(exc))

    server = recorder(on_post=report_pending)
    config = yaml.safe_load(sandbox.config.read_text())
    config["repositories"][0]["ci"] = {"trigger": [{"url": f"{server.url}/hook", "branches": ["main"]}]}
    sandbox.config.write_text(yaml.safe_dump(config))
    with Daemon(sandbox) as daemon:  # main's head is new to it: its first look triggers the CI server
        daemon.wait_for(lambda: answers, 30, "the CI server's pending status")
    assert answers == [201]
    shown = sandbox.command("ci", "status", sandbox.head("main")).stdout
    assert "ci/test" in shown and "pending" in shown, shown


def test_ci_rerun_sends_the_trigger_again_for_the_same_head(recorder, short_tmp):
    server = recorder()
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    config = yaml.safe_load(sandbox.config.read_text())
    config["repositories"][0]["ci"] = {"trigger": [{"url": f"{server.url}/hook", "branches": ["main"]}]}
    sandbox.config.write_text(yaml.safe_dump(config))
    head = sandbox.head("main")
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: server.requests, 30, "the first look's trigger for main")
        said = sandbox.command("ci", "rerun", "shop", head[:10]).stdout  # the commit at main's head names main too
        daemon.wait_for(lambda: len(server.requests) >= 2, 30, "the trigger sent again")
    assert f"CI runs again on main at {head[:7]} (the trigger to {server.url}/hook)" in said
    again = json.loads(server.requests[1]["body"])
    assert (again["branch"], again["before"], again["after"]) == ("main", head, head)


def test_the_ci_docs_document_the_json_schema_gitopsd_sends():
    from tests.support import ROOT

    text = (ROOT / "docs" / "ci.md").read_text().split("## Triggering your CI server")[1]
    block = text.split("gitopsd's own schema")[1].split("```json")[1].split("```")[0]
    assert list(json.loads(block)) == list(event().as_json())
