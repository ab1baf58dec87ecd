"""The configuration's lookups, shared by its two shapes: core/settings.py (the daemon, the CLI) and gate/snapshot.py (the hook).

The hook keeps its own light classes (no dataclasses, no YAML: it runs on every push), but both
shapes find repositories and environments with these functions, so they cannot answer differently.
Only `os`: the hook imports this on every push.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # true for mypy and import-linter only: `typing` costs the hook about 6 ms
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Protocol, TypeVar

    class _Named(Protocol):
        @property
        def name(self) -> str: ...

    class _Branched(Protocol):
        @property
        def branch(self) -> str: ...

    class _Located(Protocol):
        @property
        def path(self) -> Any: ...

    N = TypeVar("N", bound=_Named)
    B = TypeVar("B", bound=_Branched)
    L = TypeVar("L", bound=_Located)


def by_name(items: Iterable[N], name: str) -> N | None:
    """The repository or environment called `name`."""
    return next((item for item in items if item.name == name), None)


def by_branch(environments: Iterable[B], branch: str) -> B | None:
    """The environment whose branch is `branch`."""
    return next((env for env in environments if env.branch == branch), None)


def by_path(repositories: Iterable[L], path: Any) -> L | None:
    """The repository at `path`, both sides resolved (symlinks, `..`)."""
    resolved = os.path.realpath(path)
    return next((repo for repo in repositories if os.path.realpath(repo.path) == resolved), None)
