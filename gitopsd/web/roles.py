"""Who may do what on the web dashboard (docs/web.md): a signed-in person and their role per environment.

Roles (viewer < deployer < approver < admin) come from `web.roles` and `web.admin`; a person who
signed in with an API token is also bounded by its scopes (a read token looks, never acts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.settings import ROLES, RoleGrant


@dataclass(frozen=True)
class WebUser:
    """A signed-in person: their name (the identity actions act as), groups, and how they signed in."""

    name: str
    groups: tuple[str, ...] = ()
    via: str = "login"  # login | proxy
    grants: tuple[RoleGrant, ...] = field(default=(), repr=False, compare=False)
    scopes: tuple[str, ...] | None = None  # a login's token scopes (None: a proxy's user, unbounded)
    token: str = ""  # the name of the token a login signed in with


# What a role's actions write, as the API's scopes say it: a token session needs that scope too.
ROLE_SCOPE = {"deployer": "deployments:write", "approver": "approvals:write", "admin": "deployments:write"}
WRITE_SCOPES = frozenset(ROLE_SCOPE.values())


def role(user: WebUser | None, repo: Any, env: Any) -> str:
    """The user's role in repository `repo`'s environment `env` (names or objects with .name): the highest
    that `web.roles`/`web.admin` grant them there, or "" for none."""
    if user is None:
        return ""
    repo_name, env_name = getattr(repo, "name", repo), getattr(env, "name", env)
    best = -1
    for grant in user.grants:
        if grant.matches(str(repo_name), str(env_name)) and holds(user, grant):
            best = max(best, ROLES.index(grant.role))
    if best > 0 and user.scopes is not None and not WRITE_SCOPES & set(user.scopes):
        best = 0  # a read token looks, never acts, whatever the role
    return ROLES[best] if best >= 0 else ""


def allows(user: WebUser | None, repo: Any, env: Any, needed: str) -> bool:
    """Does the user have `needed` (or a higher role) in that environment?"""
    have = role(user, repo, env)
    return user is not None and bool(have) and ROLES.index(have) >= ROLES.index(needed) and scoped(user, ROLE_SCOPE.get(needed))


def scoped(user: WebUser, scope: str | None) -> bool:
    """May the user's sign-in write what `scope` covers? Always for a proxy's user; for a token, its scopes say."""
    return scope is None or user.scopes is None or scope in user.scopes


def holds(user: WebUser, grant: RoleGrant) -> bool:
    """Is the user among the grant's people: by name, as everyone signed in ("*"), or by a group?"""
    return "*" in grant.identities or user.name in grant.identities or bool(set(grant.groups) & set(user.groups))
