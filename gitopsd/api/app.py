"""The HTTP API as a Starlette app (docs/api.md): commit statuses in, status and history out, as JSON.

Kept thin: each route checks the token and the input, then calls the functions the command line
uses (api/statuses.py, status.all_status, the store). Sign-offs, release candidates and approvals go
to the daemon's HumanGates.handle, as the control socket's requests do, acting as the token's owner.
The routes live by concern in api/routes/ and share api/context.py (token, repository, thread pool)
and api/inputs.py (bodies, fields, refusals); this module assembles them and guards the whole.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..adapters.store import Store
from ..core.errors import INTERNAL, INVALID, MISSING, STATUS, UNAVAILABLE, UNSUPPORTED, error_body
from ..core.settings import Config
from ..services.tokens import TokenCheck
from . import statuses
from .context import SERVING, Context, HumanGatesHandler
from .inputs import ApiError
from .routes import break_glass, change_control, commit_statuses, reading
from .routes import human_gates as gate_routes  # create_app's `human_gates` is the daemon's handler

log = logging.getLogger("gitopsd.api")


def create_app(
    config: Callable[[], Config],
    store: Store,
    tokens: TokenCheck,
    on_status: Callable[[str], None] = lambda _repo: None,
    human_gates: HumanGatesHandler | None = None,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
) -> ASGIApp:
    """The API over the daemon's (current) config and store; `on_status(repo)` after each stored status;
    `human_gates(identity, request)` records sign-offs, release candidates and approvals (HumanGates.handle);
    `metrics()` the Prometheus text for /metrics (no token: it listens where the API does, loopback by default)."""
    api = Context(config, store, tokens, on_status, human_gates, metrics)

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, statuses.InvalidStatus)
        return JSONResponse(error_body(exc.message, INVALID, "bad_field", exc.field), status_code=STATUS[INVALID])

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(
            error_body("no such API endpoint (see /api/v1/openapi.json)", MISSING, "no_endpoint"), status_code=STATUS[MISSING]
        )

    async def not_allowed(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(
            error_body("method not allowed here (see /api/v1/openapi.json)", UNSUPPORTED, "method_not_allowed"),
            status_code=STATUS[UNSUPPORTED],
        )

    async def internal(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(
            error_body("internal error; the daemon's log says more", INTERNAL, "internal_error"), status_code=STATUS[INTERNAL]
        )

    v1 = "/api/v1"
    statuses_own, statuses_github = commit_statuses.routes(api, v1)
    app = Starlette(
        routes=[
            *reading.routes(api, v1),
            *statuses_own,
            *gate_routes.routes(api, v1),
            *change_control.routes(api, v1),
            *break_glass.routes(api, v1),
            *statuses_github,  # last: GitHub's /repos/{owner}/{repo} would take /repos/shop/rcs
        ],
        exception_handlers={
            ApiError: api_error,
            statuses.InvalidStatus: invalid,
            404: not_found,
            405: not_allowed,
            500: internal,
        },
    )
    return Guard(app)


def create_standby_app(metrics: Callable[[], tuple[bytes, str]], leader: Callable[[], str]) -> ASGIApp:
    """A standby's HTTP answers (docs/install.md, "Standby daemon"): its /metrics (role and process only: the leader's
    scrape has the deployments), and 503 for the rest, naming the leader, so a load balancer's health check on
    /api/v1/health sends requests to the leader."""

    async def prometheus(_request: Request) -> Response:
        body, content_type = await run_in_threadpool(metrics)
        return Response(body, media_type=content_type)

    async def elsewhere(_request: Request) -> Response:
        return JSONResponse(
            {**error_body(f"this gitopsd is the standby; {leader()}", UNAVAILABLE, "standby"), "role": "standby"},
            status_code=STATUS[UNAVAILABLE],
            headers={"Retry-After": "5"},
        )

    return Starlette(
        routes=[
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/{path:path}", elsewhere, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )


class Guard:
    """Outermost: one DEBUG line per request (method, path, status, time, token), and no exception past it;
    a path that is not printable text once percent-decoded (%FF, %00) is a 422 before any route sees it.

    Starlette answers a bug with a 500 and raises it again for the server to log; the daemon's log
    gets one line here instead of a traceback from the server's logger (the traceback at DEBUG).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        answered = 0
        garbled = _garbled(scope)
        if garbled:
            await _send_json(
                send,
                STATUS[INVALID],
                error_body(
                    "is not printable UTF-8 text once percent-decoded; names and values in URLs are printable text",
                    INVALID,
                    "bad_field",
                    garbled,
                ),
            )
            return

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            await send(message)

        SERVING.set(f"API {scope['method']} {scope['path']}")
        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.error(
                "API %s %s failed: %s: %s",
                scope["method"],
                scope["path"],
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if not answered:
                await _send_json(
                    send, STATUS[INTERNAL], error_body("internal error; the daemon's log says more", INTERNAL, "internal_error")
                )
                answered = 500
        finally:
            log.debug(
                "API %s %s -> %d in %.1f ms%s",
                scope["method"],
                scope["path"],
                answered,
                (time.perf_counter() - t0) * 1000,
                f" (token {scope['gitopsd.token']})" if scope.get("gitopsd.token") else "",
            )


def _garbled(scope: Scope) -> str | None:
    """ "path" or "query" if that part of the URL is not printable UTF-8 text once percent-decoded, else None."""
    if "\ufffd" in scope["path"] or not scope["path"].isprintable():  # the server decodes bytes that are not UTF-8 as U+FFFD
        return "path"
    try:
        query = unquote_to_bytes(bytes(scope.get("query_string", b""))).decode("utf-8")
    except UnicodeDecodeError:
        return "query"
    return None if query.isprintable() else "query"


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
