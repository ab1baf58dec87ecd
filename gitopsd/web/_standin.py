"""A stand-in for auth.py and actions.py until they land (Engineer A's): everyone is a viewer, nothing acts.

Delete once gitopsd/web/auth.py and actions.py exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route


@dataclass(frozen=True)
class WebUser:
    name: str
    groups: tuple[str, ...] = ()


def current_user(request: Request) -> WebUser | None:
    return WebUser("anonymous")


def role(user: WebUser, repo: str, env: str) -> str:
    return "viewer"


def csrf_token(request: Request) -> str:
    return "standin"


def routes(*_args: Any, **_kwargs: Any) -> list[Route]:
    return []


def middleware(*_args: Any) -> list[Middleware]:
    return []
