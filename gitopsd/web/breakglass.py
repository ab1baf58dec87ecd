"""The dashboard's break-glass: ask with a reason on an environment's page, confirm a request there (docs/web.md).

The same service as `gitopsd override` and the API (services/changecontrol.py), as the signed-in user. The role is
promotion's (deployer, and with a token its deployments:write); the service's rules apply on top: the confirmer is
in the environment's override_by and is not the one who asked. web/actions.py registers these actions; the CSRF
token was checked before any of them runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..adapters.store import Store
from ..core.errors import INVALID, MISSING, Refused
from ..core.settings import Environment, Repository
from . import roles

Action = Callable[[roles.WebUser, dict[str, str]], list[str]]


def actions(
    store: Store,
    ask: Callable[[str, dict[str, Any]], list[str]],
    repository: Callable[[dict[str, str]], Repository],
    environment: Callable[[Repository, str | None], Environment],
    need: Callable[..., None],
) -> dict[str, Action]:
    """`override` and `override-confirm`, over actions.py's own checks (`need`: the role) and its way to the daemon."""

    def override(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        env = environment(repo, f.get("env"))
        need(user, repo, env, "deployer", "break glass")  # as promotion: who may deploy may ask to deploy into a lock
        return ask(user.name, {"op": "override", "repo": repo.name, "env": env.name, "reason": f.get("reason") or None})

    def confirm(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        number = f.get("id", "").removeprefix("#")
        if not (number.isascii() and number.isdigit() and len(number) <= 12):
            raise Refused(
                f"id must be a break-glass request's number, not {f.get('id', '')[:20]!r}", INVALID, "bad_break_glass_id"
            )
        asked = store.break_glass_request(int(number))
        repo = repository({"repo": str(asked.repo)}) if asked is not None else None
        if asked is None or repo is None:
            raise Refused(
                f"no break-glass request #{number} (the environment's page lists the open ones)", MISSING, "break_glass_not_found"
            )
        need(user, repo, environment(repo, str(asked.env)), "deployer", "confirm a break-glass")
        return ask(user.name, {"op": "override-confirm", "id": number, "reason": f.get("reason") or None})

    return {"override": override, "override-confirm": confirm}
