"""API tokens: named, scoped, stored as sha256 only in config.api.tokens_file (docs/api.md).

Below both front ends that check them (api/, web/), so neither imports the other; the CLI makes and revokes them.

`gitopsd token create` prints a secret once and keeps its hash; the daemon reads the file again
whenever it changes, so create and revoke need no restart. The secrets are 256 random bits, so a
plain sha256 is enough (no password hashing: nothing to guess).

Each token has an owner: the identity its requests act as for the human gates (sign-offs, release
candidates, approvals), by default its name. Only whoever can write the tokens file makes tokens, so
an owner is as trustworthy as that file, as a Unix user is as trustworthy as /etc/passwd.

A token may be limited to status contexts and repositories (glob patterns, `contexts:` and `repos:`;
none listed means no limit), so a CI server's token cannot report for another CI or repository.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import ownership
from ..config import read_yaml, write_yaml
from ..core.errors import ConfigurationError, UserError
from ..core.types import iso
from ..gate.snapshot import file_stamp

log = logging.getLogger("gitopsd.api")

SCOPES = (
    "statuses:write",
    "read",
    "approvals:write",
    "deployments:write",  # deployments: the dashboard's promote, roll back, retry, lock
    "alerts:write",
)  # Alertmanager's webhook: freezes raised by alerts (docs/change-control.md)
PREFIX = "gitopsd_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATTERN_MAX = 255  # a context is at most 255 characters (STATUS_CONTEXT_MAX), and so is a pattern for it
OWNER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # a Unix user name, as approvers: and signoff_by: list them
HEADER = (
    "# gitopsd API tokens (docs/api.md), written by `gitopsd token create|revoke`.\n"
    "# Only each secret's sha256 is kept: a lost secret cannot be shown again; revoke it and create another.\n"
)


class TokenError(UserError):
    """The tokens file cannot be read or written, or a token command is wrong: the message says what to do."""


@dataclass(frozen=True)
class Token:
    name: str
    scopes: tuple[str, ...]
    sha256: str
    created_at: str
    created_by: str
    owner: str = ""  # who its requests act as for the human gates; "" means its name
    contexts: tuple[str, ...] = ()  # glob patterns of the status contexts it may report; () means any
    repos: tuple[str, ...] = ()  # glob patterns of the repositories it may report for; () means any

    @property
    def identity(self) -> str:
        return self.owner or self.name

    def may_report(self, repo: str) -> bool:
        """Whether its statuses:write covers `repo` (which also lets it read that repository's statuses)."""
        return "statuses:write" in self.scopes and _matches(repo, self.repos)

    def refusal(self, repo: str, context: str) -> str | None:
        """Why this token may not report `context` for `repo`, in one line; None when it may."""
        if not _matches(repo, self.repos):
            return (
                f"token {self.name} may report only for the repositories {', '.join(self.repos)}, not {repo}; "
                "use a token made for it (`gitopsd token create ... --repos PATTERN`)"
            )
        if not _matches(context, self.contexts):
            return (
                f"token {self.name} may report only the contexts {', '.join(self.contexts)}, not {context!r}; "
                "report one of those, or use a token made for it (`gitopsd token create ... --contexts PATTERN`)"
            )
        return None

    def as_yaml(self) -> dict[str, Any]:
        limits = {key: list(value) for key, value in (("contexts", self.contexts), ("repos", self.repos)) if value}
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "sha256": self.sha256,
            "owner": self.identity,
            **limits,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _patterns(value: Any) -> bool:
    """Whether a tokens file's `contexts:` or `repos:` is absent or a list of one-line glob patterns."""
    return value is None or (
        isinstance(value, list)
        and all(isinstance(p, str) and p.strip() and len(p) <= PATTERN_MAX and p.isprintable() for p in value)
    )


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def read_tokens(path: Path) -> list[Token]:
    """The tokens in `path` ([] when it does not exist). Raise TokenError saying what is wrong where."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        me = ownership.Account.of_ids(os.geteuid(), os.getegid())
        raise TokenError(
            f"cannot read the API tokens file {path}: permission denied for {me.user} (it is "
            f"{ownership.describe(path)}): let the daemon's group read it: chgrp {me.group} {path} && "
            f"chmod 0640 {path} (gitopsd token create does so when the state folder is the daemon's)"
        ) from exc
    except OSError as exc:
        raise TokenError(f"cannot read the API tokens file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # found by fuzz/fuzz_tokens_file.py: a traceback on every request before
        raise TokenError(
            f"{path}: not UTF-8 text (byte {exc.start}): gitopsd writes it; revoke and create "
            "the tokens again with `gitopsd token create`"
        ) from exc
    try:
        data = read_yaml(text) or {}
    except ConfigurationError as exc:
        raise TokenError(f"{path}: {exc}") from exc
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TokenError(f"{path}: must have a list `tokens:` (written by `gitopsd token create`)")
    tokens = []
    for i, entry in enumerate(entries):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None
            and isinstance(entry.get("scopes"), list)
            and all(s in SCOPES for s in entry["scopes"])
            and (entry.get("owner") is None or (isinstance(entry["owner"], str) and OWNER_RE.fullmatch(entry["owner"])))
        )
        if not ok:
            raise TokenError(
                f"{path}: tokens[{i}] must have a name, scopes among {', '.join(SCOPES)}, a sha256 and "
                "at most an owner that is a user name (revoke it and create it again with `gitopsd token create`)"
            )
        for key in ("contexts", "repos"):
            if not _patterns(entry.get(key)):
                raise TokenError(
                    f"{path}: tokens[{i}] ({entry['name']}): {key} must be a list of glob patterns of one "
                    f"line each, at most {PATTERN_MAX} characters, e.g. ['ci/*'] (revoke the token and "
                    f"create it again with `gitopsd token create ... --{key} PATTERN`)"
                )
        tokens.append(
            Token(
                entry["name"],
                tuple(entry["scopes"]),
                entry["sha256"],
                str(entry.get("created_at", "")),
                str(entry.get("created_by", "")),
                entry.get("owner") or "",
                tuple(entry.get("contexts") or ()),
                tuple(entry.get("repos") or ()),
            )
        )
    return tokens


def write_tokens(path: Path, tokens: list[Token], group: int | None = None) -> None:
    """Replace the file atomically, mode 0640, keeping its owner; its group is `group` (the daemon's), else kept.

    The daemon reads this file as its own user: written by root, it must still be the daemon's group's."""
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    uid = st.st_uid if st is not None else os.geteuid()
    gid = group if group is not None else st.st_gid if st is not None else os.getegid()
    text = HEADER + write_yaml({"tokens": [t.as_yaml() for t in tokens]})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o640)
            if (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(out.fileno(), uid, gid)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise TokenError(f"cannot write the API tokens file {path}: {exc.strerror} (run this as its owner or root)") from exc


def create(
    path: Path,
    name: str,
    scopes: list[str],
    created_by: str,
    group: int | None = None,
    owner: str | None = None,
    contexts: tuple[str, ...] = (),
    repos: tuple[str, ...] = (),
) -> str:
    """Add a token acting as `owner` (default: its name), limited to `contexts` and `repos` (glob patterns; none:
    any); return its secret, stored nowhere (only its sha256 is). `group`: the daemon's, which must read the file."""
    if not NAME_RE.fullmatch(name):
        raise TokenError(f"{name!r} is not a token name: use letters, digits, '.', '_' or '-' (at most 64), e.g. jenkins")
    if owner is not None and not OWNER_RE.fullmatch(owner):
        raise TokenError(
            f"{owner!r} is not an owner: give the user name its requests act as (letters, digits, '.', "
            "'_' or '-', at most 64), e.g. --owner alice"
        )
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        raise TokenError(f"give each scope with --scope, among {', '.join(SCOPES)}" + (f" (not {bad[0]!r})" if bad else ""))
    for option, patterns in (("--contexts", contexts), ("--repos", repos)):
        if not _patterns(list(patterns)):
            raise TokenError(
                f"{option}: give glob patterns of one line each, at most {PATTERN_MAX} characters, e.g. {option} 'ci/*'"
            )
        if patterns and "statuses:write" not in scopes:
            raise TokenError(f"{option} limits what a token reports: give it with --scope statuses:write")
    tokens = read_tokens(path)
    if any(t.name == name for t in tokens):
        raise TokenError(
            f"a token named {name!r} exists already in {path}: `gitopsd token revoke {name}` first, or choose another name"
        )
    secret = PREFIX + secrets.token_urlsafe(32)
    created = iso(time.time()) or ""
    tokens.append(
        Token(
            name,
            tuple(dict.fromkeys(scopes)),
            digest(secret),
            created,
            created_by,
            owner or name,
            tuple(dict.fromkeys(contexts)),
            tuple(dict.fromkeys(repos)),
        )
    )
    write_tokens(path, tokens, group)
    return secret


def revoke(path: Path, name: str, group: int | None = None) -> bool:
    """Remove the token `name`; False when there is none."""
    tokens = read_tokens(path)
    kept = [t for t in tokens if t.name != name]
    if len(kept) == len(tokens):
        return False
    write_tokens(path, kept, group)
    return True


class TokenCheck:
    """The daemon's side: who a bearer secret belongs to, from the file as it is now (read again when it changes)."""

    def __init__(self, path: Callable[[], Path]):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[Path, str] | None = None
        self._tokens: list[Token] = []
        self._unreadable: str | None = None  # why the file as it is now cannot be read (logged when it was read)

    def _current(self) -> list[Token]:
        path = self.path()
        key = (path, file_stamp(str(path)))
        with self._lock:
            if key != self._seen:
                try:
                    self._tokens, self._unreadable = read_tokens(path), None
                    log.info(
                        "API tokens read from %s: %d token%s", path, len(self._tokens), "" if len(self._tokens) == 1 else "s"
                    )
                except TokenError as exc:  # refuse everyone rather than guess
                    self._tokens, self._unreadable = [], str(exc)
                    log.error("%s; every API request with a token is refused until it is fixed", exc)
                self._seen = key
            return self._tokens

    def tokens(self) -> list[Token]:
        """The tokens as the file says now (the web's sessions end when their token is revoked)."""
        return list(self._current())

    def unreadable(self) -> str | None:
        """Why the tokens file cannot be read now (so no token is found: the server's fault, not the client's), or None."""
        self._current()
        return self._unreadable

    def authenticate(self, authorization: str | None) -> Token | None:
        """The token an `Authorization: Bearer <secret>` header names, or None."""
        scheme, _, secret = (authorization or "").strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() not in ("bearer", "token") or not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        wanted = digest(secret)
        found = None
        for token in self._current():  # every entry compared, in constant time each
            if hmac.compare_digest(token.sha256, wanted):
                found = token
        return found
