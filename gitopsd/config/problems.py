"""The problem collector: every problem one line with its file:line (Problem, ConfigError, _Checker), and the
field readers every section shares (names, URLs, flags, paths relative to the config's folder).
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from ..core.settings import CheckError, Config
from ..core.windows import WindowError, parse_duration

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ONE_DAY = 86400  # seconds: no wait or interval needs more; beyond, timers and timeouts overflow
_NO_PATH = Path("/nonexistent")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ConfigurationError):
    """The configuration is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[Problem], config: Config | None = None):
        self.problems = problems
        self.config = config  # what could be read anyway: read-only commands show the rest (see cli)
        super().__init__("\n".join(str(p) for p in problems))


class _Checker:
    """Collects problems with their file and line while normalizing raw data."""

    def __init__(self, file: str, lines: dict[str, int]):
        self.file, self.lines, self.problems = file, lines, []  # type: ignore[var-annotated]

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, self.lines.get(key), key, message))

    def mapping(self, raw: Any, key: str, allowed: Collection[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.add(key, f"must be a mapping, not {type(raw).__name__}")
            return {}
        for k in raw:
            if k not in allowed:
                self.add(f"{key}.{k}" if key else str(k), f"unknown key; allowed keys here: {', '.join(sorted(allowed))}")
        return raw

    def number(
        self,
        raw: dict[str, Any],
        key: str,
        prefix: str,
        default: float,
        *,
        integer: bool = False,
        minimum: float = 0.0,
        maximum: float = math.inf,
        what: str = "",
    ) -> float:
        """Given a mapping, return its finite number at `key` within [minimum, maximum] (`what` says why the maximum)."""
        value = raw.get(key, default)
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.add(full, f"must be {'an integer' if integer else 'a number'}, not {value!r}")
            return default
        if not math.isfinite(value):  # YAML's .nan and .inf: NaN passes every comparison below
            self.add(full, f"must be a finite number, not {value!r}")
            return default
        if value < minimum:
            self.add(full, f"must be at least {minimum:g}, not {value!r}")
            return default
        if value > maximum:
            self.add(full, f"must be at most {maximum:g}{f' ({what})' if what else ''}, not {value!r}")
            return default
        return value

    def seconds(
        self, raw: dict[str, Any], key: str, prefix: str, default: float, *, integer: bool = False, minimum: float = 0.0
    ) -> float:
        """A duration in seconds: a finite number from `minimum` up to one day."""
        return self.number(raw, key, prefix, default, integer=integer, minimum=minimum, maximum=ONE_DAY, what="one day")

    def relpath(self, value: Any, key: str) -> str:
        """Given a path from the config, return it normalized if it stays inside the repository tree."""
        if not isinstance(value, str) or not value or "\0" in value:
            self.add(key, f"must be a path relative to the repository tree, not {value!r}")
            return ""
        norm = posixpath.normpath(value)
        if value.startswith("/") or norm == ".." or norm.startswith("../"):
            self.add(key, f"path escapes the repository tree: {value!r}")
            return ""
        return norm


def _path_field(raw: Any, key: str, what: str, base: Path, check: _Checker) -> Path | None:
    """A path setting, relative to the config's folder: the path, or None with the problem said at `key`."""
    if not isinstance(raw, str) or not raw or "\0" in raw:
        check.add(key, f"must be {what}, not {raw!r}")
        return None
    try:
        return _resolve(base, raw)
    except ValueError as exc:
        check.add(key, str(exc))
        return None


IDENTITY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


def _resolve(base: Path, value: str) -> Path:
    """Given a path from the config, return it absolute with symlinks resolved. Raise ValueError saying why not."""
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL byte")
    try:
        return (base / os.path.expanduser(value)).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
        raise ValueError(f"cannot resolve {value!r}: {exc}") from exc


def _flag(data: dict[str, Any], name: str, key: str, check: _Checker) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        check.add(f"{key}.{name}", f"must be true or false, not {value!r}")
        return False
    return value


def _url(value: Any, key: str, check: _Checker) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s]+$", value):
        check.add(key, f"must be an http:// or https:// URL, not {value!r}")
        return ""
    return value


def _duration(data: dict[str, Any], name: str, key: str, default: float, check: _Checker) -> float:
    """A duration like 30s, 15m, 1h (or a number of seconds), up to one day."""
    if name not in data:
        return default
    try:
        seconds = parse_duration(data[name]).total_seconds()
    except WindowError:
        check.add(f"{key}.{name}", f"must be a duration like 30s, 15m or 1h, not {data[name]!r}")
        return default
    if seconds > ONE_DAY:
        check.add(f"{key}.{name}", f"must be at most one day, not {data[name]!r}")
        return default
    return seconds


def _check(cls: Any, key: str, check: _Checker, **values: Any) -> Any:
    """A check built from valid values, or None with the problem said (its own rules, e.g. min above max)."""
    try:
        return cls(**values)
    except CheckError as exc:
        check.add(key, str(exc))
        return None
