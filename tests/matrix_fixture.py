"""A real Matrix homeserver (Synapse from PyPI) on loopback, with real accounts and matrix-nio as the people's client.

Synapse gets a generated config (sqlite, one client listener on a free loopback port, no federation,
rate limits out of the way), runs as a process of its own, and is always stopped when the block
ends. Accounts are registered with the shared secret, as `register_new_matrix_user` does for admins.
Skipped when synapse or nio cannot be imported, unless GITOPSD_REQUIRE_MATRIX=1 (then it fails).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import free_port, serving

SERVER_NAME = "gitopsd.test"
UNLIMITED = {"per_second": 1000, "burst_count": 1000}


def require_matrix() -> None:
    """Skip the test (or fail it, with GITOPSD_REQUIRE_MATRIX=1) when Synapse or matrix-nio is missing."""
    missing = [m for m in ("synapse", "nio") if importlib.util.find_spec(m) is None]
    if missing:
        why = (
            f"{' and '.join(missing)} not importable: install the test extras (pip install -e '.[test]', "
            "matrix-synapse and matrix-nio)"
        )
        if os.environ.get("GITOPSD_REQUIRE_MATRIX") == "1":
            pytest.fail(f"GITOPSD_REQUIRE_MATRIX=1 but {why}")
        pytest.skip(why)


class Person:
    """One Matrix account, used through matrix-nio as a person's client would."""

    def __init__(self, server: Synapse, name: str, password: str):
        self.server, self.name, self.password = server, name, password
        self.user_id = f"@{name}:{SERVER_NAME}"
        self.token, self.device, self.since = "", "", ""
        self.messages: list[dict[str, Any]] = []  # every room message seen since login, oldest first
        self.read = 0  # messages before this one were looked at by wait_for

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """Run `work(client)` with a fresh nio client (each asyncio.run has its own loop and HTTP session)."""
        from nio import AsyncClient

        async def go() -> Any:
            client = AsyncClient(self.server.url, self.user_id)
            if self.token:
                client.restore_login(self.user_id, self.device, self.token)
            try:
                return await work(client)
            finally:
                await client.close()

        return asyncio.run(go())

    def login(self) -> Person:
        from nio import LoginResponse

        async def work(client: Any) -> Any:
            return await client.login(self.password, device_name="test")

        answer = self._run(work)
        assert isinstance(answer, LoginResponse), answer
        self.token, self.device = answer.access_token, answer.device_id
        self.sync()
        self.messages, self.read = [], 0  # from now on `messages` holds only what comes later
        return self

    def create_room(self, invite: list[str]) -> str:
        from nio import RoomCreateResponse, RoomPreset

        async def work(client: Any) -> Any:
            return await client.room_create(name="deploys", preset=RoomPreset.private_chat, invite=invite)

        answer = self._run(work)
        assert isinstance(answer, RoomCreateResponse), answer
        return str(answer.room_id)

    def join(self, room: str) -> None:
        from nio import JoinResponse

        async def work(client: Any) -> Any:
            return await client.join(room)

        answer = self._run(work)
        assert isinstance(answer, JoinResponse), answer

    def say(self, room: str, text: str, thread: str | None = None) -> str:
        """Type `text` in the room (in the thread of event `thread`); return the message's event id."""
        from nio import RoomSendResponse

        content: dict[str, Any] = {"msgtype": "m.text", "body": text}
        if thread:
            content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread}

        async def work(client: Any) -> Any:
            return await client.room_send(room, "m.room.message", content)

        answer = self._run(work)
        assert isinstance(answer, RoomSendResponse), answer
        return str(answer.event_id)

    def sync(self) -> list[dict[str, Any]]:
        """Read the room messages (raw events, with room_id) since the last look into `messages`; return the new ones."""
        from nio import SyncResponse

        async def work(client: Any) -> Any:
            return await client.sync(timeout=1000, since=self.since or None, full_state=False)

        answer = self._run(work)
        assert isinstance(answer, SyncResponse), answer
        self.since = answer.next_batch
        new = [
            {**event.source, "room_id": room_id}
            for room_id, room in answer.rooms.join.items()
            for event in room.timeline.events
            if event.source.get("type") == "m.room.message"
        ]
        self.messages += new
        return new

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120) -> dict[str, Any]:
        """Wait for a message after the last one found for which `predicate` holds; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.read, len(self.messages)):
                if predicate(self.messages[i]):
                    self.read = i + 1
                    return self.messages[i]
            if time.monotonic() > deadline:
                said = "\n".join(f"{e.get('sender')}: {str(e.get('content', {}).get('body', ''))[:300]}" for e in self.messages)
                raise AssertionError(f"{self.name} never saw {what}; the rooms said:\n{said}")
            self.sync()
            time.sleep(0.5)


class Synapse:
    """A running Synapse: its URL, its accounts, and a way to hold it stopped (SIGSTOP) like a hung server."""

    def __init__(self, root: Path, config: Path, proc: subprocess.Popen[bytes], url: str, log: Path):
        self.root, self.config, self.proc, self.url, self.log = root, config, proc, url, log

    def register(self, name: str, password: str) -> Person:
        script = Path(sys.executable).parent / "register_new_matrix_user"
        subprocess.run(
            [str(script), "-c", str(self.config), "-u", name, "-p", password, "--no-admin", self.url],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return Person(self, name, password)

    def requests(self, path: str) -> int:
        """How many requests for `path` Synapse logged (its log is flushed every few seconds)."""
        log = self.root / "homeserver.log"
        return log.read_text(errors="replace").count(path) if log.exists() else 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """The homeserver stopped (SIGSTOP): connections are accepted by the kernel and never answered."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)


@contextmanager
def synapse(root: Path) -> Iterator[Synapse]:
    """Synapse on a free loopback port, its data under `root`, until the block ends."""
    require_matrix()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "homeserver.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            SERVER_NAME,
            "--config-path",
            str(config),
            "--data-directory",
            str(root),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        capture_output=True,
        cwd=root,
        timeout=300,
    )
    port = free_port()
    data = yaml.safe_load(config.read_text())
    data.update(
        {
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "enable_metrics": False,
            "presence": {"enabled": False},
            "rc_message": UNLIMITED,
            "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
            "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED},
        }
    )
    config.write_text(yaml.safe_dump(data))
    log = root / "synapse.out"
    url = f"http://127.0.0.1:{port}"
    # timeout: a busy machine; Synapse's first start builds its database. A test that failed while holding it
    # stopped (SIGSTOP) is fine: serving sends SIGCONT before SIGTERM.
    with serving(
        "Synapse",
        [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
        f"{url}/_matrix/client/versions",
        log,
        timeout=180,
        cwd=root,
    ) as proc:
        yield Synapse(root, config, proc, url, log)
