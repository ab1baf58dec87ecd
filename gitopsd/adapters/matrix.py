"""Matrix's client-server API over plain HTTP: log in, join a room, read it (sync), post to it.

The one module that speaks Matrix (gitopsd/services/chatroom.py decides what to say). Plain HTTP through
urllib rather than a client library: a few calls, each with a timeout, no event loop, no new
dependency of the daemon. Rooms are read unencrypted (docs/human-gates.md says so).
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API = "/_matrix/client/v3"
DEVICE_ID = "GITOPSD"  # one device, reused by every login: no pile of devices on the account
_txn = itertools.count(1)


class MatrixError(Exception):
    """A request the homeserver refused (`status`, Matrix's `errcode`) or could not be made (status 0)."""

    def __init__(self, message: str, status: int = 0, errcode: str = ""):
        super().__init__(message)
        self.status, self.errcode = status, errcode


class MatrixClient:
    """gitopsd's account on a homeserver: every call waits at most `timeout` seconds (a sync: its wait longer)."""

    def __init__(self, homeserver: str, user: str, timeout: float):
        self.homeserver, self.user, self.timeout = homeserver.rstrip("/"), user, timeout
        self.token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        url = self.homeserver + API + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Content-Type": "application/json", "User-Agent": "gitopsd"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 (http(s): config checks the scheme)
            url,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers=headers,
        )
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                answer = json.loads(response.read(8 * 2**20) or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read(65536) or b"{}")
            except ValueError:
                error = {}
            raise MatrixError(
                f"{exc.code} {error.get('errcode', '')} {error.get('error', exc.reason)}".strip(),
                exc.code,
                str(error.get("errcode", "")),
            ) from None
        except (OSError, ValueError) as exc:  # refused, reset, timed out, not JSON
            raise MatrixError(f"cannot reach {self.homeserver}: {exc}") from None
        if not isinstance(answer, dict):
            raise MatrixError(f"{self.homeserver} answered something that is not Matrix's JSON")
        return answer

    def login(self, password: str) -> None:
        """Log in with the account's password (raise MatrixError: 403 M_FORBIDDEN for a wrong one)."""
        self.token = None
        answer = self._call(
            "POST",
            "/login",
            {
                "type": "m.login.password",
                "device_id": DEVICE_ID,
                "identifier": {"type": "m.id.user", "user": self.user},
                "password": password,
                "initial_device_display_name": "gitopsd",
            },
        )
        self.token = str(answer.get("access_token") or "") or None
        if self.token is None:
            raise MatrixError("the homeserver's login answer has no access token")

    def join(self, room: str) -> str:
        """Join a room by id or alias (it must be public or invite gitopsd); return its id."""
        answer = self._call("POST", f"/join/{urllib.parse.quote(room, safe='')}", {})
        return str(answer["room_id"]) if "room_id" in answer else room

    def sync(self, room_id: str, since: str | None, wait: float) -> tuple[str, list[dict[str, Any]]]:
        """New messages in the room since `since` (None: none, just where the room is now), waiting up to `wait` s."""
        timeline: dict[str, Any] = {"types": ["m.room.message"]} if since else {"limit": 1, "types": ["m.room.message"]}
        filter_ = {
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "rooms": [room_id],
                "timeline": timeline,
                "state": {"types": []},
                "ephemeral": {"types": []},
                "account_data": {"types": []},
            },
        }
        query = {"filter": json.dumps(filter_), "timeout": str(int(wait * 1000) if since else 0)}
        if since:
            query["since"] = since
        answer = self._call("GET", "/sync", query=query, timeout=self.timeout + wait)
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        events = room.get("timeline", {}).get("events", []) if since else []
        return str(answer.get("next_batch", since or "")), [e for e in events if isinstance(e, dict)]

    def send(self, room_id: str, text: str, *, reply_to: dict[str, Any] | None = None) -> str:
        """Post `text` to the room; as an answer to `reply_to` (in its thread when it was in one). Return its id."""
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
        if reply_to is not None:
            relates = reply_to.get("content", {}).get("m.relates_to") or {}
            if relates.get("rel_type") == "m.thread":
                content["m.relates_to"] = {
                    "rel_type": "m.thread",
                    "event_id": relates.get("event_id"),
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": reply_to.get("event_id")},
                }
            else:
                content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to.get("event_id")}}
        txn = f"gitopsd.{time.time_ns()}.{next(_txn)}"
        answer = self._call("PUT", f"/rooms/{urllib.parse.quote(room_id, safe='')}/send/m.room.message/{txn}", content)
        return str(answer.get("event_id", ""))
