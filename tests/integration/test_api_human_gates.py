"""Sign-offs, release candidates and approvals over the HTTP API, as the token's owner, beside the control socket.

Real: `gitopsd run` as a process serving uvicorn on loopback, `gitopsd token create --owner`, HTTP through
urllib, CLI calls as real Unix users (setpriv), git pushes through the installed hook, ansible-playbook.
Nothing faked.
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_human_gates import as_user, pytestmark, ship_to_staging  # noqa: F401
from tests.support import Daemon, Sandbox, free_port, unix_users

# Users of their own (not test_human_gates' gt-*), so the two modules may run at once on one machine.
PEOPLE = ("gh-alice", "gh-bob", "gh-carol", "gh-dave")  # alice tests; bob, carol and dave approve
GROUP = "gh-people"


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    with unix_users(PEOPLE, GROUP):
        yield


class Api:
    def __init__(self, sandbox: Sandbox, base: str):
        self.sandbox, self.base = sandbox, base

    def token(self, name: str, *scopes: str, owner: str | None = None) -> str:
        args = [a for s in scopes for a in ("--scope", s)] + (["--owner", owner] if owner else [])
        return self.sandbox.command("token", "create", name, *args).stdout.strip()

    def call(self, method: str, path: str, token: str, body: object = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def signoff(self, token: str, env: str = "staging", **body: object) -> tuple[int, Any]:
        return self.call("POST", f"/api/v1/repos/shop/environments/{env}/signoffs", token, body)

    def rc_create(self, token: str, **body: object) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/repos/shop/rcs", token, body)

    def approval(self, token: str, rc: str, **body: object) -> tuple[int, Any]:
        return self.call("POST", f"/api/v1/repos/shop/rcs/{rc}/approvals", token, body)


@pytest.fixture
def server(short_tmp: Path, people: None) -> Iterator[tuple[Sandbox, Daemon, Api]]:
    short_tmp.chmod(0o755)
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]},
        env_options={
            "staging": {"signoff_by": ["gh-alice"]},
            "production": {
                "require_signoff": {"env": "staging", "count": 1},
                "approvals": {"required": 2, "approvers": ["group:approvers"], "forbid_self_approval": True},
            },
        },
        extra={
            "groups": {"approvers": ["gh-bob", "gh-carol", "gh-dave"]},
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
        },
        converged=True,
    )
    sandbox.runtime.mkdir()
    shutil.chown(sandbox.runtime, "root", GROUP)
    sandbox.runtime.chmod(0o2750)  # the sockets take the folder's group: the people may use them, not replace them
    api = Api(sandbox, f"http://127.0.0.1:{port}")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 30, "the API up")
        yield sandbox, daemon, api


def test_a_release_signed_off_created_and_approved_over_http_by_token_owners_reaches_production(server):
    sandbox, daemon, api = server
    ship_to_staging(sandbox, daemon, "release 2", pusher="gh-alice")
    alice = api.token("alice-laptop", "approvals:write", owner="gh-alice")
    bob = api.token("bob", "approvals:write", "read", owner="gh-bob")
    carol = api.token("gh-carol", "approvals:write")  # no --owner: the token's name is its owner
    listed = sandbox.command("token", "list").stdout
    assert "alice-laptop" in listed and "gh-alice" in listed and "OWNER" in listed

    code, done = api.signoff(alice, note="checkout tested by hand")
    assert code == 201 and done["identity"] == "gh-alice", done
    assert "gh-alice signed off staging's tree" in done["message"]
    code, done = api.rc_create(alice, name="h2")
    assert code == 201 and "release candidate rc/h2 created" in done["message"], done

    code, done = api.approval(bob, "h2", kind="approve", note="product ok")
    assert code == 201 and "rc/h2 approved by gh-bob" in done["message"] and "1 of 2 approvals" in done["message"]
    code, done = api.approval(carol, "h2", kind="approve", note="pm ok")
    assert code == 201 and "approved: production takes it now" in done["message"], done

    # The reads show what `gitopsd rc list|show --json` show.
    code, listed = api.call("GET", "/api/v1/repos/shop/rcs", bob)
    assert code == 200 and listed == json.loads(sandbox.command("rc", "list", "--json").stdout)
    code, shown = api.call("GET", "/api/v1/repos/shop/rcs/h2", bob)
    assert code == 200 and shown == json.loads(sandbox.command("rc", "show", "h2", "--json").stdout)
    assert shown["state"] == "approved" and shown["approved_by"] == ["gh-bob", "gh-carol"]
    assert [(h["actor"], h["kind"]) for h in shown["history"]] == [("gh-bob", "approve"), ("gh-carol", "approve")]
    assert api.call("GET", "/api/v1/repos/shop/rcs/nope", bob)[0] == 404

    sandbox.command("promote", "rc/h2", "production")
    row = daemon.wait_result("production", sandbox.head("production"), "succeeded")
    # history says which candidate each production deployment was, who approved it and who signed it off.
    assert (row["rc"], row["approved_by"], row["signed_off_by"]) == ("h2", ["gh-bob", "gh-carol"], ["gh-alice"])
    text = sandbox.command("history", "production").stdout
    assert f"#{row['id']}: rc/h2 approved by gh-bob, gh-carol; signed off by gh-alice" in text
    staging = sandbox.history("staging")[0]
    assert (staging["rc"], staging["approved_by"], staging["signed_off_by"]) == (None, [], [])
    code, history = api.call("GET", "/api/v1/repos/shop/environments/production/history", bob)
    assert code == 200 and history[0]["rc"] == "h2" and history[0]["approved_by"] == ["gh-bob", "gh-carol"]
    notes = subprocess.run(
        ["git", "--git-dir", str(sandbox.repo), "log", "--notes=gitopsd", "-n", "1", "--format=%N", "refs/tags/rc/h2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rc/h2 approved by gh-bob" in notes and "rc/h2 approved by gh-carol" in notes


def test_http_refusals_say_why_in_one_line_with_the_status_that_fits(server):
    sandbox, daemon, api = server
    ship_to_staging(sandbox, daemon, "release 3", pusher="gh-alice")
    reader = api.token("dashboard", "read")
    alice = api.token("alice", "approvals:write", owner="gh-alice")
    bob = api.token("bob", "approvals:write", owner="gh-bob")
    dave = api.token("dave", "approvals:write", owner="gh-dave")

    code, body = api.signoff(reader, note="tested")
    assert code == 403 and body["message"] == "this token lacks the scope approvals:write"
    code, body = api.signoff(dave, note="tested")
    assert code == 403 and body == {
        "message": "gh-dave may not sign off in staging; who may: gh-alice",
        "kind": "forbidden",
        "reason": "signoff_not_allowed",
        "field": None,
    }
    code, body = api.rc_create(bob, name="h3")
    assert code == 409 and "lacks its sign-offs for production" in body["message"] and body["reason"] == "signoffs_missing"
    # Bad fields: 422 naming the field; an identity in the body is no field at all.
    assert api.signoff(alice)[1] == {"message": "note is required", "kind": "invalid", "reason": "bad_field", "field": "note"}
    assert api.signoff(alice, note="x", reject="yes")[1]["field"] == "reject"
    code, body = api.signoff(alice, note="x", identity="gh-carol")
    assert code == 422 and body["field"] == "identity"
    assert api.signoff(alice, note="two\nlines")[0] == 422
    assert api.signoff(alice, note="   ")[0] == 422
    assert api.call("POST", "/api/v1/repos/shop/environments/nope/signoffs", alice, {"note": "x"})[0] == 404
    assert api.signoff(alice, note="x", reason="y")[1]["field"] == "reason"  # one word or the other

    assert api.signoff(alice, reason="tested")[0] == 201  # reason: the word locks and overrides use too
    code, body = api.signoff(alice, note="again")
    assert code == 409 and "already signed off" in body["message"] and "nothing changed" in body["message"]
    code, body = api.rc_create(bob, name="h3")  # bob creates it, so he may not approve it
    assert code == 201, body
    code, body = api.rc_create(bob, name="h3")
    assert code == 409 and body["message"].startswith("rc/h3 exists already")
    assert api.rc_create(bob, name="bad..name")[0] == 422

    code, body = api.approval(bob, "h3", kind="approve", note="mine")
    assert code == 403 and "gh-bob may not approve rc/h3: it is their own" in body["message"]
    assert (body["kind"], body["reason"]) == ("forbidden", "approval_by_author")  # an id to match on, not the words
    code, body = api.approval(alice, "h3", kind="approve", note="ok")
    assert code == 403 and body["message"].startswith("gh-alice may not approve for production; who may: ")
    assert body["reason"] == "approval_not_allowed"
    assert api.approval(dave, "h3", kind="maybe", note="x")[1]["field"] == "kind"
    assert api.approval(dave, "h3", kind="approve")[1]["field"] == "note"
    code, body = api.approval(dave, "nope", kind="approve", note="x")
    assert code == 404 and (body["kind"], body["reason"]) == ("missing", "rc_not_found")
    code, body = api.call("GET", "/api/v1/repos/shop/rcs/nope", reader)  # a read of it: the same id
    assert code == 404 and body == {
        "message": "no release candidate rc/nope in shop",
        "kind": "missing",
        "reason": "rc_not_found",
        "field": None,
    }
    code, body = api.call("GET", "/api/v1/repos/shop/environments/nope/history", reader)  # no such environment: its own id
    assert code == 404 and (body["kind"], body["reason"]) == ("missing", "env_not_found")
    code, body = api.approval(dave, "h3", kind="withdraw")  # nothing of dave's to withdraw
    assert code == 409 and body["reason"] == "nothing_changed"
    assert api.approval(dave, "h3", kind="approve", note="ok")[0] == 201
    code, body = api.approval(dave, "h3", kind="approve", note="ok")
    assert code == 409 and "already approved" in body["message"]
    shown = json.loads(sandbox.command("rc", "show", "h3", "--json").stdout)
    assert shown["approved_by"] == ["gh-dave"] and shown["state"] == "waiting"
    assert "Traceback" not in daemon.log()


def test_approvals_racing_over_http_and_the_command_line_are_each_counted_once(server):
    sandbox, daemon, api = server
    ship_to_staging(sandbox, daemon, "release 5", pusher="gh-alice")
    assert as_user(sandbox, "gh-alice", "signoff", "staging", "--note", "tested").returncode == 0
    assert as_user(sandbox, "gh-alice", "rc", "create", "--name", "h5").returncode == 0
    carol = api.token("carol", "approvals:write", owner="gh-carol")
    bob = api.token("bob", "approvals:write", owner="gh-bob")

    def cli(user: str) -> subprocess.Popen[str]:
        entry = pwd.getpwnam(user)
        return subprocess.Popen(
            [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
                sys.executable,
                "-m",
                "gitopsd",
                "approve",
                "h5",
                "--note",
                "go",
                "--config",
                str(sandbox.config),
            ],
            cwd="/",
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        )

    # carol approves six times over HTTP and twice from her shell, bob over HTTP, dave from his shell: all at once.
    tokens = [carol] * 6 + [bob]
    start = threading.Barrier(len(tokens))
    codes: list[int] = []

    def over_http(token: str) -> None:
        start.wait()
        codes.append(api.approval(token, "h5", kind="approve", note="go")[0])

    procs = [cli("gh-carol"), cli("gh-dave"), cli("gh-carol")]
    time.sleep(0.3)  # about a command's start-up: the HTTP requests land among the shell's
    threads = [threading.Thread(target=over_http, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    exits = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    outcomes = sorted(codes) + sorted(code for _o, _e, code in exits)
    # One of carol's eight asks counts; the others are told she already approved.
    assert codes.count(201) + [code for _o, _e, code in exits].count(0) == 3, (outcomes, exits)
    assert all("already approved" in err for _o, err, code in exits if code != 0), exits
    view = json.loads(sandbox.command("rc", "show", "h5", "--json").stdout)
    assert view["approved_by"] == ["gh-bob", "gh-carol", "gh-dave"] and view["state"] == "approved"
    assert [h["actor"] for h in view["history"]].count("gh-carol") == 1


def test_human_gates_serialise_their_callers_so_a_slow_check_cannot_let_one_approval_count_twice(short_tmp):
    """The lock the control socket and the API share, with the race made wide: the store's read sleeps."""
    from gitopsd.adapters.store import Store
    from gitopsd.config import load
    from gitopsd.services.releases import HumanGates

    class SlowStore(Store):
        def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]:
            rows = super().approval_rows(repo, rc)
            time.sleep(0.2)  # the other caller's check runs meanwhile, unless the gates take turns
            return rows

    sandbox = Sandbox(
        short_tmp,
        {"staging": ["staging-1"], "production": ["production-1"]},
        env_options={"production": {"approvals": {"required": 2, "approvers": ["carol", "dave"]}}},
    )
    config = load(sandbox.config)
    head = sandbox.head("staging")
    with SlowStore(config.database) as store:
        deployment = store.begin(
            repo="shop",
            env="staging",
            commit=head,
            tree=sandbox.tree(head),
            previous_commit=None,
            kind="deploy",
            trigger="push",
            actor="alice",
            now=time.time(),
        )
        store.finish(deployment, "succeeded", now=time.time())
        assert store.add_rc(
            repo="shop",
            name="r1",
            commit=head,
            tree=sandbox.tree(head),
            source_env="staging",
            target_env="production",
            created_by="alice",
            self_identities=["alice"],
            now=time.time(),
        )
        gates = HumanGates(lambda: config, store, notify=lambda *_args: None)
        answers: list[dict[str, Any]] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(gates.handle("carol", {"op": "approve", "repo": "shop", "rc": "r1", "note": "ok"}))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(a["ok"] for a in answers) == [False, True], answers
        assert [actor for actor, *_rest in store.approval_rows("shop", "r1")] == ["carol"]


def test_history_shows_the_candidate_and_the_words_in_force_when_each_deployment_started(short_tmp):
    """From the loaded config (no daemon, so no snapshot): newest candidate before the start, later words left out."""
    from gitopsd.adapters.store import Store
    from gitopsd.config import load

    sandbox = Sandbox(
        short_tmp,
        {"staging": ["staging-1"], "production": ["production-1"]},
        env_options={
            "staging": {"signoff_by": ["alice", "erin"]},
            "production": {
                "require_signoff": {"env": "staging", "count": 1},
                "approvals": {"required": 1, "approvers": ["bob", "carol"]},
            },
        },
    )
    head = sandbox.head("staging")
    tree = sandbox.tree(head)
    with Store(load(sandbox.config).database) as store:
        store.add_signoff(
            repo="shop", env="staging", commit=head, tree=tree, actor="alice", verdict="signoff", note="ok", now=100
        )
        store.add_signoff(repo="shop", env="staging", commit=head, tree=tree, actor="erin", verdict="reject", note="no", now=101)
        store.add_rc(
            repo="shop",
            name="old",
            commit=head,
            tree=tree,
            source_env="staging",
            target_env="production",
            created_by="alice",
            self_identities=["alice"],
            now=110,
        )
        store.add_rc(
            repo="shop",
            name="new",
            commit=head,
            tree=tree,
            source_env="staging",
            target_env="production",
            created_by="alice",
            self_identities=["alice"],
            now=120,
        )
        store.add_rc(
            repo="shop",
            name="later",
            commit=head,
            tree=tree,
            source_env="staging",
            target_env="production",
            created_by="alice",
            self_identities=["alice"],
            now=900,
        )
        for actor, kind, at in (
            ("bob", "approve", 121),
            ("carol", "approve", 122),
            ("carol", "withdraw", 123),
            ("carol", "approve", 300),
        ):
            store.add_approval(repo="shop", rc="new", tree=tree, actor=actor, kind=kind, note="n", now=at)
        first = store.begin(
            repo="shop",
            env="production",
            commit=head,
            tree=tree,
            previous_commit=None,
            kind="deploy",
            trigger="promote",
            actor="ops",
            now=200,
        )
        store.finish(first, "succeeded", now=201)
        second = store.begin(
            repo="shop",
            env="production",
            commit=head,
            tree=tree,
            previous_commit=head,
            kind="reapply",
            trigger="cli",
            actor="ops",
            now=400,
        )
        store.finish(second, "succeeded", now=401)
    rows = {row["id"]: row for row in sandbox.history("production")}
    assert (rows[first]["rc"], rows[first]["approved_by"], rows[first]["signed_off_by"]) == ("new", ["bob"], ["alice"])
    assert rows[second]["approved_by"] == ["bob", "carol"]  # carol's approval came between the two
    text = sandbox.command("history", "production").stdout
    assert f"#{first}: rc/new approved by bob; signed off by alice" in text
