"""A small HTTP client for the web dashboard's tests: real TCP to the daemon's uvicorn, cookies kept by hand.

Nothing is followed automatically (redirects are asserted), and the source address can be chosen
(127.0.0.2 and 127.0.0.1 are both loopback) to be, or not be, a trusted proxy.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tests.support import Daemon, Sandbox


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set_cookies(self) -> dict[str, str]:
        """Each Set-Cookie by its cookie's name: the whole header (value and flags)."""
        return {v.split("=", 1)[0]: v for k, v in self.headers if k.lower() == "set-cookie"}


@dataclass
class Browser:
    port: int
    source: str = "127.0.0.1"
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (a proxy's user header, ...)
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60, source_address=(self.source, 0))
        sent = {**self.headers, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheaders(), response.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for name, whole in reply.set_cookies().items():
            value = whole.split("=", 1)[1].split(";", 1)[0]
            if "Max-Age=0" in whole or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def login(self, token: str) -> Reply:
        """Open the login page (its form's CSRF cookie), then post the token."""
        page = self.get("/login")
        assert page.status == 200, page
        return self.post("/login", {"csrf_token": self.cookies["gitopsd_login"], "token": token, "next": "/"})

    def csrf(self, path: str = "/") -> str:
        """The CSRF token the pages put in their forms for this session."""
        page = self.get(path)
        assert page.status == 200, (page.status, page.text[:500])
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, page.text[:2000]
        return found.group(1)


def token(sandbox: Sandbox, name: str, *scopes: str, owner: str | None = None) -> str:
    args = [a for s in scopes or ("read",) for a in ("--scope", s)] + (["--owner", owner] if owner else [])
    return sandbox.cli("token", "create", name, *args).stdout.strip()


def web_up(daemon: Daemon) -> None:
    daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 30, "the API and the dashboard up")
