"""`notifications:`: the dashboard link, Slack and Matrix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.settings import Matrix, Notifications
from .problems import IDENTITY_RE, _Checker, _path_field, _url

NOTIFICATIONS_KEYS = {
    "link": "the dashboard's URL, for links in messages",
    "slack_webhook": "Slack incoming webhook URL",
    "matrix": "a Matrix room for requests and approvals",
}
MATRIX_KEYS = {
    "homeserver": "the homeserver's URL",
    "user": "gitopsd's Matrix user, @name:server",
    "password_file": "file holding its password",
    "room": "the room's id or alias",
    "accounts": "Matrix user -> identity, for approvals given in the room",
    "timeout": "seconds per request",
}
MATRIX_USER_RE = re.compile(r"^@[^\s:]+:[^\s]+$")


def _notifications(raw: Any, base: Path, check: _Checker) -> Notifications:
    """`notifications: {link?, slack_webhook?, matrix?}`: approval requests to chat, approvals from a Matrix room."""
    data = check.mapping(raw, "notifications", NOTIFICATIONS_KEYS)
    link = _url(data["link"], "notifications.link", check).rstrip("/") or None if "link" in data else None
    slack = _url(data["slack_webhook"], "notifications.slack_webhook", check) or None if "slack_webhook" in data else None
    return Notifications(
        link=link, slack_webhook=slack, matrix=_matrix(data["matrix"], base, check) if "matrix" in data else None
    )


def _matrix(raw: Any, base: Path, check: _Checker) -> Matrix | None:
    """`notifications.matrix`: the homeserver, gitopsd's account and password file, the room, the mapped accounts."""
    key = "notifications.matrix"
    data = check.mapping(raw, key, MATRIX_KEYS)
    homeserver = _url(data.get("homeserver"), f"{key}.homeserver", check).rstrip("/")
    user = data.get("user")
    if not isinstance(user, str) or not MATRIX_USER_RE.match(user):
        check.add(f"{key}.user", f"must be gitopsd's Matrix user id like @gitopsd:example.org, not {user!r}")
    password = _path_field(
        data.get("password_file"), f"{key}.password_file", "the path of a file holding gitopsd's Matrix password", base, check
    )
    room = data.get("room")
    if not isinstance(room, str) or not re.match(r"^(![^\s]+|#[^\s:]+:[^\s]+)$", room):
        check.add(f"{key}.room", f"must be a room id (!abc:example.org) or alias (#deploys:example.org), not {room!r}")
    accounts_raw = data.get("accounts", {})
    accounts: list[tuple[str, str]] = []
    if not isinstance(accounts_raw, dict):
        check.add(f"{key}.accounts", "must map Matrix user ids to identities, e.g. {'@alice:example.org': alice}")
    else:
        for account, identity in accounts_raw.items():
            if not isinstance(account, str) or not MATRIX_USER_RE.match(account):
                check.add(f"{key}.accounts", f"{account!r} is not a Matrix user id like @alice:example.org")
            elif not isinstance(identity, str) or not IDENTITY_RE.match(identity) or account == user:
                check.add(
                    f"{key}.accounts.{account}", f"must be the identity {account} approves as (a user name), not {identity!r}"
                )
            else:
                accounts.append((account, identity))
    timeout = check.number(data, "timeout", key, Matrix.timeout, minimum=1, maximum=120, what="two minutes")
    if not homeserver or not isinstance(user, str) or password is None or not isinstance(room, str):
        return None
    return Matrix(homeserver=homeserver, user=user, password_file=password, room=room, accounts=tuple(accounts), timeout=timeout)
