"""Telling CI servers about new heads: one webhook per matching `ci.trigger`, sent and retried off the daemon loop.

The daemon's loop hands each new head to `TriggerSender.sink`, which only queues; one worker
thread sends, retrying connection errors, timeouts, 5xx and 429 with capped, jittered
exponential backoff. Any other 4xx (and a redirect, which is never followed, so credentials
never travel to another host) is a configuration problem: logged once, not retried. Secrets are
read from `secret_file` at send time and never logged; logged URLs carry no userinfo or query.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.settings import CiTrigger, Repository
from .heads import HeadEvent, matches

log = logging.getLogger("gitopsd.ci")

BACKOFF = 2.0  # seconds before the first retry; doubled for each one after
BACKOFF_MAX = 300.0  # seconds: no retry waits longer, whatever Retry-After says
SECRET_MAX = 64 * 1024


class TriggerProblem(Exception):
    """A trigger that cannot be sent as configured (e.g. its secret_file is unreadable): not retried."""


@dataclass(frozen=True)
class Request:
    """One webhook, ready to send: the URL as configured minus userinfo, the body and the headers."""

    url: str
    body: bytes
    headers: dict[str, str] = field(repr=False)
    secret: str | None = field(default=None, repr=False)  # to blank it out of any answer that is logged


@dataclass(frozen=True)
class Job:
    """A webhook to send for a new head, and how many attempts it has had."""

    trigger: CiTrigger
    repo_path: str
    event: HeadEvent
    attempt: int = 1


def safe_url(url: str) -> str:
    """The URL as it may be logged: no userinfo, no query, no fragment (tokens live there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return urllib.parse.urlunsplit((parts.scheme, f"{host}:{port}" if port else host, parts.path, "", ""))


def read_secret(path: Path) -> str:
    """The token in `path`, without surrounding whitespace. Raise TriggerProblem when it cannot be had."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(SECRET_MAX + 1)
    except OSError as exc:
        raise TriggerProblem(
            f"cannot read its secret_file {path}: {exc.strerror}; put the token in that file, readable by gitopsd"
        ) from None
    secret = data.decode("utf-8", errors="replace").strip()
    if not secret or len(data) > SECRET_MAX or "\n" in secret or "\r" in secret:
        problem = "empty" if not secret else "too large" if len(data) > SECRET_MAX else "more than one line"
        raise TriggerProblem(f"its secret_file {path} is {problem}; put only the token in that file")
    return secret


def _form(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    return urllib.parse.urlencode(fields).encode(), "application/x-www-form-urlencoded"


def _json(data: object) -> tuple[bytes, str]:
    return json.dumps(data, sort_keys=False).encode(), "application/json"


def build_request(trigger: CiTrigger, repo_path: str, event: HeadEvent) -> Request:
    """The request `trigger.kind` expects for `event` (docs/ci.md, "Triggering your CI server"). Raise TriggerProblem."""
    secret = read_secret(trigger.secret_file) if trigger.secret_file is not None else None
    headers = {"User-Agent": "gitopsd", "Accept": "application/json"}
    if trigger.kind in ("gitlab", "circleci") and secret is None:  # config.load requires one
        raise TriggerProblem(f"a {trigger.kind} trigger needs secret_file, the file holding its token")
    if trigger.kind == "gitlab":
        assert secret is not None
        body, ctype = _form(
            [
                ("token", secret),
                ("ref", event.branch),
                ("variables[GITOPSD_COMMIT]", event.after),
                ("variables[GITOPSD_TREE]", event.tree),
                ("variables[GITOPSD_REPO]", event.repo),
                ("variables[GITOPSD_PUSHER]", event.pusher),
            ]
        )
    elif trigger.kind == "circleci":
        assert secret is not None
        body, ctype = _json(
            {
                "branch": event.branch,
                "parameters": {"gitopsd_commit": event.after, "gitopsd_tree": event.tree, "gitopsd_repo": event.repo},
            }
        )
        headers["Circle-Token"] = secret
    elif trigger.kind == "buildbot":
        body, ctype = _form(
            [
                ("revision", event.after),
                ("branch", event.branch),
                ("repository", repo_path),
                ("project", event.repo),
                ("author", event.pusher),
                ("comments", f"gitopsd: new head of {event.branch} pushed by {event.pusher}"),
                ("properties", json.dumps({"gitopsd_tree": event.tree})),
            ]
        )
    else:  # generic, jenkins: gitopsd's own schema
        body, ctype = _json(event.as_json())
    headers["Content-Type"] = ctype
    # user:password@ in the URL is HTTP basic auth (urllib would take it for part of the host).
    parts = urllib.parse.urlsplit(trigger.url)
    url = trigger.url
    if parts.username is not None or parts.password is not None:
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    if secret is not None and trigger.kind in ("generic", "jenkins"):
        headers["Authorization"] = f"Bearer {secret}"
    elif secret is not None and trigger.kind == "buildbot":  # "user:password" of its change_hook_auth
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    return Request(url, body, headers, secret)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the 3xx it is: following it could carry the token to another host."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `status` (None when no answer came), a short reason, whether to try again."""

    status: int | None
    reason: str
    retry: bool
    retry_after: float | None = None


def send(request: Request, timeout: float) -> Outcome:
    """POST `request` once and classify the answer. Never raises."""
    post = urllib.request.Request(request.url, data=request.body, headers=request.headers, method="POST")  # noqa: S310 (config checks http(s))
    try:
        with _OPENER.open(post, timeout=timeout) as response:
            response.read(64 * 1024)
            return Outcome(response.status, f"HTTP {response.status}", retry=False)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            detail = exc.read(512).decode("utf-8", errors="replace")
        except OSError:
            detail = ""
        finally:
            exc.close()
        if request.secret:
            detail = detail.replace(request.secret, "***")
        detail = " ".join(detail.split())[:200]
        reason = f"HTTP {status} {exc.reason}" + (f": {detail}" if detail else "")
        retry_after = None
        header = exc.headers.get("Retry-After", "") if exc.headers else ""
        if header.strip().isdigit():
            retry_after = float(header.strip())
        return Outcome(status, reason, retry=status >= 500 or status == 429, retry_after=retry_after)
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, DNS, TLS, timeout
        why = getattr(exc, "reason", None) or exc
        return Outcome(None, f"no answer: {why}", retry=True)
    except http.client.HTTPException as exc:  # a connection that spoke something other than HTTP
        return Outcome(None, f"no valid HTTP answer: {type(exc).__name__} {exc}".strip(), retry=True)
    except ValueError as exc:  # e.g. a port that is not a number: the URL itself is wrong
        return Outcome(None, f"cannot send to this URL: {exc}", retry=False)


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number `attempt`: base·2^(attempt−1), capped, with up to half as jitter."""
    delay: float = min(cap, base * 2.0 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rand())


class TriggerSender:
    """The CI triggers' sink and its worker thread: `sink` queues, the worker sends and schedules retries."""

    def __init__(self, *, backoff_base: float = BACKOFF, backoff_max: float = BACKOFF_MAX):
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._due: list[tuple[float, int, Job]] = []  # (monotonic time to send, order, job)
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="ci-triggers", daemon=True)
        self._thread.start()

    def sink(self, repo: Repository, event: HeadEvent) -> None:
        """Queue one webhook per trigger of `repo` whose branches match the new head's branch; returns at once."""
        for trigger in repo.ci.trigger:
            if matches(event.branch, trigger.branches):
                self._queue(Job(trigger, str(repo.path), event), time.monotonic())

    def pending(self) -> int:
        with self._cond:
            return len(self._due)

    def stop(self, wait: float = 2.0) -> None:
        """Send nothing more; drop the webhooks waiting for their (next) attempt, with one log line."""
        with self._cond:
            self._stopping = True
            dropped = len(self._due)
            self._due.clear()
            self._cond.notify_all()
        if dropped:
            log.warning(
                "stopping: %d CI trigger%s waiting to be sent or retried %s dropped",
                dropped,
                "" if dropped == 1 else "s",
                "is" if dropped == 1 else "are",
            )
        if self._thread is not None:
            self._thread.join(wait)  # an attempt in flight ends at its timeout; the thread is a daemon thread

    def _queue(self, job: Job, at: float) -> None:
        with self._cond:
            if self._stopping:
                return
            heapq.heappush(self._due, (at, next(self._order), job))
            self._cond.notify()

    def _next(self) -> Job | None:
        """The next job once it is due; None when stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                self._cond.wait(self._due[0][0] - now if self._due else None)
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._attempt(job)
            except Exception:  # a bug here must not end the thread: later heads still get sent
                log.exception(
                    "CI trigger to %s failed unexpectedly",
                    safe_url(job.trigger.url),
                    extra={"repo": job.event.repo, "commit": job.event.after[:7]},
                )

    def _attempt(self, job: Job) -> None:
        trigger, event = job.trigger, job.event
        where = f"{trigger.kind} trigger {safe_url(trigger.url)}"
        what = f"{event.branch} at {event.after[:7]}"
        extra = {"repo": event.repo, "commit": event.after[:7]}
        attempts = trigger.retries + 1
        try:
            request = build_request(trigger, job.repo_path, event)
        except TriggerProblem as exc:
            log.error("%s not sent for %s: %s", where, what, exc, extra=extra)
            return
        outcome = send(request, trigger.timeout)
        if outcome.status is not None and 200 <= outcome.status < 300:
            log.info(
                "%s told about %s (%s%s)",
                where,
                what,
                outcome.reason,
                f", attempt {job.attempt} of {attempts}" if job.attempt > 1 else "",
                extra=extra,
            )
        elif not outcome.retry:
            log.error(
                "%s refused %s: %s; not retried: check the trigger's url, kind and secret_file",
                where,
                what,
                outcome.reason,
                extra=extra,
            )
        elif job.attempt >= attempts:
            log.error(
                "%s failed for %s (attempt %d of %d): %s; giving up",
                where,
                what,
                job.attempt,
                attempts,
                outcome.reason,
                extra=extra,
            )
        else:
            delay = backoff(job.attempt, self.backoff_base, self.backoff_max)
            if outcome.retry_after is not None:
                delay = min(max(delay, outcome.retry_after), self.backoff_max)
            log.warning(
                "%s failed for %s (attempt %d of %d): %s; next attempt in %.1fs",
                where,
                what,
                job.attempt,
                attempts,
                outcome.reason,
                delay,
                extra=extra,
            )
            self._queue(replace(job, attempt=job.attempt + 1), time.monotonic() + delay)
