"""The HTTP API with a real uvicorn on loopback, real HTTP (urllib, http.client), real tokens and a real repository.

Real: the server thread the daemon starts (api/server.serve), the store, git, the `gitopsd` command line
for tokens and `ci report|status`. Faked: only the daemon's callback after a stored status (a list).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request

import pytest

from gitopsd.adapters.store import Store
from gitopsd.api.server import serve
from gitopsd.config import load
from gitopsd.core.errors import STATUS
from tests.support import Sandbox, free_port, git


@pytest.fixture
def sandbox(make_sandbox, short_tmp):
    return make_sandbox(
        {"qa": ["qa-1"]},
        env_options={"qa": {"require_checks": ["ci/test"]}},
        extra={"api": {"listen": f"127.0.0.1:{free_port()}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )


class Api:
    """The API of one sandbox, served in this process as the daemon serves it."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.config = load(sandbox.config)
        self.store = Store(self.config.database)
        self.looks: list[str] = []
        self.server = serve(lambda: self.config, self.store, self.looks.append)
        assert self.server is not None
        self.base = f"http://{self.config.api.host}:{self.config.api.port}"

    def token(self, name: str, *scopes: str) -> str:
        args = [a for s in scopes for a in ("--scope", s)]
        return self.sandbox.command("token", "create", name, *args).stdout.strip()

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: object = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None and "Content-Type" not in (headers or {}):
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def post(self, commit: str, token: str, **body: object) -> tuple[int, dict[str, str], object]:
        return self.call("POST", f"/api/v1/repos/shop/statuses/{commit}", token, body)

    def combined(self, commit: str, token: str) -> dict:
        code, _h, doc = self.call("GET", f"/api/v1/repos/shop/commits/{commit}/status", token)
        assert code == 200, doc
        return doc

    def close(self) -> None:
        self.server.stop()
        self.store.close()


@pytest.fixture
def api(sandbox):
    served = Api(sandbox)
    yield served
    served.close()


def test_token_create_prints_the_secret_once_and_keeps_only_its_hash(sandbox):
    made = sandbox.command("token", "create", "jenkins", "--scope", "statuses:write", "--scope", "read")
    secret = made.stdout.strip()
    assert secret.startswith("gitopsd_") and len(secret) > 40 and "\n" not in secret
    assert "shown only this once" in made.stderr
    tokens_file = sandbox.root / "tokens.yml"
    text = tokens_file.read_text()
    assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() in text
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o640
    assert tokens_file.stat().st_gid == sandbox.config.stat().st_gid
    listed = sandbox.command("token", "list").stdout
    assert "jenkins" in listed and "statuses:write,read" in listed and secret not in listed
    again = sandbox.command("token", "create", "jenkins", "--scope", "read", check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("gitopsd: error: a token named 'jenkins' exists already") and "Traceback" not in again.stderr
    bad = sandbox.command("token", "create", "x", "--scope", "admin", check=False)
    assert bad.returncode == 1 and "among statuses:write, read" in bad.stderr


def test_a_persons_token_is_to_be_handed_to_that_person_not_put_in_a_ci_secret_store(sandbox):
    made = sandbox.command("token", "create", "alice-web", "--scope", "read", "--owner", "alice")
    assert "CI" not in made.stderr, made.stderr
    assert made.stderr.rstrip().endswith(
        "The secret above is shown only this once: give it to alice alone, who signs in with it on the dashboard's "
        "/login page or sends it to the API as alice."
    ), made.stderr


def test_a_new_token_works_at_once_and_a_revoked_one_is_refused_without_a_restart(sandbox, api):
    token = api.token("ci", "statuses:write")
    head = sandbox.head("main")
    assert api.post(head, token, state="success", context="ci/test")[0] == 201
    revoked = sandbox.command("token", "revoke", "ci")
    assert "revoked" in revoked.stdout
    code, headers, _doc = api.post(head, token, state="success", context="ci/test")
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    missing = sandbox.command("token", "revoke", "ci", check=False)
    assert missing.returncode == 1 and "no API token named 'ci'" in missing.stderr


def test_a_missing_or_wrong_token_gets_401_and_learns_nothing(sandbox, api):
    real = api.token("ci", "statuses:write")
    head = sandbox.head("main")
    answers = []
    for headers in (
        {},
        {"Authorization": "Bearer gitopsd_wrong"},
        {"Authorization": f"Basic {real}"},
        {"Authorization": f"Bearer {real}x"},
        {"Authorization": "Bearer"},
    ):
        code, got, doc = api.call("POST", f"/api/v1/repos/shop/statuses/{head}", body={"state": "success"}, headers=headers)
        assert code == 401 and got["www-authenticate"].startswith("Bearer")
        answers.append(doc)
    assert all(doc == answers[0] for doc in answers)
    # Also for what does not exist: a wrong token cannot probe for repositories.
    assert api.call("GET", "/api/v1/repos/nope/commits/abcdef0/status")[0] == 401
    assert api.call("GET", "/api/v1/status")[0] == 401
    assert api.call("GET", "/api/v1/health")[0] == 200


def test_a_token_without_the_scope_gets_403(sandbox, api):
    reader, writer = api.token("dash", "read"), api.token("ci", "statuses:write")
    head = sandbox.head("main")
    code, _h, doc = api.post(head, reader, state="success")
    assert code == 403 and "statuses:write" in doc["message"]
    assert api.call("GET", "/api/v1/status", writer)[0] == 403
    assert api.call("GET", "/api/v1/repos/shop/environments/qa/history", writer)[0] == 403


def test_a_statuses_write_token_reads_back_the_statuses_of_the_repositories_it_reports_for(sandbox, api):
    """As GitHub's repo:status: a CI job reads the combined status it reported to with the same token."""
    writer = api.token("ci", "statuses:write")
    elsewhere = sandbox.command("token", "create", "web-ci", "--scopes", "statuses:write", "--repos", "web*").stdout.strip()
    head = sandbox.head("main")
    assert api.post(head, writer, state="success", context="ci/test")[0] == 201
    assert api.combined(head, writer)["state"] == "success"
    code, _h, doc = api.call("GET", f"/api/v1/repos/shop/commits/{head}/statuses", writer)
    assert code == 200 and [s["context"] for s in doc] == ["ci/test"]
    code, _h, doc = api.call("GET", f"/api/v1/repos/shop/commits/{head}/status", elsewhere)
    assert code == 403 and doc == {
        "message": "this token lacks the scope read (or statuses:write for shop)",
        "kind": "forbidden",
        "reason": "token_scope",
        "field": None,
    }


def test_pygithub_reports_lists_and_reads_statuses_and_gets_the_repository_as_from_github(sandbox, api):
    from github import Auth, Github

    token = sandbox.command("token", "create", "jenkins", "--scope", "statuses:write", "--owner", "ci-bot").stdout.strip()
    head = sandbox.head("main")
    hub = Github(base_url=f"{api.base}/api/v1", auth=Auth.Token(token))  # sends `Authorization: token ...`
    repo = hub.get_repo("acme/shop")  # not lazy: GET /repos/acme/shop
    assert (repo.name, repo.full_name, repo.owner.login, repo.default_branch) == ("shop", "acme/shop", "acme", "main")
    assert isinstance(repo.id, int)
    commit = repo.get_commit(head)
    made = commit.create_status("pending", "https://ci.example.com/7", "running", "ci/test")
    assert (made.state, made.context, made.creator.login, made.description) == ("pending", "ci/test", "ci-bot", "running")
    commit.create_status("success", "https://ci.example.com/7", "all green", "ci/test")
    listed = list(commit.get_statuses())
    assert [(s.state, s.creator.login) for s in listed] == [("success", "ci-bot"), ("pending", "ci-bot")]
    assert listed[0].target_url == "https://ci.example.com/7" and listed[0].created_at is not None
    combined = commit.get_combined_status()
    assert (combined.state, combined.sha, combined.total_count) == ("success", head, 1)
    assert combined.statuses[0].creator.login == "ci-bot"
    # The same through a lazy repository named without an owner, as gitopsd's own paths name it.
    assert hub.withLazy(True).get_repo("shop").get_commit(head).get_combined_status().state == "success"
    assert api.looks == ["shop", "shop"]


def test_a_token_limited_to_contexts_and_repositories_reports_only_those(sandbox, api):
    token = sandbox.command(
        "token", "create", "jenkins", "--scopes", "statuses:write", "--contexts", "ci/*,lint", "--repos", "shop"
    ).stdout.strip()
    other = sandbox.command("token", "create", "web-ci", "--scope", "statuses:write", "--repos", "web-*").stdout.strip()
    head = sandbox.head("main")
    assert api.post(head, token, state="success", context="ci/test")[0] == 201
    assert api.post(head, token, state="success", context="lint")[0] == 201
    code, _h, doc = api.post(head, token, state="success", context="deploy/smoke")
    assert code == 403 and doc == {
        "message": "token jenkins may report only the contexts ci/*, lint, not "
        "'deploy/smoke'; report one of those, or use a token made for it "
        "(`gitopsd token create ... --contexts PATTERN`)",
        "kind": "forbidden",
        "reason": "context_not_allowed",
        "field": None,
    }
    code, _h, doc = api.post(head, other, state="success", context="ci/test")
    assert code == 403 and doc["message"].startswith("token web-ci may report only for the repositories web-*, not shop;")
    assert [s["context"] for s in api.combined(head, token)["statuses"]] == ["ci/test", "lint"]
    listed = sandbox.command("token", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "SCOPES", "OWNER", "CONTEXTS", "REPOS", "CREATED", "BY"]
    assert listed[1].split()[:5] == ["jenkins", "statuses:write", "jenkins", "ci/*,lint", "shop"]
    assert listed[2].split()[:5] == ["web-ci", "statuses:write", "web-ci", "*", "web-*"]
    bad = sandbox.command("token", "create", "dash", "--scope", "read", "--repos", "shop", check=False)
    assert bad.returncode == 1 and bad.stderr == (
        "gitopsd: error: --repos limits what a token reports: give it with --scope statuses:write\n"
    )


def test_the_tokens_file_limits_are_checked_when_read_and_a_file_without_them_has_none(sandbox, api):
    tokens_file = sandbox.root / "tokens.yml"
    token = api.token("ci", "statuses:write")
    text = tokens_file.read_text()
    assert "contexts" not in text and "repos" not in text  # no limits: the file reads as the last release wrote it
    head = sandbox.head("main")
    assert api.post(head, token, state="success", context="deploy/smoke")[0] == 201
    tokens_file.write_text(text.replace("  scopes:", "  contexts: ci/*\n  scopes:"))
    listed = sandbox.command("token", "list", check=False)
    assert listed.returncode == 1 and listed.stderr == (
        f"gitopsd: error: {tokens_file}: tokens[0] (ci): contexts must be a list of glob patterns of one line each, "
        "at most 255 characters, e.g. ['ci/*'] (revoke the token and create it again with `gitopsd token create ... "
        "--contexts PATTERN`)\n"
    )
    assert api.post(head, token, state="success", context="ci/test")[0] == 500  # refused rather than guessed: the server's fault
    tokens_file.write_text(text.replace("  scopes:", "  repos: [shop, '']\n  scopes:"))
    assert "tokens[0] (ci): repos must be a list" in sandbox.command("token", "list", check=False).stderr
    tokens_file.write_text(text.replace("  scopes:", "  repos: [web]\n  scopes:"))
    assert api.post(head, token, state="success", context="ci/test")[0] == 403


def test_unknown_repository_or_commit_is_404_and_an_abbreviation_resolves(sandbox, api):
    token = api.token("ci", "statuses:write", "read")
    head = sandbox.head("main")
    assert api.post(head, token, state="success", context="ci/test")[0] == 201
    code, _h, doc = api.call("POST", f"/api/v1/repos/nope/statuses/{head}", token, {"state": "success"})
    assert code == 404 and "nope" in doc["message"]
    for commit in ("0" * 40, "1234567", "main", "HEAD", head[:6], f"{head[:7]}..main"):
        code, _h, doc = api.post(commit, token, state="success")
        assert code == 404, (commit, doc)
    # A branch named like an abbreviation does not redirect a report: only objects count.
    other = sandbox.commit("other")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "branch", head[:8], other)
    code, _h, doc = api.post(head[:8], token, state="failure", context="ci/build")
    assert code == 201 and doc["commit"] == head and doc["tree"] == sandbox.tree(head) and doc["reporter"] == "ci"
    assert api.call("GET", "/api/v1/repos/shop/environments/nope/history", token)[0] == 404


def test_a_status_for_a_full_commit_id_starts_no_git_process_and_records_its_tree(sandbox, api, monkeypatch):
    from gitopsd.base import gitcli

    token = api.token("ci", "statuses:write", "read")
    sandbox.write("app.txt", "new to the API")
    commit = sandbox.commit("new to the API")
    sandbox.push("main")
    started: list[list[str]] = []
    real = gitcli.run
    monkeypatch.setattr(gitcli, "run", lambda argv, **kw: started.append(argv) or real(argv, **kw))
    code, _h, doc = api.post(commit, token, state="success", context="ci/test")
    assert code == 201 and doc["commit"] == commit and doc["tree"] == sandbox.tree(commit), doc
    assert started == []  # issue 28: a git process per commit was most of a status POST's cost
    tree = sandbox.tree(commit)
    assert api.post(tree, token, state="success")[0] == 404  # a tree is not a commit, however it is asked
    assert api.combined(commit, token)["state"] == "success"


BIG = 64 * 1024


@pytest.mark.parametrize(
    "body, field",
    [
        ({"state": "passed"}, "state"),
        ({"context": "ci/test"}, "state"),
        ({"state": 1}, "state"),
        ({"state": "success", "context": "c" * 256}, "context"),
        ({"state": "success", "context": ""}, "context"),
        ({"state": "success", "context": "ci/test\nci/build"}, "context"),
        ({"state": "success", "target_url": "ftp://ci.example.com/job/1"}, "target_url"),
        ({"state": "success", "target_url": "javascript:alert(1)"}, "target_url"),
        ({"state": "success", "target_url": "https://"}, "target_url"),
        ({"state": "success", "description": "d" * 1001}, "description"),
        ({"state": "success", "description": 7}, "description"),
        (["state", "success"], "body"),
        ("not json {", "body"),
        ({"state": "success", "description": "x" * BIG}, "body"),
    ],
)
def test_invalid_input_is_422_naming_the_field(sandbox, api, body, field):
    token = api.token("ci", "statuses:write", "read")
    head = sandbox.head("main")
    raw = body.encode() if isinstance(body, str) else None
    code, _h, doc = api.call("POST", f"/api/v1/repos/shop/statuses/{head}", token, body if raw is None else None, raw=raw)
    assert code == 422 and doc["field"] == field and doc["message"], doc
    assert api.combined(head, token)["total_count"] == 0  # nothing was stored
    assert api.looks == []


def test_limits_at_their_edge_are_taken(sandbox, api):
    token = api.token("ci", "statuses:write")
    head = sandbox.head("main")
    code, _h, doc = api.post(
        head, token, state="pending", context="c" * 255, description="d" * 1000, target_url="https://ci.example.com/job/1?x=1#y"
    )
    assert code == 201 and doc["context"] == "c" * 255 and doc["target_url"] == "https://ci.example.com/job/1?x=1#y"


def test_a_body_over_64_kib_without_content_length_is_refused_by_the_bytes_read(sandbox, api):
    token = api.token("ci", "statuses:write", "read")
    head = sandbox.head("main")
    chunks = [b'{"state": "success", "description": "', b"x" * (BIG // 2), b"x" * (BIG // 2), b'"}']
    connection = http.client.HTTPConnection(api.config.api.host, api.config.api.port, timeout=10)
    connection.request(
        "POST",
        f"/api/v1/repos/shop/statuses/{head}",
        body=iter(chunks),
        encode_chunked=True,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    response = connection.getresponse()
    doc = json.loads(response.read())
    connection.close()
    assert response.status == 422 and doc["field"] == "body"
    assert api.combined(head, token)["total_count"] == 0


def test_combined_state_follows_githubs_rules_newest_report_per_context_wins(sandbox, api):
    token = api.token("ci", "statuses:write", "read")
    head = sandbox.head("main")
    first = api.combined(head, token)
    assert first == {"state": "pending", "sha": head, "tree": sandbox.tree(head), "total_count": 0, "statuses": []}
    steps = [
        ("ci/test", "pending", "pending"),
        ("ci/test", "success", "success"),
        ("ci/build", "failure", "failure"),
        ("ci/build", "success", "success"),
        ("ci/lint", "error", "failure"),
        ("ci/lint", "pending", "pending"),
        ("ci/lint", "success", "success"),
    ]
    for context, state, expected in steps:
        code, _h, stored = api.post(head, token, state=state, context=context, target_url=f"https://ci.example/{context}")
        assert code == 201 and stored["state"] == state and stored["reporter"] == "ci"
        doc = api.combined(head, token)
        assert doc["state"] == expected, (context, state, doc)
    assert [(s["context"], s["state"]) for s in doc["statuses"]] == [
        ("ci/build", "success"),
        ("ci/lint", "success"),
        ("ci/test", "success"),
    ]
    code, _h, history = api.call("GET", f"/api/v1/repos/shop/commits/{head}/statuses", token)
    assert code == 200 and len(history) == len(steps) and history[0]["context"] == "ci/lint"
    assert api.call("GET", f"/api/v1/repos/shop/commits/{head}/statuses?limit=0", token)[0] == 422
    assert api.looks == ["shop"] * len(steps)  # the daemon is told after each stored status


def test_a_status_counts_for_another_commit_with_the_same_tree(sandbox, api):
    token = api.token("ci", "statuses:write", "read")
    tested = sandbox.head("main")
    same_tree = sandbox.commit("an empty commit: a new id, the same tree")
    sandbox.push("main")
    assert sandbox.tree(same_tree) == sandbox.tree(tested) and same_tree != tested
    assert api.post(tested, token, state="success", context="ci/test")[0] == 201
    doc = api.combined(same_tree, token)
    assert doc["state"] == "success" and doc["sha"] == same_tree
    assert doc["statuses"][0]["commit"] == tested
    # Its own history lists only what was reported for it.
    assert api.call("GET", f"/api/v1/repos/shop/commits/{same_tree}/statuses", token)[2] == []


def test_status_and_history_show_what_the_command_line_shows(sandbox, api):
    token = api.token("dash", "read")
    head = sandbox.head("qa")
    deployment = api.store.begin(
        repo="shop",
        env="qa",
        commit=head,
        tree=sandbox.tree(head),
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="alice",
        now=1_700_000_000.0,
    )
    api.store.finish(deployment, "succeeded", now=1_700_000_002.0, outcome="ok", detail={"hosts": {"qa-1": "ok"}})
    code, _h, rows = api.call("GET", "/api/v1/status", token)
    assert code == 200 and rows == json.loads(sandbox.command("status", "--json").stdout)
    assert rows[0]["deployed"] == head
    code, _h, history = api.call("GET", "/api/v1/repos/shop/environments/qa/history?limit=5", token)
    assert code == 200 and history == json.loads(sandbox.command("history", "qa", "--json", "--limit", "5").stdout)
    assert history[0]["hosts"] == {"qa-1": "ok"} and history[0]["actor"] == "alice"
    assert api.call("GET", "/api/v1/status?repo=nope", token)[0] == 404
    assert api.call("GET", "/api/v1/repos/shop/environments/qa/history?limit=x", token)[2]["field"] == "limit"


def test_hosts_and_where_show_what_the_command_line_shows_per_host_and_since_when(sandbox, api):
    token = api.token("dash", "read")
    old = sandbox.head("qa")

    def deployed(commit: str, at: float, hosts: dict[str, str]) -> None:
        ident = api.store.begin(
            repo="shop",
            env="qa",
            commit=commit,
            tree=sandbox.tree(commit),
            previous_commit=None,
            kind="deploy",
            trigger="push",
            actor="alice",
            now=at,
        )
        api.store.finish(
            ident, "succeeded" if "failed" not in hosts.values() else "failed", now=at + 1, outcome="ok", detail={"hosts": hosts}
        )

    sandbox.write("VERSION", "2")
    new = sandbox.commit("v2")
    sandbox.push("main")
    deployed(old, 1_700_000_000.0, {"qa-1": "ok", "qa-2": "ok"})
    deployed(old, 1_700_000_100.0, {"qa-1": "ok", "qa-2": "ok"})  # a re-apply: the same tree since the first
    deployed(new, 1_700_000_200.0, {"qa-1": "changed", "qa-2": "failed"})  # qa-2 kept the old tree
    hosts = json.loads(sandbox.command("hosts", "qa", "--json").stdout)
    assert [(h["host"], h["tree"], h["since"], h["last_result"]) for h in hosts] == [
        ("qa-1", sandbox.tree(new), 1_700_000_201.0, "changed"),
        ("qa-2", sandbox.tree(old), 1_700_000_001.0, "failed"),
    ]
    assert api.call("GET", "/api/v1/repos/shop/environments/qa/hosts", token)[2] == hosts
    text = sandbox.command("hosts", "qa").stdout
    assert "qa-2" in text and sandbox.tree(old)[:7] in text and "failed" in text
    where = json.loads(sandbox.command("where", old, "--json").stdout)
    assert where["tree"] == sandbox.tree(old) and [(h["env"], h["host"]) for h in where["hosts"]] == [("qa", "qa-2")]
    assert api.call("GET", f"/api/v1/repos/shop/where?of={old}", token)[2] == where
    assert "qa           qa-2" in sandbox.command("where", sandbox.tree(old)).stdout
    missing = sandbox.command("where", "rc/nope", check=False)
    assert (
        missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no commit, tree or release candidate" in missing.stderr
    )
    assert api.call("GET", "/api/v1/repos/shop/where?of=rc/nope", token)[0] == 404
    unknown = sandbox.command("hosts", "prod", check=False)
    assert unknown.returncode == 1 and "has no environment 'prod' (it has: qa)" in unknown.stderr
    assert api.call("GET", "/api/v1/repos/shop/environments/prod/hosts", token)[0] == 404
    assert api.call("GET", "/api/v1/repos/shop/previews/7", token)[0] == 404


def test_the_openapi_document_describes_every_endpoint(sandbox, api):
    token = api.token("dash", "read")
    assert api.call("GET", "/api/v1/openapi.json")[0] == 401
    code, _h, doc = api.call("GET", "/api/v1/openapi.json", token)
    assert code == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/v1/health",
        "/api/v1/openapi.json",
        "/api/v1/status",
        "/api/v1/repos/{repo}/statuses/{commit}",
        "/api/v1/repos/{repo}/commits/{commit}/status",
        "/api/v1/repos/{repo}/commits/{commit}/statuses",
        "/api/v1/repos/{repo}/environments/{env}/history",
        "/api/v1/repos/{repo}/environments/{env}/signoffs",
        "/api/v1/repos/{repo}/rcs",
        "/api/v1/repos/{repo}/environments/{env}/hosts",
        "/api/v1/repos/{repo}/where",
        "/api/v1/repos/{repo}/previews/{name}",
        "/api/v1/repos/{repo}/rcs/{name}",
        "/api/v1/repos/{repo}/rcs/{name}/approvals",
        "/api/v1/locks",
        "/api/v1/locks/lift",
        "/api/v1/alerts",
        "/api/v1/overrides",
        "/api/v1/overrides/{id}/confirm",
        "/api/v1/repos/{repo}/trees/{tree}/rejections",
        # GitHub's paths, for clients built for GitHub
        "/api/v1/repos/{owner}/{repo}",
        "/api/v1/repos/{owner}/{repo}/commits/{commit}",
        "/api/v1/repos/{owner}/{repo}/statuses/{commit}",
        "/api/v1/repos/{owner}/{repo}/commits/{commit}/status",
        "/api/v1/repos/{owner}/{repo}/commits/{commit}/statuses",
    }
    post = doc["paths"]["/api/v1/repos/{repo}/statuses/{commit}"]["post"]
    assert {"201", "401", "403", "404", "422"} <= set(post["responses"])
    assert "gitopsd/" in post["responses"]["403"]["description"]
    assert set(doc["paths"]["/api/v1/repos/{owner}/{repo}/statuses/{commit}"]) == {"get", "post"}
    assert doc["components"]["schemas"]["Status"]["properties"]["creator"] == {"$ref": "#/components/schemas/User"}
    assert doc["components"]["schemas"]["StatusReport"]["properties"]["state"]["enum"] == [
        "pending",
        "success",
        "failure",
        "error",
    ]
    code, _h, doc = api.call("GET", "/api/v1/nothing-here", token)
    assert code == 404 and "openapi.json" in doc["message"]


def test_a_port_in_use_logs_one_clear_error_and_no_traceback(sandbox, caplog):
    config = load(sandbox.config)
    with socket.socket() as taken, Store(config.database) as store:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((config.api.host, config.api.port))
        taken.listen()
        with caplog.at_level(logging.INFO, logger="gitopsd.api"):
            assert serve(lambda: config, store, lambda _repo: None) is None
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"cannot listen on 127.0.0.1:{config.api.port}" in record.getMessage()
    assert "api.listen" in record.getMessage() and record.exc_info is None


def test_ci_report_checks_like_the_api_and_ci_status_shows_each_context(sandbox):
    head = sandbox.head("main")
    bad = sandbox.command("ci", "report", "--commit", head, "--context", "ci/test", "--state", "ok", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("gitopsd: error: --state: must be one of pending, success")
    assert "Traceback" not in bad.stderr
    bad = sandbox.command("ci", "report", "--commit", head, "--state", "success", "--url", "file:///etc/passwd", check=False)
    assert bad.returncode == 1 and "--url: must be an http:// or https:// URL" in bad.stderr
    bad = sandbox.command("ci", "report", "--commit", "0" * 40, "--state", "success", check=False)
    assert bad.returncode == 1 and f"no commit {'0' * 40}" in bad.stderr
    before = sandbox.command("ci", "status", head[:7]).stdout
    assert "pending (no status reported for this tree)" in before and "qa requires ci/test: ci/test: not reported" in before
    done = sandbox.command(
        "ci",
        "report",
        "--commit",
        head[:10],
        "--context",
        "ci/test",
        "--state",
        "success",
        "--url",
        "https://ci.example.com/42",
        "--description",
        "all green",
    )
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert f"ci/test success for {head[:7]}" in done.stdout and f"cli:{user}" in done.stdout
    assert "the daemon is not running" in done.stdout
    shown = sandbox.command("ci", "status", head).stdout
    assert f"shop {head[:7]} (tree {sandbox.tree(head)[:7]}): success" in shown
    assert "ci/test" in shown and "https://ci.example.com/42" in shown and "qa requires ci/test: all passed" in shown
    doc = json.loads(sandbox.command("ci", "status", head, "--json").stdout)
    assert doc["state"] == "success" and doc["statuses"][0]["reporter"] == f"cli:{user}"
    assert doc["environments"] == {"qa": {"require_checks": ["ci/test"], "unmet": []}}


def test_answers_are_not_held_back_by_nagles_algorithm(sandbox, api):
    """A listening socket made without proto=TCP made asyncio skip TCP_NODELAY: every answer waited ~40 ms."""
    token = api.token("ci", "statuses:write")
    head = sandbox.head("main")
    connection = http.client.HTTPConnection(api.config.api.host, api.config.api.port, timeout=10)
    took = []
    for _ in range(15):
        started = time.perf_counter()
        connection.request(
            "POST",
            f"/api/v1/repos/shop/statuses/{head}",
            body=b'{"state": "success"}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 201
        took.append(time.perf_counter() - started)
    connection.close()
    assert sorted(took)[len(took) // 2] < 0.025, took


def _example(schema: dict) -> dict:
    """A body that passes the schema's own checks: the first enum value, true, or a short string per property."""

    def value(prop: dict) -> object:
        if "enum" in prop:
            return prop["enum"][0]
        return True if prop.get("type") == "boolean" else "ok"

    return {k: value(p) for k, p in schema["properties"].items() if k in schema.get("required", []) or "enum" in p}


def _hostile_requests(doc: dict, head: str) -> list[tuple[str, str, bytes | None]]:
    """Every operation of the OpenAPI document with each bad input it can take: (method, path, raw body)."""
    fill = {"repo": "shop", "owner": "acme", "commit": head, "env": "qa", "name": "2026-11-29.1", "tree": head, "id": "1"}
    schemas = doc["components"]["schemas"]
    cases: list[tuple[str, str, bytes | None]] = []
    for template, operations in doc["paths"].items():
        for method, operation in operations.items():
            path = template.format(**fill)
            params = operation.get("parameters", [])
            for p in params:
                if p["in"] == "path":  # a name that is not UTF-8 once percent-decoded, and a lone surrogate's bytes
                    for bad in ("%FF", "%ED%A0%80", "%00"):
                        cases.append((method, template.replace(f"{{{p['name']}}}", bad).format(**fill), None))
                if p["in"] == "query":
                    numbers = ("%C2%B2", "9" * 5000, "-1", "1e3", "%FF", "") if p["schema"].get("type") == "integer" else ()
                    for bad in (*numbers, "%FF", "%ED%A0%80", "x%00"):
                        cases.append((method, f"{path}?{p['name']}={bad}", None))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            schema = schemas[body["$ref"].rpartition("/")[2]]
            example = json.dumps(_example(schema))[1:-1]
            cases += [(method, path, b"[" * 30_000 + b"]" * 30_000), (method, path, b'{"a":' * 30_000 + b"1" + b"}" * 30_000)]
            for field in schema["properties"]:
                for bad in ("9" * 5000, '"\\ud800"', '"\\udfff x"', "1e999", "NaN", "[" * 2000 + "]" * 2000):
                    cases.append(
                        (method, path, (f'{{{example}, "{field}": {bad}}}' if example else f'{{"{field}": {bad}}}').encode())
                    )
    return cases


def _fits(template: str, path: str) -> bool:
    """Whether a request path (query and all) is one of the document's path templates."""
    return re.fullmatch(re.sub(r"\\{[a-z]+\\}", "[^/]+", re.escape(template)), path.partition("?")[0]) is not None


def test_no_bad_input_to_any_endpoint_answers_500_each_gets_a_422_with_one_line(sandbox, api):
    token = api.token("all", "statuses:write", "read", "approvals:write", "deployments:write", "alerts:write")
    head = sandbox.head("main")
    doc = api.call("GET", "/api/v1/openapi.json", token)[2]
    assert isinstance(doc, dict)
    answers = []
    for method, path, raw in _hostile_requests(doc, head):
        connection = http.client.HTTPConnection(api.config.api.host, api.config.api.port, timeout=10)
        connection.request(
            method.upper(), path, body=raw, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        text = response.read()
        connection.close()
        documented = doc["paths"][next(t for t, ops in doc["paths"].items() if method in ops and _fits(t, path))]
        assert str(response.status) in documented[method]["responses"], (method, path)
        answers.append((response.status, method, path[:80], (raw or b"")[:60], text))
    assert len(answers) > 200
    wrong = [a for a in answers if a[0] != 422]
    assert not wrong, "\n".join(map(str, wrong))
    for status, _method, _path, _raw, text in answers:
        body = json.loads(text)
        line = body["message"]
        assert isinstance(line, str) and line and "\n" not in line, text
        assert set(body) == {"message", "kind", "reason", "field"} and STATUS[body["kind"]] == status, text
        if status == 422:
            assert body.get("field"), text
    assert api.combined(head, token)["total_count"] == 0 and api.looks == []


def test_a_token_for_other_repositories_is_refused_as_such_on_both_paths_and_nothing_is_stored(sandbox, api):
    other = sandbox.command("token", "create", "web-ci", "--scope", "statuses:write", "--repos", "web-*").stdout.strip()
    head = sandbox.head("main")
    for path in (f"/api/v1/repos/shop/statuses/{head}", f"/api/v1/repos/acme/shop/statuses/{head}"):
        code, _h, doc = api.call("POST", path, other, {"state": "success", "context": "ci/test"})
        assert (code, doc["kind"], doc["reason"]) == (403, "forbidden", "repo_not_allowed"), (path, doc)
        assert doc["message"].startswith("token web-ci may report only for the repositories web-*, not shop;")
    reader = sandbox.command("token", "create", "reader", "--scope", "read").stdout.strip()
    assert api.combined(head, reader)["statuses"] == []
