"""What a request to the daemon names, found in the config or refused in one line with its reason id: the repository
(the only one when none is named), its environment, the one-line reason a recorded action carries.

One copy for the human gates, change control and previews, so the same situation is refused with the same words and id.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import INVALID, MISSING, Refused
from ..core.settings import Config, Environment, Repository

NOTE_MAX = 1000


def repository(config: Config, name: Any) -> Repository:
    """The repository `name` (None or "": the only one). Raise Refused when it is unknown or several could be meant."""
    known = ", ".join(r.name for r in config.repositories)
    if name in (None, ""):
        if len(config.repositories) != 1:
            raise Refused(f"name the repository with --repo (known: {known})", INVALID, "repo_ambiguous")
        return config.repositories[0]
    repo = config.repository(str(name))
    if repo is None:
        raise Refused(f"no repository named {str(name)[:100]!r} (known: {known})", MISSING, "repo_not_found")
    return repo


def environment(repo: Repository, name: Any) -> Environment:
    """`repo`'s environment `name`. Raise Refused listing the ones it has."""
    env = repo.environment(str(name)) if name else None
    if env is None:
        raise Refused(
            f"repository {repo.name} has no environment {str(name)[:100]!r} "
            f"(it has: {', '.join(e.name for e in repo.environments)})",
            MISSING,
            "env_not_found",
        )
    return env


def said(request: dict[str, Any], key: str) -> str:
    """The reason under `key` ("note", "reason") a recorded action carries: one line, required."""
    text = request.get(key)
    if not isinstance(text, str) or not text.strip():
        raise Refused(f"say why with --{key} '...' (it is recorded with your name)", INVALID, "note_required")
    if len(text) > NOTE_MAX or any(ord(c) < 32 and c != "\t" for c in text):
        raise Refused(f"--{key} must be one line of at most {NOTE_MAX} characters", INVALID, "bad_note")
    return text.strip()
