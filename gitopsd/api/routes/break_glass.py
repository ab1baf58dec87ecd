"""Break-glass over the API (docs/api.md): ask, confirm, list; the same service as `gitopsd override`.

Who may ask or confirm is who may promote: a token with deployments:write, acting as its owner. The service's own
rules (services/changecontrol.py: override_by, the asker cannot confirm their own, the time limits) apply on top.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..context import Context
from ..inputs import gate_fields


def routes(api: Context, v1: str) -> list[Route]:
    """GET and POST {v1}/overrides, POST {v1}/overrides/{id}/confirm (201 with the request's id)."""

    async def post_override(request: Request) -> Response:
        token = api.authorize(request, "deployments:write")  # as promotion: who may deploy may ask to deploy into a lock
        body = await gate_fields(request, {"repo": str, "env": str, "reason": str}, required=("env", "reason"))
        if body.get("repo") is not None:
            api.repository(body["repo"])
        return await api.ask_gates(
            token, {"op": "override", "repo": body.get("repo"), "env": body["env"], "reason": body["reason"]}
        )

    async def post_confirm(request: Request) -> Response:
        token = api.authorize(request, "deployments:write")
        body = await gate_fields(request, {"reason": str})
        return await api.ask_gates(
            token, {"op": "override-confirm", "id": request.path_params["id"], "reason": body.get("reason")}
        )

    async def get_overrides(request: Request) -> Response:
        api.authorize(request, "read")
        return JSONResponse(
            {"break_glass": await api.blocking(lambda: [r.as_json() for r in api.store.break_glass_requests(time.time())])}
        )

    return [
        Route(f"{v1}/overrides", get_overrides, methods=["GET"]),
        Route(f"{v1}/overrides", post_override, methods=["POST"]),
        Route(f"{v1}/overrides/{{id}}/confirm", post_confirm, methods=["POST"]),
    ]
