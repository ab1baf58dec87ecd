"""Approvals from the chat room, the parts without a homeserver: reading a command, the config's `notifications:`.

Real: the config loader on files in a temp folder. The homeserver side is tests/e2e/test_chat_approvals.py.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from gitopsd.config import ConfigError, load
from gitopsd.core.settings import Config, Matrix, Notifications, Repository
from gitopsd.installers import doctor
from gitopsd.services.chatroom import QUEUE_MAX, ChatRoom, parse


@pytest.mark.parametrize(
    "text,command",
    [
        ("approve rc/2026-12-07.1", ("approve", None, "2026-12-07.1", "")),
        ("Approve rc/r1   looks  good\n", ("approve", None, "r1", "looks good")),
        ("reject shop/rc/r1 breaks refunds", ("reject", "shop", "r1", "breaks refunds")),
        ("> <@gitopsd:example.org> release candidate rc/r1 asks for approval\n\napprove rc/r1 ok", ("approve", None, "r1", "ok")),
        ("I approve of rc/r1", None),
        ("approve it tomorrow", None),
        ("rejected rc/r1 earlier", None),
        ("", None),
    ],
)
def test_a_message_is_a_command_only_when_it_starts_with_approve_or_reject_and_names_a_candidate(text, command):
    assert parse(text) == command


def config(tmp_path: Path, notifications: str) -> Path:
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    path = tmp_path / "gitopsd.yml"
    path.write_text(f"repositories:\n  - name: shop\n    path: {repo}\n{notifications}")
    return path


def test_notifications_are_off_unless_configured(tmp_path):
    assert load(config(tmp_path, "")).notifications == Notifications()


def test_a_matrix_room_and_a_webhook_are_read_with_accounts_mapped_to_identities(tmp_path):
    loaded = load(
        config(
            tmp_path,
            "notifications:\n  link: https://deploy.example.org/\n"
            "  slack_webhook: https://hooks.slack.com/services/T/B/x\n"
            "  matrix:\n    homeserver: https://matrix.example.org/\n"
            "    user: '@gitopsd:example.org'\n    password_file: matrix.pw\n"
            "    room: '#deploys:example.org'\n"
            "    accounts: {'@alice:example.org': alice, '@bob:other.org': bob.smith}\n",
        )
    )
    assert loaded.notifications == Notifications(
        link="https://deploy.example.org",
        slack_webhook="https://hooks.slack.com/services/T/B/x",
        matrix=Matrix(
            homeserver="https://matrix.example.org",
            user="@gitopsd:example.org",
            password_file=(tmp_path / "matrix.pw").resolve(),
            room="#deploys:example.org",
            accounts=(("@alice:example.org", "alice"), ("@bob:other.org", "bob.smith")),
        ),
    )
    assert loaded.notifications.matrix is not None
    assert loaded.notifications.matrix.identity("@alice:example.org") == "alice"
    assert loaded.notifications.matrix.identity("Alice") is None  # a display name is no account


def test_each_problem_of_the_chat_settings_is_said_with_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(
            config(
                tmp_path,
                "notifications:\n  slack_webhook: hooks.slack.com\n  color: red\n"
                "  matrix:\n    homeserver: matrix.example.org\n    user: gitopsd\n"
                "    room: deploys\n    accounts: {alice: alice, '@bob:example.org': 'bob smith'}\n"
                "    timeout: 0\n",
            )
        )
    said = "\n".join(str(p) for p in info.value.problems)
    for key in (
        "notifications.slack_webhook",
        "notifications.color",
        "notifications.matrix.homeserver",
        "notifications.matrix.user",
        "notifications.matrix.password_file",
        "notifications.matrix.room",
        "notifications.matrix.accounts: 'alice' is not a Matrix user id",
        "notifications.matrix.accounts.@bob:example.org",
        "notifications.matrix.timeout",
    ):
        assert key in said, said


def test_doctor_reads_the_matrix_password_file_as_the_daemon_would(short_tmp):
    tmp_path = short_tmp  # a state_dir as short as a real one: ssh's control sockets fit in its runs' folders
    path = config(
        tmp_path,
        f"state_dir: {tmp_path / 'state'}\nsandbox: {{enabled: false}}\nnotifications:\n"
        "  matrix: {homeserver: 'https://m.example.org', user: '@gitopsd:m.example.org',\n"
        "           password_file: matrix.pw, room: '#deploys:m.example.org'}\n",
    )
    (tmp_path / "state").mkdir()
    umask = os.umask(0o022)  # probe sets the service's umask: this process's is put back
    try:
        missing = [f.what for f in doctor.probe(load(path)) if not f.ok]
        (tmp_path / "matrix.pw").write_text("secret\n")
        found = [f.what for f in doctor.probe(load(path)) if not f.ok]
    finally:
        os.umask(umask)
    assert missing == [f"the Matrix password file {(tmp_path / 'matrix.pw').resolve()} does not exist"], missing
    assert found == []


class Room:
    """What gitopsd posts to the room (MatrixClient.send's part the answers use)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None]] = []

    def send(self, _room_id: str, text: str, *, reply_to: dict[str, Any] | None = None) -> str:
        self.posts.append((text, (reply_to or {}).get("event_id")))
        return f"$answer{len(self.posts)}"


MATRIX = Matrix(
    homeserver="https://m.example.org",
    user="@gitopsd:m.example.org",
    password_file=Path("/nonexistent"),
    room="#deploys:m.example.org",
    accounts=(("@bob:m.example.org", "bob"),),
)


def chat(*repos: str) -> tuple[ChatRoom, list[tuple[str, dict[str, Any]]]]:
    asked: list[tuple[str, dict[str, Any]]] = []

    def handle(identity: str, request: dict[str, Any]) -> dict[str, Any]:
        asked.append((identity, request))
        return {"ok": True, "message": f"rc/{request['rc']} {request['op']}d by {identity}"}

    config = Config(
        source=Path("/nonexistent"),
        notifications=Notifications(matrix=MATRIX),
        repositories=tuple(Repository(name=r, path=Path(f"/srv/git/{r}.git"), environments=()) for r in repos),
    )
    return ChatRoom(lambda: config, handle, Path("/nonexistent/since")), asked


def said(sender: str, body: str, event_id: str = "$1") -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "event_id": event_id, "content": {"msgtype": "m.text", "body": body}}


def test_an_unmapped_account_is_answered_and_logged_once_then_ignored(caplog):
    room, (chat_room, asked) = Room(), chat("shop")
    for n in range(3):
        chat_room._answer(room, MATRIX, "!r", said("@mallory:m.example.org", "approve rc/r1 trust me", f"${n}"))
    assert [p[1] for p in room.posts] == ["$0"] and "is not mapped to an identity" in room.posts[0][0]
    assert caplog.text.count("mapped to no identity") == 1 and asked == []


def test_the_mapped_account_is_the_identity_whatever_its_display_name_and_the_reason_is_recorded():
    room, (chat_room, asked) = Room(), chat("shop")
    chat_room._answer(room, MATRIX, "!r", said("@bob:m.example.org", "approve rc/r1 checked it", "$9"))
    assert asked == [("bob", {"op": "approve", "rc": "r1", "note": "checked it (in Matrix as @bob:m.example.org)"})]
    assert room.posts == [("rc/r1 approved by bob", "$9")]


def test_a_rejection_without_reason_and_a_candidate_of_no_named_repository_are_answered_not_done():
    room, (chat_room, asked) = Room(), chat("shop", "billing")
    chat_room._answer(room, MATRIX, "!r", said("@bob:m.example.org", "reject rc/r1"))
    chat_room._answer(room, MATRIX, "!r", said("@bob:m.example.org", "approve rc/r1 fine"))
    assert asked == []
    assert room.posts[0][0] == "say why: reject rc/r1 REASON (the reason is recorded with your name)"
    assert room.posts[1][0] == "name the repository: approve REPO/rc/r1 ... (repositories: shop, billing)"
    chat_room._answer(room, MATRIX, "!r", said("@bob:m.example.org", "approve billing/rc/r1 fine"))
    assert asked[0][1]["repo"] == "billing"
    chat_room._answer(room, MATRIX, "!r", said("@gitopsd:m.example.org", "approve billing/rc/r1 me myself"))
    assert len(asked) == 1  # gitopsd's own posts are never commands


def test_stopping_does_not_wait_on_a_webhook_queue_full_of_posts_for_a_webhook_that_never_answers():
    config = Config(source=Path("/nonexistent"), notifications=Notifications(slack_webhook="http://127.0.0.1:9/hook"))
    chat_room = ChatRoom(lambda: config, lambda _i, _r: {}, Path("/nonexistent/since"))
    for n in range(QUEUE_MAX + 1):  # its thread is not started: nothing is sent, the queue fills
        chat_room.announce({"event": "rc-created", "repo": "shop", "env": "production", "rc": f"r{n}"})
    stopper = threading.Thread(target=chat_room.stop, daemon=True)
    stopper.start()
    stopper.join(60)  # a deadlock, not a speed: stop() returns at once
    assert not stopper.is_alive()
