"""Break-glass over the HTTP API: ask, confirm, list (docs/api.md); the same service as `gitopsd override`.

Who may ask or confirm is who may promote: a token with deployments:write, acting as its owner. The service's own
rules (services/changecontrol.py: override_by, the asker cannot confirm their own, the time limits) apply on top.
Refusals have core/errors.py's one body. api/app.py registers these routes, handing over its token checks, its way
of running blocking work and of reading a request's fields.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..adapters.store import Store
from ..core.errors import UNAVAILABLE, Refused, refused_from

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


def routes(v1: str, store: Store, handler: Handler | None, *, authorize: Callable[[Request, str], Any],
           blocking: Callable[..., Awaitable[Any]], fields: Callable[..., Awaitable[dict[str, Any]]],
           repository: Callable[[str], Any], error: Callable[[Refused], Exception]) -> list[Route]:
    """GET and POST {v1}/overrides, POST {v1}/overrides/{id}/confirm; `handler` is the daemon's control request
    handler (None on a server without a daemon: asking is then a 503), `error` turns a refusal into the API's answer."""

    async def ask(identity: str, request: dict[str, Any]) -> Response:
        if handler is None:
            raise error(Refused("break-glass is recorded by the daemon, which serves it on its own API; this server "
                                "cannot take it", UNAVAILABLE, "no-daemon"))
        answer = await blocking(handler, identity, request)
        if not answer.get("ok"):
            raise error(refused_from(answer))
        return JSONResponse({"message": answer.get("message", "done"), "identity": identity,
                             **({"id": answer["id"]} if "id" in answer else {})}, status_code=201)

    async def post_override(request: Request) -> Response:
        token = authorize(request, "deployments:write")   # as promotion: who may deploy may ask to deploy into a lock
        body = await fields(request, {"repo": str, "env": str, "reason": str}, required=("env", "reason"))
        if "repo" in body:
            repository(body["repo"])
        return await ask(token.identity, {"op": "override", "repo": body.get("repo"), "env": body["env"],
                                          "reason": body["reason"]})

    async def post_confirm(request: Request) -> Response:
        token = authorize(request, "deployments:write")
        body = await fields(request, {"reason": str})
        return await ask(token.identity, {"op": "override-confirm", "id": request.path_params["id"],
                                          "reason": body.get("reason")})

    async def get_overrides(request: Request) -> Response:
        authorize(request, "read")
        return JSONResponse({"break_glass": await blocking(lambda: store.break_glass_requests(time.time()))})

    return [Route(f"{v1}/overrides", get_overrides, methods=["GET"]),
            Route(f"{v1}/overrides", post_override, methods=["POST"]),
            Route(f"{v1}/overrides/{{id}}/confirm", post_confirm, methods=["POST"])]
