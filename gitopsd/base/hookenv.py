"""Whose push the gate judges, and where: the hook's own process, or a push the daemon judges for its hook.

The gate reads a push's circumstances from its process: the environment git gives pre-receive (the
quarantined objects, push options, the transport's identity variables), the pusher's uid, the
repository as the working directory, and it tells the daemon through the nudge socket. When the
daemon judges a push for the shim (daemon/judge.py), the same code runs in one of the daemon's
threads: there these come from the push the shim described and the kernel's word on who sent it,
set for that thread alone (a context variable), while every other thread keeps the daemon's own.

The hook imports this on every push: `_contextvars` is a C module, and nothing else is imported.
"""

from __future__ import annotations

import os
from _contextvars import ContextVar

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable, Mapping
    from contextvars import Token


class Push:
    """A push judged away from its own hook process: its environment, its pusher's uid, its repository, and where
    the nudges the gate sends go instead of the socket (`deliver`, given a gate/nudge.Nudge: base is below the gate)."""

    __slots__ = ("environ", "uid", "repo", "deliver")

    def __init__(self, environ: Mapping[str, str], uid: int, repo: str, deliver: Callable[..., None]):
        self.environ, self.uid, self.repo, self.deliver = environ, uid, repo, deliver


_judged: ContextVar[Push | None] = ContextVar("gitopsd_judged_push", default=None)


def environ() -> Mapping[str, str]:
    """The push's environment: git's for pre-receive (this process's), or the judged push's."""
    push = _judged.get()
    return os.environ if push is None else push.environ


def uid() -> int:
    """Who pushes, as the kernel says: this process's user, or the judged push's sender."""
    push = _judged.get()
    return os.getuid() if push is None else push.uid


def repository() -> str:
    """The repository pushed to: pre-receive's working directory, or the judged push's."""
    push = _judged.get()
    return os.getcwd() if push is None else push.repo


def delivery() -> Callable[..., None] | None:
    """Where a nudge goes instead of the daemon's socket: set only when the daemon itself judges the push."""
    push = _judged.get()
    return None if push is None else push.deliver


def judging(push: Push) -> Token[Push | None]:
    """Make PUSH the current thread's push (daemon/judge.py); hand the token to `done` when the judging ends."""
    return _judged.set(push)


def done(token: Token[Push | None]) -> None:
    _judged.reset(token)
