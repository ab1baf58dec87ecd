"""What every route of the API shares: the daemon's config and store, who the token is, and the daemon's hooks.

Routes check the token and the input, then call the functions the command line uses; the blocking
parts (git, SQLite) run in Starlette's thread pool, so one slow request never holds up the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..adapters.store import Store
from ..core.errors import FORBIDDEN, INTERNAL, MISSING, UNAUTHENTICATED, UNAVAILABLE, GitError, Refused, StoreError, refused_from
from ..core.settings import Config, Environment, Repository
from ..services import failures
from ..services.tokens import Token, TokenCheck
from . import statuses
from .inputs import ApiError, refuse

log = logging.getLogger("gitopsd.api")

HumanGatesHandler = Callable[[str, dict[str, Any]], dict[str, Any]]
UNREADABLE_TOKENS = (
    "the server cannot read its API tokens file, so no token can be checked: retrying cannot help; an operator must "
    "fix the file (the daemon's log says what is wrong with it)"
)
SERVING: ContextVar[str] = ContextVar("serving", default="API request")  # "API METHOD /path", set by app.Guard for the log


@dataclass(frozen=True)
class Context:
    """The API over the daemon's (current) config and store, as create_app was given them."""

    config: Callable[[], Config]
    store: Store
    tokens: TokenCheck
    on_status: Callable[[str], None]
    human_gates: HumanGatesHandler | None
    metrics: Callable[[], tuple[bytes, str]] | None

    def authenticate(self, request: Request) -> Token:
        token = self.tokens.authenticate(request.headers.get("authorization"))
        if token is None and self.tokens.unreadable() is not None:  # no token can be found: the server's fault
            raise refuse(UNREADABLE_TOKENS, INTERNAL, "server_files")
        if token is None:  # the same answer for a missing, unknown or revoked token: nothing to learn from it
            raise ApiError(
                Refused("a valid API token is required (Authorization: Bearer <token>)", UNAUTHENTICATED, "token_required"),
                {"WWW-Authenticate": 'Bearer realm="gitopsd"'},
            )
        request.scope["gitopsd.token"] = token.name
        return token

    def authorize(self, request: Request, scope: str) -> Token:
        token = self.authenticate(request)
        if scope not in token.scopes:
            raise refuse(f"this token lacks the scope {scope}", FORBIDDEN, "token_scope")
        return token

    def status_reader(self, request: Request) -> tuple[Token, Repository]:
        """The token and repository of a read of statuses: `read`, or as GitHub's `repo:status`, a token that may
        report statuses for the repository (a CI job reads back the combined status it reported to)."""
        token = self.authenticate(request)
        repo = self.repository(request.path_params["repo"])
        if "read" not in token.scopes and not token.may_report(repo.name):
            raise refuse(f"this token lacks the scope read (or statuses:write for {repo.name})", FORBIDDEN, "token_scope")
        return token, repo

    def owners(self) -> dict[str, str]:
        """Token name -> owner, for each status's `creator` (a revoked token's statuses show its name)."""
        return {t.name: t.identity for t in self.tokens.tokens()}

    def repository(self, name: str) -> Repository:
        repo = self.config().repository(name)
        if repo is None:
            raise refuse(f"no repository named {name!r}", MISSING, "repo_not_found")
        return repo

    def environment(self, request: Request) -> tuple[Repository, Environment]:
        """The repository and environment a path names (/repos/{repo}/environments/{env}/...)."""
        repo = self.repository(request.path_params["repo"])
        env = repo.environment(request.path_params["env"])
        if env is None:
            raise refuse(f"repository {repo.name} has no environment {request.path_params['env']!r}", MISSING, "env_not_found")
        return repo, env

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run git and SQLite work off the event loop; their failures as answers (failures.server_failure), not crashes."""
        try:
            return await run_in_threadpool(fn, *args)
        except statuses.UnknownCommit as exc:
            raise refuse(str(exc), MISSING, "commit_not_found") from exc
        except (StoreError, GitError, OSError) as exc:
            refused = failures.server_failure(exc, log, SERVING.get())
            retry = {"Retry-After": failures.RETRY_AFTER} if refused.kind == UNAVAILABLE else None
            raise ApiError(refused, retry) from exc

    async def ask_gates(self, token: Token, ask: dict[str, Any]) -> Response:
        """Hand one human-gate request to the daemon as the token's owner; 201, or the refusal's status."""
        if self.human_gates is None:
            raise refuse(
                "sign-offs and approvals are recorded by the daemon, which serves them on "
                "its own API; this server cannot take them",
                UNAVAILABLE,
                "no_daemon",
            )
        answer = await self.blocking(self.human_gates, token.identity, ask)
        if not answer.get("ok"):
            raise ApiError(refused_from(answer))
        return JSONResponse(
            {
                "message": answer.get("message", "done"),
                "identity": token.identity,
                **({"id": answer["id"]} if "id" in answer else {}),
            },
            status_code=201,
        )
