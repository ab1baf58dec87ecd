"""Who you are on the web dashboard, and what you may do there (docs/web.md).

Identity comes from one of two places, as `web.auth` says:
- proxy: a reverse proxy that authenticated the person (oauth2-proxy, ...) sets `web.proxy_header`
  (and maybe `web.proxy_groups_header`); the header counts only from a proven proxy: an address in
  `web.trusted_proxies` that also sends the shared secret of `web.proxy_secret_file` (any local
  account can send headers from loopback). Otherwise it is ignored (and logged once per address).
- login: gitopsd's own page, where a person pastes an API token (`gitopsd token create`, scope
  read); the identity is the token's owner, and its scopes bound what the session may do (read
  only: no actions). Revoking the token ends its sessions at their next request.

Sessions are signed cookies (sessions.py), the proxy's proof is proxy.py's, roles per environment are
roles.py's; this module is the middleware that puts them together: it finds the request's user,
checks each POST's CSRF token, and serves the login and logout pages.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.settings import Config, Web
from ..services.tokens import TokenCheck
from .proxy import ProxyProof
from .roles import WebUser, holds
from .sessions import Sessions, cookie, same

log = logging.getLogger("gitopsd.web")

SESSION_COOKIE = "gitopsd_session"
LOGIN_COOKIE = "gitopsd_login"  # the login form's own CSRF value (double submit), before any session
FLASH_COOKIE = "gitopsd_flash"  # an action's answer, shown once on the page a non-htmx form goes back to
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_FAILURES = 5  # failed logins per client address ...
LOGIN_WINDOW = 60.0  # ... within this many seconds, then 429 until the oldest is older
MAX_FORM = 64 * 1024  # bytes of a posted form: actions carry a note at most
FORM_FIELDS = 50  # fields of a posted form: the actions' have a handful
USER_MAX = 128
PUBLIC = ("/static/", "/login")  # reachable without a user (the login page needs its stylesheet)
HEADERS = {
    "content-security-policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


# -- what the pages and actions ask -----------------------------------------------------------------------------
def current_user(request: Request) -> WebUser | None:
    """The signed-in user of this request (the middleware found it), or None."""
    user = request.scope.get("gitopsd.user")
    return user if isinstance(user, WebUser) else None


def csrf_token(request: Request) -> str:
    """This session's CSRF token, for the hidden `csrf_token` field of each form (or the X-CSRF-Token header)."""
    return str(request.scope.get("gitopsd.csrf", ""))


def take_flash(request: Request) -> tuple[bool, list[str]] | None:
    """The answer of the action a non-htmx form posted before coming back here: (done, lines), shown once."""
    flash = request.scope.get("gitopsd.flash")
    return flash if isinstance(flash, tuple) else None


def flash_cookie(request: Request, ok: bool, lines: list[str]) -> str:
    """A Set-Cookie value carrying an action's answer to the next page (signed: only gitopsd writes what it shows)."""
    auth = the_auth(request)
    kept: list[str] = []
    for line in lines:  # a cookie holds about 4 kB: the first lines, which say what happened
        if sum(map(len, kept)) + len(line) > 2000:
            kept.append("(more: the command line shows it all)")
            break
        kept.append(line)
    return cookie(
        FLASH_COOKIE,
        auth.sessions.sign({"ok": ok, "lines": kept}, "flash"),
        max_age=60,
        secure=bool(request.scope.get("gitopsd.secure")),
    )


def the_auth(request: Request) -> Auth:
    auth = request.scope.get("gitopsd.auth")
    assert isinstance(auth, Auth), "the web app is served without auth.middleware"
    return auth


# -- the middleware and its state --------------------------------------------------------------------------------
class Auth:
    """Sessions, the proxy's proof, CSRF and the login rate limit of one web app, over the daemon's current config."""

    def __init__(self, config: Callable[[], Config], tokens: TokenCheck | None = None, clock: Callable[[], float] = time.time):
        self.config, self.clock = config, clock
        self.tokens = tokens or TokenCheck(self._tokens_file)
        self.sessions = Sessions(config, self.tokens, clock)
        self.proxy = ProxyProof(config)
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    @property
    def web(self) -> Web:
        return self.config().web or Web()

    def _tokens_file(self) -> Path:
        api = self.config().api
        return api.tokens_file if api is not None else Path("/nonexistent")

    # -- login rate limit -------------------------------------------------------------------------------------------
    def limited(self, address: str) -> float:
        """Seconds until `address` may try to log in again (0: now)."""
        now = self.clock()
        with self._lock:
            failures = self._failures.get(address)
            while failures and failures[0] <= now - LOGIN_WINDOW:
                failures.popleft()
            if not failures or len(failures) < LOGIN_FAILURES:
                return 0.0
            return failures[0] + LOGIN_WINDOW - now

    def failed(self, address: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # a flood of addresses must not grow this without end
                self._failures.clear()
            self._failures.setdefault(address, deque(maxlen=LOGIN_FAILURES)).append(self.clock())

    # -- who this request is ----------------------------------------------------------------------------------------
    def user_of(self, scope: Scope, headers: dict[str, str]) -> tuple[WebUser | None, dict[str, Any] | None]:
        """The request's user and its session (None, None when nobody is signed in)."""
        web = self.web
        config = self.config()
        payload = self.sessions.session(_cookies(headers).get(SESSION_COOKIE))
        if web.auth == "proxy":
            name = headers.get(web.proxy_header.lower())
            if name is None:
                return None, None
            if not self.proxy.proven(scope, headers):
                peer = str((scope.get("client") or ("unknown", 0))[0])
                why = (
                    "without the right proxy secret (X-Gitopsd-Proxy-Secret, web.proxy_secret_file)"
                    if self.proxy.trusted(scope)
                    else f"which is not in web.trusted_proxies ({', '.join(web.trusted_proxies)})"
                )
                self.proxy.tell(
                    peer, "web: ignored the %s header from %s, %s; such requests are refused", web.proxy_header, peer, why
                )
                return None, None
            name = name.strip()
            if not name or len(name) > USER_MAX or any(c.isspace() or ord(c) < 32 for c in name):
                return None, None
            said = headers.get(web.proxy_groups_header.lower(), "") if web.proxy_groups_header else ""
            theirs = tuple(g.strip() for g in said.split(",") if g.strip())
            if payload is not None and (payload.get("v"), payload.get("u")) != ("proxy", name):
                payload = None  # another person behind the same browser: a session of their own
            return WebUser(name, _groups(config, name, theirs), "proxy", web.grants), payload
        if payload is None or payload.get("v") != "login":
            return None, None
        return WebUser(
            payload["u"],
            _groups(config, payload["u"], ()),
            "login",
            web.grants,
            tuple(payload.get("scopes", ())),
            str(payload.get("t", "")),
        ), payload

    def no_role(self, user: WebUser) -> bool:
        """Does the user hold no role anywhere (then every page is refused)?"""
        return not any(holds(user, g) for g in user.grants)

    # -- the ASGI middleware --------------------------------------------------------------------------------------
    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            await self._guard(app, scope, receive, send)

        return guarded

    async def _guard(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        public = path.startswith(PUBLIC[0]) or path == PUBLIC[1]
        user, payload = self.user_of(scope, headers)
        extra: list[str] = []  # Set-Cookie headers added to the answer
        secure = self.proxy.secure(scope, headers)
        if user is not None and payload is None:  # proxy: a session for the CSRF token, made now
            value, csrf = self.sessions.new(user.name, "proxy")
            extra.append(cookie(SESSION_COOKIE, value, max_age=int(self.web.session_hours * 3600), secure=secure))
        elif payload is not None:
            csrf = self.sessions.csrf_for(payload["n"])
        else:
            csrf = ""
        flash = self.sessions.unsign(_cookies(headers).get(FLASH_COOKIE), "flash")
        if FLASH_COOKIE in _cookies(headers) and user is not None and scope["method"] == "GET":
            extra.append(cookie(FLASH_COOKIE, "", max_age=0, secure=secure))
            if flash is not None:
                scope["gitopsd.flash"] = (bool(flash.get("ok")), [str(x) for x in flash.get("lines", [])])
        scope["gitopsd.auth"], scope["gitopsd.user"], scope["gitopsd.csrf"] = self, user, csrf
        scope["gitopsd.session"] = payload
        scope["gitopsd.secure"] = secure
        if user is None and not public:
            if self.web.auth == "login" and scope["method"] == "GET" and not headers.get("hx-request"):
                await _answer(scope, send, RedirectResponse(f"/login?next={quote(path)}", status_code=303))
            else:
                why = (
                    "sign in first (/login)"
                    if self.web.auth == "login"
                    else "sign in through the dashboard's address: your proxy signs you in"
                )
                await _answer(scope, send, _page(401, "Not signed in", why))
            return
        if user is not None and self.no_role(user) and path != "/logout" and not public:
            await _answer(
                scope,
                send,
                _page(
                    403,
                    "No access",
                    f"{user.name} has no role on this dashboard: ask an admin to add you to web.roles in {self.config().source}",
                ),
            )
            return
        if scope["method"] == "POST" and path != "/login":
            body = await _body(receive)
            if body is None:
                await _answer(scope, send, _page(413, "Too large", "the form is too large"))
                return
            posted = _posted_csrf(headers, body)
            if posted is None:
                await _answer(scope, send, _page(413, "Too large", f"the form has more than {FORM_FIELDS} fields"))
                return
            if not csrf or not same(posted, csrf):
                log.warning(
                    "web: refused a POST to %s by %s: its CSRF token is missing or wrong", path, user.name if user else "nobody"
                )
                await _answer(
                    scope,
                    send,
                    _page(
                        403,
                        "Refused",
                        "this form's CSRF token is missing or wrong (an "
                        "old page, or a form from another site): reload the page and try again",
                    ),
                )
                return
            receive = _replay(body)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *((b"set-cookie", c.encode("latin-1")) for c in extra)],
                }
            await send(message)

        await app(scope, receive, sending)

    # -- the login and logout pages (routes() below serves them) ---------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        if self.web.auth == "proxy":
            return _page(404, "No login here", "this dashboard signs you in through its proxy")
        value = secrets.token_urlsafe(16)
        response = _login_form(request, value, "", 200)
        response.headers.append(
            "set-cookie", cookie(LOGIN_COOKIE, value, max_age=3600, secure=bool(request.scope.get("gitopsd.secure")))
        )
        return response

    async def login(self, request: Request) -> Response:
        """Check the pasted token (rate-limited per client address) and start a session acting as its owner."""
        if self.web.auth == "proxy":
            return _page(404, "No login here", "this dashboard signs you in through its proxy")
        headers = {k.lower(): v for k, v in request.headers.items()}
        address = self.proxy.client(request.scope, headers)
        wait = self.limited(address)
        if wait > 0:
            return _page(
                429,
                "Too many attempts",
                f"too many failed sign-ins from {address}: try again in {int(wait) + 1} seconds",
                {"retry-after": str(int(wait) + 1)},
            )
        try:
            form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:  # parse_qs's answer to more fields than max_num_fields
            return _page(413, "Too large", "the sign-in form has more than 10 fields: use the one /login shows")
        expected = request.cookies.get(LOGIN_COOKIE, "")
        given = (form.get(CSRF_FIELD) or [""])[0]
        if not expected or not same(given, expected):
            return _page(403, "Refused", "this sign-in form is stale or from another site: open /login again")
        secret = (form.get("token") or [""])[0].strip()
        token = self.tokens.authenticate(f"Bearer {secret}")
        if token is None and self.tokens.unreadable() is not None:  # no token can be found: not this person's failure
            why = "the server cannot read its API tokens file, so no one can sign in: an operator must fix it"
            return _login_form(request, expected, f"{why} (the daemon's log says what is wrong with it)", 500)
        if token is None or "read" not in token.scopes:
            self.failed(address)
            log.info("web: a failed sign-in from %s", address)
            why = (
                "this token may not read (create one with --scope read)"
                if token is not None
                else "that is not a valid API token (or it was revoked)"
            )
            return _login_form(request, expected, why, 401)
        value, _csrf = self.sessions.new(token.identity, "login", (token.name, token.sha256))
        log.info("web: %s signed in with the token %s from %s", token.identity, token.name, address)
        response = RedirectResponse(_local((form.get("next") or ["/"])[0]), status_code=303)
        secure = bool(request.scope.get("gitopsd.secure"))
        response.headers.append(
            "set-cookie", cookie(SESSION_COOKIE, value, max_age=int(self.web.session_hours * 3600), secure=secure)
        )
        response.headers.append("set-cookie", cookie(LOGIN_COOKIE, "", max_age=0, secure=secure))
        return response

    async def logout(self, request: Request) -> Response:
        payload = request.scope.get("gitopsd.session")
        if isinstance(payload, dict):
            self.sessions.end(payload)
        response = RedirectResponse("/login" if self.web.auth == "login" else "/", status_code=303)
        response.headers.append(
            "set-cookie", cookie(SESSION_COOKIE, "", max_age=0, secure=bool(request.scope.get("gitopsd.secure")))
        )
        return response


# -- what the web app calls (gitopsd/web/app.py) -----------------------------------------------------------------
def middleware(config: Callable[[], Config], tokens: TokenCheck | None = None) -> list[Middleware]:
    """The session middleware for Starlette(middleware=...): one Auth over the daemon's config (and the API's
    token file, read again when it changes)."""
    return [Middleware(_Wrap, auth=Auth(config, tokens))]


class _Wrap:
    def __init__(self, app: ASGIApp, auth: Auth):
        self.guarded = auth.middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guarded(scope, receive, send)


def routes() -> list[Route]:
    """GET and POST /login, POST /logout, answered by the Auth the middleware put in the request."""

    async def login_page(request: Request) -> Response:
        return await the_auth(request).login_page(request)

    async def login(request: Request) -> Response:
        return await the_auth(request).login(request)

    async def logout(request: Request) -> Response:
        return await the_auth(request).logout(request)

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


# -- helpers -------------------------------------------------------------------------------------------------------
def _groups(config: Config, name: str, theirs: tuple[str, ...]) -> tuple[str, ...]:
    """The user's groups: those of `groups:` that list them, and those their proxy says."""
    return tuple(dict.fromkeys([g for g, members in config.groups if name in members] + list(theirs)))


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key not in found:
            found[key] = value
    return found


def _posted_csrf(headers: dict[str, str], body: bytes) -> str | None:
    """The CSRF token a POST carries ("" for none); None for a form of more than FORM_FIELDS fields."""
    if headers.get(CSRF_HEADER):
        return headers[CSRF_HEADER]
    if headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return ""
    try:
        return (parse_qs(body.decode("utf-8", "replace"), max_num_fields=FORM_FIELDS).get(CSRF_FIELD) or [""])[0]
    except ValueError:  # parse_qs's answer to more fields than max_num_fields
        return None


async def _body(receive: Receive) -> bytes | None:
    """The whole request body (None when larger than MAX_FORM)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _answer(scope: Scope, send: Send, response: Response) -> None:
    async def no_receive() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)


def _local(target: str) -> str:
    """`target` if it is a path on this site, else "/": a link must not send a signed-in person elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def _page(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    """A small page of its own (no template: it is shown before anyone is known)."""
    return HTMLResponse(
        _shell(title, f'<h1>{status}: {escape(title)}</h1>\n<p class="message">{escape(message)}</p>'),
        status_code=status,
        headers={**HEADERS, **(headers or {})},
    )


def _login_form(request: Request, csrf: str, error: str, status: int) -> HTMLResponse:
    wanted = _local(request.query_params.get("next", "/"))
    body = (
        "<h1>Sign in</h1>\n"
        + (f'<p class="result result-refused" role="alert">{escape(error)}</p>\n' if error else "")
        + '<form method="post" action="/login" class="stack">\n'
        f'  <input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf)}">\n'
        f'  <input type="hidden" name="next" value="{escape(wanted)}">\n'
        '  <label for="token">API token</label>\n'
        '  <input id="token" name="token" type="password" autocomplete="off" required>\n'
        '  <p class="meta">A token with the read scope: <code>gitopsd token create NAME --scope read '
        "--owner YOU</code>. You act as its owner, as far as its scopes go: add <code>--scope approvals:write</code> "
        "to sign off and approve, <code>--scope deployments:write</code> to promote, roll back and retry.</p>\n"
        '  <button class="btn" type="submit">Sign in</button>\n'
        "</form>"
    )
    return HTMLResponse(_shell("Sign in", body), status_code=status, headers=HEADERS)


def _shell(title: str, main: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{escape(title)} · gitopsd</title>\n<link rel="icon" href="data:,">\n'
        '<link rel="stylesheet" href="/static/gitopsd.css">\n</head>\n<body>\n'
        '<header class="top"><nav aria-label="Main"><a class="brand" href="/">gitopsd</a></nav></header>\n'
        f'<main id="main">\n{main}\n</main>\n</body>\n</html>\n'
    )
