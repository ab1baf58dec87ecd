"""Whether a request comes from the web dashboard's proven reverse proxy, and what that proxy may say (docs/web.md).

A proxy that authenticated the person (oauth2-proxy, ...) sets `web.proxy_header`; it counts only
from a proven proxy: an address in `web.trusted_proxies` that also sends the shared secret of
`web.proxy_secret_file` (any local account can send headers from loopback). Only a proven proxy
names the client's address (rate limits) and the scheme it was reached by (Secure cookies).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from ..core.settings import Config, Web

log = logging.getLogger("gitopsd.web")

SECRET_HEADER = "x-gitopsd-proxy-secret"  # noqa: S105 (a header's name): carries web.proxy_secret_file's content


class ProxyProof:
    """The proxy's proof (address and shared secret) of one web app, over the daemon's current config."""

    def __init__(self, config: Callable[[], Config]):
        self.config = config
        self._lock = threading.Lock()
        self._told: set[str] = set()  # addresses whose unproven proxy header was logged
        self._proof: tuple[tuple[str, int, int], bytes] | None = None  # (file, ctime, size) -> its secret

    @property
    def web(self) -> Web:
        return self.config().web or Web()

    def trusted(self, scope: Scope) -> bool:
        """Did this request come straight from an address in web.trusted_proxies?"""
        peer = (scope.get("client") or ("", 0))[0]
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net) for net in self.web.trusted_proxies)

    def proxy_secret(self) -> bytes:
        """The content of web.proxy_secret_file (read again when it changes), or b"" (logged) when it is missing,
        unreadable or readable by everyone: then no request is a proven proxy's."""
        path = self.web.proxy_secret_file
        if path is None:
            return b""
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                key = (str(path), st.st_ctime_ns, st.st_size)  # ctime: a chmod changes it too
                if self._proof is not None and self._proof[0] == key:
                    return self._proof[1]
                if st.st_mode & 0o004:
                    raise OSError(f"it is readable by everyone: chmod o-r {path} (root and the proxy's user only)")
                secret = handle.read(4096).strip()
        except OSError as exc:
            self.tell(f"secret:{exc}", "web: no proxy is believed: web.proxy_secret_file %s: %s", path, exc.strerror or exc)
            return b""
        if len(secret) < 16:
            self.tell(
                f"short:{key}",
                "web: no proxy is believed: web.proxy_secret_file %s holds less than 16 "
                "bytes: write a long random one (openssl rand -hex 32)",
                path,
            )
            return b""
        self._proof = (key, secret)
        return secret

    def proven(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Did this request come from the proxy: an address in web.trusted_proxies that sends the shared secret
        (compared in constant time)? An address alone is never enough: any local account can use loopback."""
        if not self.trusted(scope):
            return False
        expected = self.proxy_secret()
        given = headers.get(SECRET_HEADER, "").strip().encode("latin-1")
        return bool(expected) and hmac.compare_digest(given, expected)

    def tell(self, key: str, message: str, *args: Any) -> None:
        """Log a warning once per `key` (an address, a file's problem): a flood must not fill the log."""
        with self._lock:
            if key in self._told or len(self._told) > 10_000:
                return
            self._told.add(key)
        log.warning(message, *args)

    def client(self, scope: Scope, headers: dict[str, str]) -> str:
        """Who to rate-limit: the TCP peer, or the address a proven proxy says it forwards for."""
        peer = str((scope.get("client") or ("unknown", 0))[0])
        forwarded = headers.get("x-forwarded-for", "")
        if forwarded and self.proven(scope, headers):
            return forwarded.split(",")[-1].strip()[:64] or peer
        return peer

    def secure(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Should cookies be Secure: web.secure_cookies, or with auto, did the request come over TLS?"""
        setting = self.web.secure_cookies
        if setting in ("true", "false"):
            return setting == "true"
        return scope.get("scheme") == "https" or (
            headers.get("x-forwarded-proto", "").lower() == "https" and self.proven(scope, headers)
        )
