"""The API's reads (docs/api.md): health, status, history, hosts, where, previews, release candidates, metrics.

Each answers what the matching command's --json prints, from the same read model (services/readmodels.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...core.errors import MISSING
from ...services.readmodels import (  # as `history`, `rc list|show` --json  # as `hosts ENV`, `where`, `preview` --json
    deployment_json,
    host_runs,
    preview_view,
    rc_shown,
    rc_view,
    release_marks,
    tree_named,
    where_view,
)
from .. import inputs
from ..context import Context
from ..inputs import refuse
from ..openapi import document


def routes(api: Context, v1: str) -> list[Route]:  # noqa: C901 (a route table: each nested route counts toward its maker)
    """GET routes that read the store and the repositories (token scope read; health and /metrics need none)."""
    store = api.store

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        api.authorize(request, "read")
        return JSONResponse(document())

    async def status(request: Request) -> Response:
        api.authorize(request, "read")
        name = request.query_params.get("repo")
        if name is not None:
            api.repository(name)
        from ...services.readconfig import repository_problem
        from ...services.status import all_status  # what `gitopsd status --json` shows, from the same function

        def read() -> list[dict[str, Any]]:
            config = api.config()
            shown = [r for r in config.repositories if name in (None, r.name)]
            unavailable = {r.name: problem for r in shown if (problem := repository_problem(r.path))}  # as the daemon's rows
            return [row.as_json() for row in all_status(config, store, name, unavailable)]

        return JSONResponse(await api.blocking(read))

    async def history(request: Request) -> Response:
        api.authorize(request, "read")
        repo, env = api.environment(request)
        limit = inputs.limit(request, 20)

        def read() -> list[dict[str, Any]]:
            deployments = store.history(repo=repo.name, env=env.name, limit=limit)
            marks = release_marks(api.config(), store, deployments)
            return [deployment_json(d, marks.get(d.id)) for d in deployments]

        return JSONResponse(await api.blocking(read))

    async def env_hosts(request: Request) -> Response:
        api.authorize(request, "read")
        repo, env = api.environment(request)
        return JSONResponse(await api.blocking(lambda: host_runs(store, repo.name, env.name)))

    async def where(request: Request) -> Response:
        api.authorize(request, "read")
        repo = api.repository(request.path_params["repo"])
        what = request.query_params.get("of") or ""

        def read() -> dict[str, Any] | None:
            tree = tree_named(store, repo, what)
            return None if tree is None else {"tree": tree, "hosts": where_view(store, repo, tree)}

        found = await api.blocking(read)
        if found is None:
            raise refuse(
                f"no commit, tree or release candidate {what[:80]!r} in {repo.name}: give ?of=COMMIT, TREE or rc/NAME",
                MISSING,
                "commit_not_found",
            )
        return JSONResponse(found)

    async def preview_show(request: Request) -> Response:
        api.authorize(request, "read")
        repo = api.repository(request.path_params["repo"])
        ident = request.path_params["name"]
        number = ident.isascii() and ident.isdigit() and len(ident) <= 18  # '²' is a digit to isdigit, not to int()
        rows = await api.blocking(lambda: store.previews(repo.name, preview_id=int(ident), limit=1)) if number else []
        if not rows:
            raise refuse(f"no preview {ident[:20]!r} in {repo.name}", MISSING, "preview_not_found")
        return JSONResponse(await api.blocking(lambda: preview_view(store, rows[0])))

    async def rc_list(request: Request) -> Response:
        api.authorize(request, "read")
        repo = api.repository(request.path_params["repo"])
        limit = inputs.limit(request, 20)

        def read() -> list[dict[str, Any]]:
            return [rc_view(repo, store, rc) for rc in store.rcs(repo.name, limit=limit)]

        return JSONResponse(await api.blocking(read))

    async def rc_show(request: Request) -> Response:
        api.authorize(request, "read")
        repo = api.repository(request.path_params["repo"])
        name = request.path_params["name"].removeprefix("rc/")

        def read() -> dict[str, Any] | None:
            rc = store.rc(repo.name, name)
            return None if rc is None else rc_shown(repo, store, rc)

        view = await api.blocking(read)
        if view is None:
            raise refuse(f"no release candidate rc/{name} in {repo.name}", MISSING, "rc_not_found")
        return JSONResponse(view)

    async def prometheus(_request: Request) -> Response:
        if api.metrics is None:
            raise refuse("this server has no metrics", MISSING, "no_metrics")
        body, content_type = await api.blocking(api.metrics)
        return Response(body, media_type=content_type)

    return [
        Route(f"{v1}/health", health, methods=["GET"]),
        Route(f"{v1}/openapi.json", openapi, methods=["GET"]),
        Route(f"{v1}/status", status, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/history", history, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/hosts", env_hosts, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/where", where, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/previews/{{name}}", preview_show, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/rcs", rc_list, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/rcs/{{name}}", rc_show, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
