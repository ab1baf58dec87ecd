"""Change control over the API (docs/change-control.md): locks, their lifting, and Alertmanager's freezes."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...core.errors import Refused
from ...services import changecontrol
from .. import inputs
from ..context import Context
from ..inputs import gate_fields, refused


def routes(api: Context, v1: str) -> list[Route]:
    """Locks (scope deployments:write: who may deploy may stop deploying) and alerts (scope alerts:write)."""

    async def lock_fields(request: Request) -> dict[str, Any]:
        body = await gate_fields(request, {"repo": str, "env": str, "all": bool, "reason": str, "until": str, "for": str})
        if body.get("repo") is not None:
            api.repository(body["repo"])
        return body

    async def post_lock(request: Request) -> Response:
        token = api.authorize(request, "deployments:write")  # as promotion: who may deploy may stop deploying
        return await api.ask_gates(token, {"op": "lock", **await lock_fields(request)})

    async def post_unlock(request: Request) -> Response:
        token = api.authorize(request, "deployments:write")
        body = await lock_fields(request)
        for ignored in ("until", "for"):
            body.pop(ignored, None)
        return await api.ask_gates(token, {"op": "unlock", **body})

    async def get_locks(request: Request) -> Response:
        api.authorize(request, "read")

        def read() -> dict[str, Any]:
            now = time.time()
            return {
                "locks": [lock.as_json() for lock in api.store.all_locks(now)],
                "break_glass": [r.as_json() for r in api.store.break_glass_requests(now)],
            }

        return JSONResponse(await api.blocking(read))

    async def post_alerts(request: Request) -> Response:
        """Alertmanager's webhook: freeze what freeze_on names while an alert fires (422: not its payload)."""
        token = api.authorize(request, "alerts:write")
        try:
            payload = inputs.decode(await inputs.body(request), "send Alertmanager's webhook notification (JSON)")
        except ValueError as exc:
            raise refused("body", str(exc)) from exc
        try:  # judged here too: not Alertmanager's payload is a 422 even while the daemon is away
            changecontrol.parse_alerts(payload)
        except Refused as exc:
            raise refused("body", str(exc)) from exc
        response = await api.ask_gates(token, {"op": "alerts", "payload": payload})
        if response.status_code == 201:
            response.status_code = 200  # nothing was created: what was frozen or lifted
        return response

    return [
        Route(f"{v1}/locks", get_locks, methods=["GET"]),
        Route(f"{v1}/locks", post_lock, methods=["POST"]),
        Route(f"{v1}/locks/lift", post_unlock, methods=["POST"]),
        Route(f"{v1}/alerts", post_alerts, methods=["POST"]),
    ]
