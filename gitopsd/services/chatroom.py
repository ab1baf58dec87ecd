"""Approvals from the chat room: approval requests posted to Matrix and Slack, answers read from the Matrix room.

A release candidate that asks for approval is posted (candidate, changes, checks, sign-offs, a link
to its page) to the configured Matrix room and Slack-compatible webhook. In the Matrix room an
approver types `approve rc/NAME [reason]` or `reject rc/NAME reason`; the sender's Matrix id (which
the homeserver vouches for, never a display name) is mapped to an identity by the config, and the
request goes through the same path as the control socket's (HumanGates: approvers, required groups,
no self-approval, expiry). The answer goes back to the room, in the sender's thread.

Each side has its own thread with timeouts and backoff: a homeserver that is down, slow or refuses
the login never holds up a deployment, a release candidate or the control socket.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..adapters.matrix import MatrixClient, MatrixError
from ..adapters.notifications import post_text
from ..base import gitcli
from ..core.settings import Config, Matrix

log = logging.getLogger("gitopsd.chat")

SYNC_WAIT = 5.0  # seconds a sync waits for new messages: also how late a queued post may go out
BACKOFF_FIRST, BACKOFF_MAX = 5.0, 300.0  # seconds between attempts while the homeserver fails, doubling
QUEUE_MAX = 200  # posts waiting for a homeserver or webhook that is down; more are dropped (one warning)
REASON_MAX = 900
COMMAND_RE = re.compile(r"^(approve|reject)\s+(?:([A-Za-z0-9][A-Za-z0-9._-]*)/)?rc/(\S+)(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)


def parse(body: str) -> tuple[str, str | None, str, str] | None:
    """Given a message's text, return (approve|reject, repo or None, candidate, reason) if it is a command, else None.

    A reply's quoted fallback (lines starting with '> ' before a blank line) is not part of the command."""
    lines = body.strip().splitlines()
    if lines and lines[0].startswith(">"):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
    text = " ".join(line.strip() for line in lines if line.strip())
    found = COMMAND_RE.match(text)
    if found is None:
        return None
    verb, repo, name, reason = found.groups()
    return verb.lower(), repo, name, " ".join((reason or "").split())[:REASON_MAX]


def request_text(config: Config, event: dict[str, Any]) -> str:
    """The approval request for a new release candidate: what it is, its changes, checks and sign-offs, its page."""
    repo, name, env = str(event["repo"]), str(event["rc"]), str(event["env"])
    lines = [
        f"gitopsd: release candidate rc/{name} for {env} ({repo}) asks for {event.get('approvals_required', 1)} "
        f"approval(s) from {', '.join(event.get('approvers', [])) or 'its approvers'}"
    ]
    repository = config.repository(repo)
    if repository is not None:  # the tag's message holds the changes, checks and sign-offs, as `rc show` does
        code, out, _err = gitcli.run(
            ["git", "-C", str(repository.path), "for-each-ref", "--format=%(contents)", f"refs/tags/rc/{name}"]
        )
        body = out.strip().splitlines()[1:] if code == 0 else []
        lines += [line for line in body if line.strip()]
    link = page_link(config, repo, name)
    if link:
        lines.append(f"Page: {link}")
    lines.append(f"Answer in the room: approve rc/{name} [reason] | reject rc/{name} reason")
    return "\n".join(lines)


def page_link(config: Config, repo: str, name: str) -> str | None:
    """The candidate's page on the dashboard: `notifications.link`, else the API's address when the dashboard is on."""
    base = config.notifications.link
    if base is None and config.api is not None and config.web is not None:
        base = f"http://{config.api.host}:{config.api.port}"
    return f"{base}/repos/{repo}/rcs/{name}" if base else None


class ChatRoom:
    """The Matrix room's reader and poster, and the webhook poster: each a thread of its own; `announce` never blocks."""

    def __init__(self, config: Callable[[], Config], handle: Callable[[str, dict[str, Any]], dict[str, Any]], since_file: Path):
        self.config, self.handle, self.since_file = config, handle, since_file
        self.stopping = threading.Event()
        self._room_posts: queue.Queue[str] = queue.Queue(QUEUE_MAX)
        self._webhook_posts: queue.Queue[tuple[str, str] | None] = queue.Queue(QUEUE_MAX)
        self._told_unmapped: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._live = False  # the current session logged in and joined

    def start(self) -> None:
        for target, name in ((self._matrix_loop, "chat-matrix"), (self._webhook_loop, "chat-webhook")):
            thread = threading.Thread(target=target, name=name, daemon=True)  # a hung homeserver never holds up exit
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self._webhook_posts.put_nowait(None)  # wakes the webhook's thread; a full queue: it sees `stopping` next
        except queue.Full:
            pass
        for thread in self._threads:
            thread.join(timeout=2)

    # -- posting -----------------------------------------------------------------------------------------
    def announce(self, event: dict[str, Any]) -> None:
        """Post a new release candidate's approval request to the room and the webhook (queued: returns at once)."""
        if event.get("event") != "rc-created":
            return
        config = self.config()
        chat = config.notifications
        if chat.matrix is None and chat.slack_webhook is None:
            return
        text = request_text(config, event)
        try:
            if chat.matrix is not None:
                self._room_posts.put_nowait(text)
            if chat.slack_webhook is not None:
                self._webhook_posts.put_nowait((chat.slack_webhook, text))
        except queue.Full:
            log.warning(
                "too many chat posts wait for a homeserver or webhook that does not answer: the approval "
                "request of rc/%s was not posted",
                event.get("rc"),
            )

    def _webhook_loop(self) -> None:
        while not self.stopping.is_set():
            item = self._webhook_posts.get()
            if item is not None:
                post_text(*item)

    # -- the Matrix room -------------------------------------------------------------------------------------
    def _matrix_loop(self) -> None:
        """Log in, join, then read the room and post what is queued; on failure wait (doubling) and start again."""
        delay, said = BACKOFF_FIRST, ""
        while not self.stopping.is_set():
            settings = self.config().notifications.matrix
            if settings is None:
                self.stopping.wait(SYNC_WAIT)
                continue
            self._live = False
            try:
                self._session(settings)
                delay = BACKOFF_FIRST  # the settings changed (a reload): a fresh session at once
                continue
            except MatrixError as exc:
                problem = self._explain(settings, exc)
            except OSError as exc:
                problem = f"cannot read {settings.password_file}: {exc.strerror or exc}; check the file and its owner"
            except Exception:  # a bug here must not end approvals from the room for good: said, then tried again
                log.exception("the Matrix room's reader failed")
                problem = "the Matrix room's reader failed (above)"
            if self._live:  # it worked a while: a new outage is said again and retried soon
                delay, said = BACKOFF_FIRST, ""
            if problem != said:  # once per cause: a homeserver that keeps refusing fills no log
                log.warning("%s; approvals from the Matrix room wait: trying again in %.0f s, then less often", problem, delay)
                said = problem
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX)

    @staticmethod
    def _explain(settings: Matrix, exc: MatrixError) -> str:
        if exc.status in (401, 403) and exc.errcode in ("M_FORBIDDEN", "M_USER_DEACTIVATED", "M_UNKNOWN_TOKEN", ""):
            return (
                f"the Matrix homeserver {settings.homeserver} refused gitopsd's login or room as {settings.user} "
                f"({exc}): check notifications.matrix.user, its password file and that {settings.room} "
                "invites it"
            )
        return f"Matrix homeserver {settings.homeserver}: {exc}"

    def _session(self, settings: Matrix) -> None:
        """One logged-in session, until the settings change or the daemon stops; raise MatrixError when it fails."""
        password = settings.password_file.read_text().strip()
        client = MatrixClient(settings.homeserver, settings.user, settings.timeout)
        client.login(password)
        room_id = client.join(settings.room)
        since = self._load_since(settings, room_id)
        if since is None:
            since, _ = client.sync(room_id, None, 0)  # where the room is now: what was said before is not a command
            self._save_since(settings, room_id, since)
        log.info("reading approvals in the Matrix room %s as %s", settings.room, settings.user)
        self._live = True
        while not self.stopping.is_set() and self.config().notifications.matrix == settings:
            while not self._room_posts.empty():
                text = self._room_posts.queue[0]  # peek: a post that fails is sent again once the homeserver answers
                try:
                    client.send(room_id, text)
                except MatrixError as exc:
                    if exc.status in (0, 401, 429) or exc.status >= 500:
                        raise
                    log.warning("the Matrix room %s refused an approval request (%s): dropped", settings.room, exc)
                self._room_posts.get_nowait()
            since, events = client.sync(room_id, since, SYNC_WAIT)
            for event in events:
                if self.stopping.is_set():  # the daemon closes its store: the rest is read at the next start
                    return
                self._answer(client, settings, room_id, event)
            self._save_since(settings, room_id, since)

    def _answer(self, client: MatrixClient, settings: Matrix, room_id: str, event: dict[str, Any]) -> None:
        """Do what one message of the room asks, if it is a command, and answer it in its thread."""
        sender, content = str(event.get("sender", "")), event.get("content") or {}
        if sender == settings.user or not isinstance(content, dict) or content.get("msgtype") != "m.text":
            return
        command = parse(str(content.get("body", "")))
        if command is None:
            return
        verb, repo, name, reason = command
        identity = settings.identity(sender)  # the homeserver's word for the sender; display names mean nothing
        if identity is None:
            if sender not in self._told_unmapped:  # answered (and logged) once, then ignored
                self._told_unmapped.add(sender)
                log.warning("Matrix: %s asked to %s rc/%s but is mapped to no identity: ignored", sender, verb, name)
                client.send(
                    room_id,
                    f"{sender} is not mapped to an identity in gitopsd's config "
                    "(notifications.matrix.accounts): your messages are ignored; ask an admin to "
                    "map your account",
                    reply_to=event,
                )
            return
        if verb == "reject" and not reason:
            client.send(room_id, f"say why: reject rc/{name} REASON (the reason is recorded with your name)", reply_to=event)
            return
        note = f"{reason or 'approved'} (in Matrix as {sender})"
        request: dict[str, Any] = {"op": verb, "rc": name, "note": note}
        if repo is not None:
            request["repo"] = repo
        elif len(self.config().repositories) > 1:
            client.send(
                room_id,
                f"name the repository: {verb} REPO/rc/{name} ... (repositories: "
                f"{', '.join(r.name for r in self.config().repositories)})",
                reply_to=event,
            )
            return
        answer = self.handle(identity, request)
        text = answer["message"] if answer.get("ok") else f"{identity}: refused: {answer.get('error')}"
        log.info(
            "Matrix: %s (%s) asked to %s rc/%s: %s",
            sender,
            identity,
            verb,
            name,
            "done" if answer.get("ok") else answer.get("error"),
        )
        client.send(room_id, text, reply_to=event)

    # -- where reading stopped (so nothing typed while gitopsd was down is lost) --------------------------------
    def _load_since(self, settings: Matrix, room_id: str) -> str | None:
        try:
            key, since = self.since_file.read_text().split("\n", 1)
        except (OSError, ValueError):
            return None
        return since.strip() or None if key == f"{settings.homeserver} {settings.user} {room_id}" else None

    def _save_since(self, settings: Matrix, room_id: str, since: str) -> None:
        try:
            temp = self.since_file.with_name(self.since_file.name + ".tmp")
            temp.write_text(f"{settings.homeserver} {settings.user} {room_id}\n{since}\n")
            os.replace(temp, self.since_file)
        except OSError as exc:
            log.warning("could not save where the Matrix room was read (%s): %s", self.since_file, exc)
