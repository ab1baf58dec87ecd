"""Grafana annotations: each deployment's end marked on the dashboards (docs/monitoring.md, "Grafana annotations").

The daemon hands each finished deployment to `AnnotationSender.send`, which returns at once; one
background thread POSTs it to Grafana's /api/annotations with a short timeout. Grafana down, slow
or refusing never delays or fails a deployment: the annotation is dropped with one warning.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any

from ..core.settings import Grafana
from ..core.types import Deployment

log = logging.getLogger("gitopsd.annotations")

QUEUE_MAX = 1000  # annotations waiting for a slow Grafana at most; more are dropped (the history has them)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # a redirect would resend the token elsewhere


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def annotation(grafana: Grafana, d: Deployment) -> dict[str, Any]:
    """The body Grafana's POST /api/annotations takes for deployment `d` (times in milliseconds)."""
    took = max(0.0, (d.finished_at or d.started_at) - d.started_at)
    body: dict[str, Any] = {
        "time": int(d.started_at * 1000),
        "timeEnd": int((d.finished_at or d.started_at) * 1000),
        "tags": ["gitopsd", f"repo:{d.repo}", f"env:{d.env}", f"kind:{d.kind}", f"result:{d.result}"],
        "text": f"{d.repo}/{d.env}: {d.kind} of {d.commit[:12]} {d.result} (deployment #{d.id}, {d.trigger} by "
        f"{d.actor}, {took:.1f}s)",
    }
    if grafana.dashboard_uid:
        body["dashboardUID"] = grafana.dashboard_uid
    return body


def post(grafana: Grafana, body: dict[str, Any]) -> None:
    """POST one annotation. Raise OSError (urllib's errors are OSErrors) or ValueError saying what failed."""
    token = grafana.token_file.read_text().strip()
    if not token or "\n" in token:
        raise ValueError(f"{grafana.token_file} must hold one line: a Grafana service account token")
    request = urllib.request.Request(  # noqa: S310 (config checks http(s))
        f"{grafana.url}/api/annotations",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json", "Authorization": f"Bearer {token}"},
    )
    with _OPENER.open(request, timeout=grafana.timeout) as answer:
        answer.read(65536)


class AnnotationSender:
    """One thread that posts annotations in order; `send` never blocks."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Grafana, Deployment] | None] = queue.Queue(QUEUE_MAX)
        self._thread = threading.Thread(target=self._work, name="annotations", daemon=True)
        self._thread.start()

    def send(self, grafana: Grafana, deployment: Deployment) -> None:
        try:
            self._queue.put_nowait((grafana, deployment))
        except queue.Full:
            log.warning(
                "Grafana annotation of deployment #%s dropped: %d are waiting for %s",
                deployment.id,
                QUEUE_MAX,
                grafana.url,
                extra={"repo": deployment.repo, "env": deployment.env},
            )

    def stop(self, wait: float = 2.0) -> None:
        """Send what is queued within `wait` seconds, then stop (the thread is a daemon thread: never hangs a stop)."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(wait)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            grafana, d = item
            try:
                post(grafana, annotation(grafana, d))
            except urllib.error.HTTPError as exc:
                log.warning(
                    "Grafana refused the annotation of deployment #%s: HTTP %s from %s/api/annotations "
                    "(check grafana.token_file's token and its permissions)",
                    d.id,
                    exc.code,
                    grafana.url,
                    extra={"repo": d.repo, "env": d.env, "deployment": d.id},
                )
            except (OSError, ValueError) as exc:
                log.warning(
                    "could not annotate deployment #%s in Grafana at %s: %s",
                    d.id,
                    grafana.url,
                    exc,
                    extra={"repo": d.repo, "env": d.env, "deployment": d.id},
                )
            except Exception:  # a bug here must not end the thread (later annotations would queue forever)
                log.exception("annotating deployment #%s in Grafana failed", d.id)
