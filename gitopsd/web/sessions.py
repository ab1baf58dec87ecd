"""The web dashboard's signed cookies and the sessions they carry (docs/web.md).

Values are signed with HMAC-SHA256 and a secret kept in state_dir/web-secret; a `kind` keeps a value
made for one use from passing as another. Cookies are HttpOnly and SameSite=Strict (Secure behind
TLS); signing out records the session as ended in state_dir/web-ended, so a kept copy is refused.
Each session has its CSRF token, derived from its nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.settings import Config, Web
from ..services.tokens import TokenCheck


def same(given: str, expected: str) -> bool:
    """Is what a request sent (a cookie's MAC, a CSRF token) the expected value? In constant time, as bytes:
    hmac.compare_digest raises TypeError for a str with a character past ASCII, which anyone can send."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


class Sessions:
    """The signing key, signed values and sessions of one web app, over the daemon's current config."""

    def __init__(self, config: Callable[[], Config], tokens: TokenCheck, clock: Callable[[], float] = time.time):
        self.config, self.tokens, self.clock = config, tokens, clock
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self._ended: dict[str, float] | None = None  # nonce -> expiry of sessions signed out

    @property
    def web(self) -> Web:
        return self.config().web or Web()

    def secret(self) -> bytes:
        """The server's signing key: 32 random bytes in state_dir/web-secret (0600), made on first use."""
        with self._lock:
            if self._secret is None:
                path = self.config().state_dir / "web-secret"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(secrets.token_bytes(32))
                except FileExistsError:
                    pass
                self._secret = path.read_bytes()
                if len(self._secret) < 32:
                    raise OSError(f"{path} holds less than 32 bytes: remove it and restart gitopsd to make a new one")
            return self._secret

    def sign(self, payload: dict[str, Any], kind: str) -> str:
        """`payload` and its HMAC; `kind` keeps a value made for one use (session, flash) from passing as another."""
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(self.secret(), f"{kind}:{body}".encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def unsign(self, value: str | None, kind: str) -> dict[str, Any] | None:
        """The payload of a value `sign` made for `kind`, or None for anything else."""
        if not value or "." not in value or len(value) > 4096:
            return None
        body, _, mac = value.rpartition(".")
        if not same(mac, hmac.new(self.secret(), f"{kind}:{body}".encode(), hashlib.sha256).hexdigest()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def csrf_for(self, nonce: str) -> str:
        return hmac.new(self.secret(), f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()

    # -- sessions -------------------------------------------------------------------------------------------------
    def new(self, identity: str, via: str, token: tuple[str, str] | None = None) -> tuple[str, str]:
        """(cookie value, CSRF token) of a new session for `identity`; `token` (name, sha256) for a login."""
        nonce = secrets.token_urlsafe(16)
        payload: dict[str, Any] = {"u": identity, "v": via, "n": nonce, "e": int(self.clock() + self.web.session_hours * 3600)}
        if token is not None:
            payload["t"], payload["h"] = token
        return self.sign(payload, "session"), self.csrf_for(nonce)

    def session(self, value: str | None) -> dict[str, Any] | None:
        """A session cookie's payload while it is valid: signed, not expired, not signed out, and for a
        login its token still there (revoking the token ends its sessions)."""
        payload = self.unsign(value, "session")
        if payload is None or not isinstance(payload.get("n"), str) or not isinstance(payload.get("u"), str):
            return None
        if not isinstance(payload.get("e"), int) or payload["e"] < self.clock() or payload["n"] in self.ended():
            return None
        if payload.get("v") == "login":
            live = [
                t
                for t in self.tokens.tokens()
                if t.name == payload.get("t")
                and t.identity == payload["u"]
                and hmac.compare_digest(t.sha256, str(payload.get("h")))
                and "read" in t.scopes
            ]
            if not live:
                return None
            payload = {**payload, "scopes": list(live[0].scopes)}  # as the token is now, not as it was at sign-in
        return payload

    def _ended_file(self) -> Path:
        return self.config().state_dir / "web-ended"

    def ended(self) -> dict[str, float]:
        """Sessions signed out before their expiry: nonce -> expiry (kept in a file across restarts)."""
        with self._lock:
            if self._ended is None:
                self._ended = {}
                try:
                    for line in self._ended_file().read_text().splitlines():
                        nonce, _, expiry = line.partition(" ")
                        self._ended[nonce] = float(expiry or 0)
                except (OSError, ValueError):
                    pass
            return self._ended

    def end(self, payload: dict[str, Any]) -> None:
        """Sign a session out for good: its cookie is refused from now on, even if someone kept a copy."""
        ended = self.ended()
        with self._lock:
            now = self.clock()
            for nonce in [n for n, e in ended.items() if e < now]:
                del ended[nonce]
            ended[str(payload["n"])] = float(payload["e"])
            path = self._ended_file()
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text("".join(f"{n} {e:.0f}\n" for n, e in ended.items()))
            os.replace(tmp, path)


def cookie(name: str, value: str, *, max_age: int, secure: bool) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, for the whole site, Secure when `secure`."""
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
