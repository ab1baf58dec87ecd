"""The human gates over the API (docs/human-gates.md): sign-offs, release candidates, approvals, rejected trees.

Each is handed to the daemon's HumanGates.handle, as the control socket's requests are, acting as
the token's owner (scope approvals:write).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import Context
from ..inputs import gate_fields, reason_as_note, refused

APPROVAL_KINDS = ("approve", "reject", "withdraw")


def routes(api: Context, v1: str) -> list[Route]:
    """POST routes that record a person's word on what runs or would run."""

    async def post_signoff(request: Request) -> Response:
        token = api.authorize(request, "approvals:write")
        repo, env = api.environment(request)
        body = reason_as_note(await gate_fields(request, {"note": str, "reason": str, "reject": bool, "commit": str}))
        if "note" not in body:
            raise refused("note", "is required")
        return await api.ask_gates(
            token,
            {
                "op": "signoff",
                "repo": repo.name,
                "env": env.name,
                "note": body["note"],
                "reject": bool(body.get("reject")),
                "commit": body.get("commit"),
            },
        )

    async def post_rc(request: Request) -> Response:
        token = api.authorize(request, "approvals:write")
        repo = api.repository(request.path_params["repo"])
        body = await gate_fields(request, {"from": str, "to": str, "name": str})
        return await api.ask_gates(
            token,
            {"op": "rc-create", "repo": repo.name, "from": body.get("from"), "to": body.get("to"), "name": body.get("name")},
        )

    async def post_approval(request: Request) -> Response:
        token = api.authorize(request, "approvals:write")
        repo = api.repository(request.path_params["repo"])
        body = await gate_fields(request, {"kind": str, "note": str, "reason": str}, required=("kind",))
        if body["kind"] not in APPROVAL_KINDS:
            raise refused("kind", f"must be one of {', '.join(APPROVAL_KINDS)}, not {body['kind'][:20]!r}")
        body = reason_as_note(body)
        if body["kind"] != "withdraw" and "note" not in body:
            raise refused("note", "is required: say why (it is recorded with the token owner's name)")
        return await api.ask_gates(
            token, {"op": body["kind"], "repo": repo.name, "rc": request.path_params["name"], "note": body.get("note")}
        )

    async def post_rejection(request: Request) -> Response:
        token = api.authorize(request, "approvals:write")
        repo = api.repository(request.path_params["repo"])
        body = await gate_fields(request, {"kind": str, "reason": str, "env": str}, required=("kind", "reason"))
        if body["kind"] not in ("reject", "unreject"):
            raise refused("kind", f"must be reject or unreject, not {body['kind'][:20]!r}")
        return await api.ask_gates(
            token,
            {
                "op": f"tree-{body['kind']}",
                "repo": repo.name,
                "tree": request.path_params["tree"],
                "env": body.get("env"),
                "reason": body["reason"],
            },
        )

    return [
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/signoffs", post_signoff, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/rcs", post_rc, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/rcs/{{name}}/approvals", post_approval, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/trees/{{tree}}/rejections", post_rejection, methods=["POST"]),
    ]
