"""Notifications on every failed deployment and every rollback: a command and/or a webhook, JSON both.

A notification never fails or blocks a deployment for long: each has a short timeout and its
errors are logged, not raised.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.parse
import urllib.request
from typing import Any

from ..core.settings import Notify

log = logging.getLogger("gitopsd.notify")
TIMEOUT = 10


def notify(target: Notify, event: dict[str, Any]) -> None:
    body = json.dumps(event).encode()
    extra = {"repo": event.get("repo"), "env": event.get("env"), "deployment": event.get("deployment")}
    if target.command:
        try:
            proc = subprocess.run(list(target.command), input=body, capture_output=True, timeout=TIMEOUT, check=False)
            if proc.returncode != 0:
                log.warning(
                    "notify command %s exited %d: %s",
                    target.command[0],
                    proc.returncode,
                    proc.stderr.decode(errors="replace").strip()[:200],
                    extra=extra,
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notify command %s failed: %s", target.command[0], exc, extra=extra)
    if target.webhook:
        request = urllib.request.Request(  # noqa: S310 (http(s) only: the scheme is checked before)
            target.webhook,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "gitopsd"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=TIMEOUT) as response:
                response.read(1024)
        except OSError as exc:
            log.warning("notify webhook %s failed: %s", target.webhook, exc, extra=extra)


def post_text(webhook: str, text: str) -> bool:
    """Post `text` to a Slack-compatible incoming webhook ({"text": ...}; Mattermost and Rocket.Chat take it too)."""
    request = urllib.request.Request(  # noqa: S310 (http(s) only: the config checks the scheme)
        webhook,
        data=json.dumps({"text": text}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "gitopsd"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            response.read(1024)
    except OSError as exc:
        # the webhook's path is its secret (Slack's /services/T/B/XXXX): only the host is logged
        log.warning(
            "chat webhook at %s failed: %s; the approval request was not posted there", urllib.parse.urlsplit(webhook).netloc, exc
        )
        return False
    return True
