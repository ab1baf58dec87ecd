"""The web dashboard as a Starlette app, served at / by the daemon's uvicorn server beside /api/v1 and /metrics.

The pages (pages.py) only read; who you are and the forms that act (promote, roll back, retry,
sign off, approve) are auth.py and actions.py, mounted here with their session middleware. Live
updates are server-sent events: /events says "changed" and each page fetches itself again;
/deployments/ID/output streams a running deployment's Ansible output.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..adapters.store import Store
from ..core.errors import UNAVAILABLE, GitError, StoreError
from ..core.settings import Config, Environment, Repository
from ..services import failures
from . import pages

log = logging.getLogger("gitopsd.web")

KEEPALIVE = 15.0  # seconds between comments on an idle event stream (proxies close silent ones)
STREAM_POLL = 0.25  # seconds between looks at a running deployment's output files
# Pages may load only what this server sends: no inline script, no other origin. htmx is told (meta
# htmx-config) not to add inline styles or evaluate attributes, so it works under this policy.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
ROLES = ("viewer", "deployer", "approver", "admin")


def create_web_app(  # noqa: C901 (the dashboard's route table: each nested page counts toward its maker)
    config: Callable[[], Config],
    store: Store | None = None,
    *,
    human_gates: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    api: ASGIApp | None = None,
    stopping: threading.Event | None = None,
    interval: float = 0.2,
    in_state: Callable[[str], set[str]] | None = None,
    on_stop: Callable[[Callable[[], None]], None] | None = None,
) -> ASGIApp:
    """The dashboard over the daemon's (current) config and a read-only store; requests to /api/ and /metrics
    go to `api`. `human_gates` is the daemon's HumanGates.handle, for the forms that sign off and approve;
    `stopping` ends the event streams when the server stops; `in_state` is the daemon's StatusRows.in_state;
    `on_stop` is given what to close once the server has stopped (the database connections made here)."""
    reader = store if store is not None else Store.of(config(), readonly=True)
    stopping = stopping or threading.Event()
    changes = pages.Changes(config().database, lambda: [r.path for r in config().repositories], interval)
    changes.stopping = stopping
    if on_stop is not None:
        on_stop(changes.close)
        if store is None:
            on_stop(reader.close)
    env = pages.templates()
    from . import actions, auth, roles

    def render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        user = auth.current_user(request)
        body = env.get_template(name).render(
            request=request,
            user=user,
            csrf=auth.csrf_token(request) if user is not None else "",
            role=lambda repo, env_name: roles.role(user, repo, env_name) if user is not None else None,
            at_least=lambda have, want: have in ROLES and ROLES.index(have) >= ROLES.index(want),
            path=request.url.path,
            flash=auth.take_flash(request),
            **values,
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def signed_in(request: Request) -> None:
        """Every page needs a signed-in user (a viewer at least): otherwise off to the login page."""
        if auth.current_user(request) is None:
            raise HTTPException(303, headers={"location": f"/login?next={request.url.path}"})

    def repository(name: str) -> Repository:
        repo = config().repository(name)
        if repo is None:
            raise HTTPException(404, f"no repository named {name!r}")
        return repo

    def environment(repo: Repository, name: str) -> Environment:
        found = repo.environment(name)
        if found is None:
            raise HTTPException(404, f"repository {repo.name} has no environment {name!r}")
        return found

    async def blocking(fn: Callable[..., Any], *args: Any, request: Request) -> Any:
        """Git and SQLite off the event loop; their failure is a page that says so (failures.server_failure), not a crash."""
        try:
            return await run_in_threadpool(fn, *args)
        except (StoreError, GitError, OSError) as exc:
            refused = failures.server_failure(exc, log, f"web page {request.url.path}")
            retry = {"retry-after": failures.RETRY_AFTER} if refused.kind == UNAVAILABLE else None
            raise HTTPException(refused.status, str(refused), headers=retry) from exc

    async def pipeline_page(request: Request) -> Response:
        signed_in(request)
        query = request.query_params
        state, raw = query.get("state", ""), query.get("page", "1")
        if state and state not in pages.STATES:
            raise HTTPException(400, f"state must be one of {', '.join(pages.STATES)}")
        if whole_number(raw) is None:
            raise HTTPException(400, "page must be a page number (1, 2, ...)")
        view = await blocking(
            pages.pipeline_view, config(), reader, query.get("repo", ""), state, int(raw), in_state, request=request
        )
        live = request.url.path + (f"?{request.url.query}" if request.url.query else "")  # the live refresh keeps the filters
        return render(request, "pipeline.html", title="Pipeline", live=live, states=list(pages.STATES), **view)

    async def environment_page(request: Request) -> Response:
        signed_in(request)
        repo = repository(request.path_params["repo"])
        env_ = environment(repo, request.path_params["env"])
        raw = request.query_params.get("before", "")
        if raw and whole_number(raw) is None:
            raise HTTPException(404, "before must be a deployment number")
        view = await blocking(pages.environment_page, config(), reader, repo, env_, int(raw) if raw else None, request=request)
        return render(
            request, "environment.html", repo=repo, env=env_, title=f"{repo.name} / {env_.name}", first_page=not raw, **view
        )

    def deployment_of(request: Request) -> Any:
        ident = whole_number(str(request.path_params["id"]))
        dep = reader.get(ident) if ident is not None else None
        repo = config().repository(dep.repo) if dep is not None else None
        if dep is None or repo is None or repo.environment(dep.env) is None:
            raise HTTPException(404, f"no deployment #{request.path_params['id']}")
        return dep

    async def deployment_page(request: Request) -> Response:
        signed_in(request)
        dep = await blocking(deployment_of, request, request=request)
        output = None
        if not dep.active:  # finished: the whole output in the page (readable without JavaScript)
            output = await blocking(lambda: pages.OutputTail(config().state_dir, dep).read(), request=request)
        return render(request, "deployment.html", d=dep, output=output, batches=dep.batches, title=f"Deployment #{dep.id}")

    async def rc_page(request: Request) -> Response:
        signed_in(request)
        repo = repository(request.path_params["repo"])
        view = await blocking(pages.rc_page, repo, reader, request.path_params["name"].removeprefix("rc/"), request=request)
        if view is None:
            raise HTTPException(404, f"no release candidate rc/{request.path_params['name']} in {repo.name}")
        env_ = repo.environment(view["target_env"])
        return render(request, "rc.html", repo=repo, rc=view, env=env_, title=f"rc/{view['name']}")

    async def events(request: Request) -> Response:
        """Server-sent events: `change` with a number that goes up whenever something a page shows may have."""
        signed_in(request)
        changes.start()

        async def stream() -> AsyncIterator[str]:
            # retry: how soon the browser connects again when the daemon restarts under the page
            yield f"retry: 1000\n{pages.sse('hello', str(changes.version))}"
            seen, quiet = changes.version, 0.0
            while not stopping.is_set():
                await asyncio.sleep(changes.interval / 2)
                quiet += changes.interval / 2
                if changes.version != seen:
                    seen, quiet = changes.version, 0.0
                    yield pages.sse("change", str(seen))
                elif quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield ": keepalive\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    async def output_stream(request: Request) -> Response:
        """A deployment's Ansible output as it is written: `output` events of HTML lines, then `end`."""
        signed_in(request)
        dep = await blocking(deployment_of, request, request=request)
        tail = pages.OutputTail(config().state_dir, dep)

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not stopping.is_set():
                current = await run_in_threadpool(reader.get, dep.id)
                for chunk in await run_in_threadpool(tail.read):
                    yield pages.sse("output", str(chunk).rstrip("\n"))
                if current is None or not current.active:
                    for chunk in await run_in_threadpool(tail.read):
                        yield pages.sse("output", str(chunk).rstrip("\n"))
                    yield pages.sse("end", current.result if current else "gone")
                    return
                await asyncio.sleep(STREAM_POLL)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code in (301, 302, 303, 307):
            return RedirectResponse(exc.headers.get("location", "/") if exc.headers else "/", status_code=exc.status_code)
        page = render(
            request,
            "error.html",
            status=exc.status_code,
            status_code=exc.status_code,
            message=exc.detail,
            title="Not found" if exc.status_code == 404 else "Error",
        )
        page.headers.update(exc.headers or {})  # a 503's Retry-After
        return page

    routes: list[BaseRoute] = [
        Route("/", pipeline_page, methods=["GET"]),
        Route("/repos/{repo}/envs/{env}", environment_page, methods=["GET"]),
        Route("/repos/{repo}/rcs/{name}", rc_page, methods=["GET"]),
        Route("/deployments/{id:int}", deployment_page, methods=["GET"]),
        Route("/deployments/{id:int}/output", output_stream, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(pages.STATIC)), name="static"),
        *auth.routes(),
        *actions.routes(config, reader, human_gates=human_gates, render=render),
    ]
    web = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, middleware=auth.middleware(config))
    return ApiBeside(web, api) if api is not None else web


def whole_number(raw: str) -> int | None:
    """`raw` as a number a store may hold (ASCII digits, at most 18), else None: '²' is a digit to isdigit, not to int()."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


class ApiBeside:
    """/api/... and /metrics to the HTTP API's app, everything else to the dashboard."""

    def __init__(self, web: ASGIApp, api: ASGIApp):
        self.web, self.api = web, api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        app = self.api if path.startswith("/api/") or path == "/api" or path == "/metrics" else self.web
        await app(scope, receive, send)
