"""Approvals from the chat room: a real Synapse homeserver, real Matrix accounts typing through matrix-nio,
`gitopsd run` as a process posting approval requests and reading the room, a Slack-compatible webhook receiver.

Real: Synapse (tests/matrix_fixture.py), the daemon, git pushes through the installed hook, ansible-playbook,
HTTP to the webhook. Nothing faked. The homeserver is held stopped (SIGSTOP) to play a hung one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_human_gates import ship_to_staging
from tests.matrix_fixture import SERVER_NAME, Person, Synapse, require_matrix, synapse
from tests.support import Daemon, Sandbox

BOT_PASSWORD = "gitopsd-bot-secret"


@pytest.fixture(scope="module")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Synapse, dict[str, Person]]]:
    require_matrix()
    with synapse(tmp_path_factory.mktemp("synapse")) as server:
        people = {name: server.register(name, f"{name}-pw") for name in ("alice", "bob", "mallory")}
        server.register("gitopsd-bot", BOT_PASSWORD)
        for name in ("alice", "bob", "mallory"):
            people[name].login()
        yield server, people


class Webhook:
    """A Slack-compatible incoming webhook: records each JSON POST."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                posts.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0")))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def room_for(people: dict[str, Person]) -> str:
    """A fresh room of bob's, where alice, mallory and gitopsd's account are invited (alice and mallory join)."""
    room = people["bob"].create_room([people[n].user_id for n in ("alice", "mallory")] + [f"@gitopsd-bot:{SERVER_NAME}"])
    people["alice"].join(room)
    people["mallory"].join(room)
    return room


def chat_sandbox(root: Path, server: Synapse, room: str, webhook: Webhook | None = None, password: str = BOT_PASSWORD) -> Sandbox:
    root.chmod(0o755)
    (root / "matrix-password").write_text(password + "\n")
    notifications: dict[str, Any] = {
        "link": "https://deploy.example.org",
        "matrix": {
            "homeserver": server.url,
            "user": f"@gitopsd-bot:{SERVER_NAME}",
            "password_file": str(root / "matrix-password"),
            "room": room,
            "timeout": 10,
            "accounts": {f"@alice:{SERVER_NAME}": "alice", f"@bob:{SERVER_NAME}": "bob"},
        },
    }
    if webhook is not None:
        notifications["slack_webhook"] = webhook.url
    return Sandbox(
        root,
        {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]},
        env_options={"production": {"approvals": {"required": 1, "approvers": ["alice", "bob"], "forbid_self_approval": True}}},
        extra={"notifications": notifications},
    )


def body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def from_gitopsd(text: str) -> Any:
    return lambda e: e.get("sender") == f"@gitopsd-bot:{SERVER_NAME}" and text in body(e)


def test_an_approval_typed_in_the_room_by_a_mapped_approver_lets_production_take_the_candidate_and_its_authors_is_refused(
    homeserver, short_tmp
):
    server, people = homeserver
    bob, alice, mallory = people["bob"], people["alice"], people["mallory"]
    room = room_for(people)
    webhook = Webhook()
    sandbox = chat_sandbox(short_tmp, server, room, webhook)
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        daemon.wait_for(lambda: "reading approvals in the Matrix room" in daemon.log(), 120, "the chat loop in the room")
        ship_to_staging(sandbox, daemon, "release 2: faster checkout", pusher="alice")
        sandbox.command("rc", "create", "--name", "r1")

        # The request, in the room and on the webhook: candidate, changes, checks, sign-offs, its page.
        asked = bob.wait_for(from_gitopsd("rc/r1 for production"), "the approval request")
        for part in (
            "asks for 1 approval(s) from alice, bob",
            "release 2: faster checkout",
            "Checks:",
            "Sign-offs:",
            "Page: https://deploy.example.org/repos/shop/rcs/r1",
            "approve rc/r1 [reason]",
        ):
            assert part in body(asked), body(asked)
        daemon.wait_for(lambda: webhook.posts, 60, "the webhook's post")
        assert "rc/r1 for production" in webhook.posts[0]["text"] and "release 2" in webhook.posts[0]["text"]

        # alice pushed one of its changes: her approval is refused, in her thread, with the rule's own words.
        asked_id = str(asked["event_id"])
        alice.say(room, "approve rc/r1 lgtm", thread=asked_id)
        refused = bob.wait_for(from_gitopsd("alice: refused"), "the refusal of alice's own candidate")
        assert "alice may not approve rc/r1: it is their own" in body(refused), body(refused)
        assert refused["content"]["m.relates_to"]["rel_type"] == "m.thread"
        assert refused["content"]["m.relates_to"]["event_id"] == asked_id

        # An unmapped account is answered once, then ignored; an unknown candidate gets one line.
        mallory.say(room, "approve rc/r1 trust me")
        bob.wait_for(from_gitopsd("@mallory:gitopsd.test is not mapped"), "the answer to an unmapped account")
        mallory.say(room, "approve rc/r1 really")
        bob.say(room, "approve rc/nope fine")
        unknown = bob.wait_for(from_gitopsd("rc/nope"), "the answer about an unknown candidate")
        assert body(unknown) == "bob: refused: no release candidate rc/nope in shop (see gitopsd rc list)"

        # bob's approval counts: production takes the candidate.
        bob.say(room, "approve rc/r1 checked the changes with product")
        done = bob.wait_for(from_gitopsd("rc/r1 approved by bob"), "the approval's answer")
        assert "approved: production takes it now" in body(done), body(done)
        bob.sync()
        assert sum("is not mapped" in body(e) for e in bob.messages) == 1  # mallory's second message: no answer
        sandbox.command("promote", "rc/r1", "production")
        row = daemon.wait_result("production", sandbox.head("production"), "succeeded", timeout=120)
        assert (row["rc"], row["approved_by"]) == ("r1", ["bob"])
        shown = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)
        assert [(h["actor"], h["kind"]) for h in shown["history"]] == [("bob", "approve")]
        assert shown["history"][0]["note"] == f"checked the changes with product (in Matrix as @bob:{SERVER_NAME})"


def test_the_daemon_keeps_deploying_while_the_homeserver_is_held_stopped_and_the_request_arrives_after(homeserver, short_tmp):
    server, people = homeserver
    room = room_for(people)
    sandbox = chat_sandbox(short_tmp, server, room)
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "reading approvals in the Matrix room" in daemon.log(), 120, "the chat loop in the room")
        with server.held():
            commit = ship_to_staging(sandbox, daemon, "release 3", pusher="alice")
            created = sandbox.command("rc", "create", "--name", "r2")  # answered while the homeserver hangs
            assert "release candidate rc/r2 created" in created.stdout
            sandbox.write("app.txt", "release 4")
            newer = sandbox.commit("release 4")
            sandbox.push("main", "main:qa")
            daemon.wait_result("qa", newer, "succeeded", timeout=120)
        assert sandbox.status()["staging"]["deployed"] == sandbox.head("staging") and commit
        asked = people["bob"].wait_for(from_gitopsd("rc/r2 for production"), "the request sent once it answers again")
        people["bob"].say(room, "approve rc/r2 ok")
        people["bob"].wait_for(from_gitopsd("rc/r2 approved by bob"), "the approval's answer")
        assert asked


def test_a_homeserver_that_refuses_the_login_is_one_line_in_the_log_and_deployments_go_on(homeserver, short_tmp):
    server, people = homeserver
    room = room_for(people)
    sandbox = chat_sandbox(short_tmp, server, room, password="not-the-password")
    with Daemon(sandbox) as daemon:
        line = "refused gitopsd's login or room as @gitopsd-bot"
        daemon.wait_for(lambda: line in daemon.log(), 120, "the refused login in the log")
        sandbox.write("app.txt", "release 5")
        commit = sandbox.commit("release 5")
        sandbox.push("main", "main:qa")
        daemon.wait_result("qa", commit, "succeeded", timeout=120)
        # Attempts went on meanwhile (backoff: 5 s, 10 s, ...): still the one line.
        before = server.requests("/_matrix/client/v3/login")
        daemon.wait_for(lambda: server.requests("/_matrix/client/v3/login") >= before + 2, 120, "two more login attempts")
        assert daemon.log().count(line) == 1, daemon.log()
        assert "Traceback" not in daemon.log()
