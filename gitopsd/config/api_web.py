"""`api:`, `grafana:` and `web:`: the HTTP API, Grafana annotations, the dashboard's sign-in and roles."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.settings import ROLES, Api, Grafana, Repository, RoleGrant, Web
from .problems import IDENTITY_RE, _Checker, _path_field, _resolve, _url

API_KEYS = {
    "listen": "host:port the HTTP API listens on",
    "tokens_file": "file of the API's tokens (gitopsd token create)",
}


def _api(raw: Any, base: Path, check: _Checker) -> Api | None:
    """`api: {listen: "127.0.0.1:8470", tokens_file: tokens.yml}`: the HTTP API, off without this section."""
    data = check.mapping(raw, "api", API_KEYS)
    listen = data.get("listen", f"{Api.host}:{Api.port}")
    host, _, port = str(listen).rpartition(":")
    host = host.strip("[]")
    if not isinstance(listen, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        check.add("api.listen", f"must be HOST:PORT such as 127.0.0.1:8470, not {listen!r}")
        host, port = Api.host, str(Api.port)
    tokens = _path_field(data.get("tokens_file", "tokens.yml"), "api.tokens_file", "a file path", base, check)
    return Api(host=host, port=int(port), tokens_file=tokens or Api.tokens_file)


GRAFANA_KEYS = {
    "url": "Grafana's URL",
    "token_file": "file holding a Grafana service account token",
    "dashboard_uid": "only this dashboard (default: an annotation for the organization)",
    "timeout": "seconds per request",
}


def _grafana(raw: Any, base: Path, check: _Checker) -> Grafana | None:
    """`grafana: {url, token_file, dashboard_uid?, timeout?}`: annotate each deployment's end in Grafana."""
    data = check.mapping(raw, "grafana", GRAFANA_KEYS)
    url = _url(data.get("url"), "grafana.url", check).rstrip("/")
    token_raw = data.get("token_file")
    token = None
    if not isinstance(token_raw, str) or not token_raw or "\0" in token_raw:
        check.add("grafana.token_file", f"must be the path of a file holding a Grafana service account token, not {token_raw!r}")
    else:
        try:
            token = _resolve(base, token_raw)
        except ValueError as exc:
            check.add("grafana.token_file", str(exc))
    uid = data.get("dashboard_uid")
    if uid is not None and not (isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid)):
        check.add("grafana.dashboard_uid", f"must be a dashboard's uid (letters, digits, - and _), not {uid!r}")
        uid = None
    timeout = check.number(data, "timeout", "grafana", Grafana.timeout, minimum=0.1, maximum=30, what="half a minute")
    if not url or token is None:
        return None
    return Grafana(url=url, token_file=token, dashboard_uid=uid, timeout=timeout)


WEB_KEYS = {
    "auth": "login (an API token on gitopsd's own page) or proxy (a header set by a reverse proxy)",
    "proxy_header": "with auth: proxy, the header holding the user's name",
    "proxy_groups_header": "with auth: proxy, the header holding the user's groups, comma-separated",
    "trusted_proxies": "addresses or networks whose X-Forwarded-* headers are believed",
    "proxy_secret_file": "file whose content trusted proxies must also send",
    "roles": "where -> role -> users, group:NAME or *",
    "admin": "identities who are admin everywhere",
    "secure_cookies": "auto (Secure when the request came over TLS), true or false",
    "session_hours": "hours a sign-in lasts",
}
HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _web(  # noqa: C901 (a config section: one branch per key)
    raw: Any,
    has_api: bool,
    repos: list[Repository],
    groups: dict[str, list[str]],
    base: Path,
    check: _Checker,
) -> Web:
    """`web:` the dashboard (docs/web.md): who you are and, per environment, what you may do."""
    import ipaddress

    data = check.mapping(raw, "web", WEB_KEYS)
    if not has_api:
        check.add("web", "the dashboard is served on the HTTP API's address: add `api: {listen: 127.0.0.1:8470}` too")
    auth = data.get("auth", Web.auth)
    if auth not in ("login", "proxy"):
        check.add(
            "web.auth",
            f"must be login (an API token on gitopsd's own login page) or proxy (a header set by a "
            f"trusted reverse proxy), not {auth!r}",
        )
        auth = Web.auth
    headers: dict[str, str | None] = {}
    for name, default in (("proxy_header", Web.proxy_header), ("proxy_groups_header", None)):
        value = data.get(name, default)
        if value is not None and not (isinstance(value, str) and HEADER_RE.match(value)):
            check.add(f"web.{name}", f"must be an HTTP header name such as X-Forwarded-User, not {value!r}")
            value = default
        headers[name] = value
    proxies: list[str] = []
    raw_proxies = data.get("trusted_proxies", list(Web.trusted_proxies))
    if not isinstance(raw_proxies, list):
        check.add("web.trusted_proxies", "must be a list of addresses or networks, e.g. [127.0.0.1, 10.0.0.0/24]")
        raw_proxies = []
    for i, entry in enumerate(raw_proxies):
        try:
            proxies.append(str(ipaddress.ip_network(str(entry), strict=False)))
        except ValueError:
            check.add(
                f"web.trusted_proxies[{i}]", f"must be an IP address or network such as 127.0.0.1 or 10.0.0.0/24, not {entry!r}"
            )
    if auth == "proxy" and not raw_proxies:
        check.add(
            "web.trusted_proxies", "auth: proxy needs the proxy's address here: a user header from anywhere else is ignored"
        )
    secret_raw, secret = data.get("proxy_secret_file"), None
    if secret_raw is not None:
        try:
            if not isinstance(secret_raw, str) or not secret_raw:
                raise ValueError(f"must be the path of the file holding the proxy's shared secret, not {secret_raw!r}")
            secret = _resolve(base, secret_raw)
        except ValueError as exc:
            check.add("web.proxy_secret_file", str(exc))
    elif auth == "proxy" or "trusted_proxies" in data:
        # Any local account can send a header from loopback: an address alone proves no proxy.
        check.add(
            "web.proxy_secret_file",
            "trusted_proxies needs a shared secret too: add proxy_secret_file: "
            "/etc/gitopsd/proxy-secret (readable by root and the proxy only) and have "
            "the proxy send its content in X-Gitopsd-Proxy-Secret",
        )
    external = headers["proxy_groups_header"] is not None
    grants = (
        [RoleGrant("*", "admin", *_web_people(data["admin"], "web.admin", groups, external, check))] if "admin" in data else []
    )
    roles = data.get("roles", {"*": {"viewer": ["*"]}})
    if not isinstance(roles, dict):
        check.add(
            "web.roles",
            'must map environments (ENV, REPO/ENV, REPO/* or "*") to roles and who has them, '
            "e.g. {production: {deployer: [group:ops]}}",
        )
        roles = {}
    for where, given in roles.items():
        key = f"web.roles.{where}"
        if not _web_place(str(where), repos):
            check.add(key, 'names no environment: use "*", ENV, REPO/ENV or REPO/* with names from repositories')
        if not isinstance(given, dict):
            check.add(key, f"must map roles ({', '.join(ROLES)}) to lists of people, e.g. {{deployer: [group:ops]}}")
            continue
        for role, people in given.items():
            if role not in ROLES:
                check.add(f"{key}.{role}", f"is no role; roles are {', '.join(ROLES)}")
                continue
            grants.append(RoleGrant(str(where), role, *_web_people(people, f"{key}.{role}", groups, external, check)))
    cookies = data.get("secure_cookies", Web.secure_cookies)
    if cookies not in ("auto", True, False):
        check.add("web.secure_cookies", f"must be auto (Secure when the request came over TLS), true or false, not {cookies!r}")
        cookies = Web.secure_cookies
    hours = check.number(data, "session_hours", "web", Web.session_hours, minimum=0.05, maximum=720, what="30 days")
    return Web(
        auth=auth,
        proxy_header=headers["proxy_header"] or Web.proxy_header,
        proxy_groups_header=headers["proxy_groups_header"],
        trusted_proxies=tuple(proxies),
        proxy_secret_file=secret,
        grants=tuple(grants),
        secure_cookies=cookies if isinstance(cookies, str) else str(cookies).lower(),
        session_hours=hours,
    )


def _web_place(where: str, repos: list[Repository]) -> bool:
    """Does a `web.roles` key name environments that exist: "*", ENV, REPO/ENV or REPO/*?"""
    if where == "*":
        return True
    repo_name, _, env_name = where.rpartition("/")
    chosen = [r for r in repos if r.name == repo_name] if repo_name else repos
    return bool(chosen) and (env_name == "*" and bool(repo_name) or any(r.environment(env_name) for r in chosen))


def _web_people(
    value: Any, key: str, groups: dict[str, list[str]], external: bool, check: _Checker
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(identities, group names) of a role's list: user names, "*" (everyone signed in) and group:NAME entries.

    A group must be one of `groups:`, unless the proxy also says groups (proxy_groups_header): then it may be theirs."""
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        check.add(key, 'must be a list of user names, group:NAME entries or "*" (everyone signed in), e.g. [group:ops]')
        return (), ()
    people: list[str] = []
    named: list[str] = []
    for entry in value:
        if entry.startswith("group:"):
            name = entry[6:]
            if name in groups:
                people += groups[name]
            elif not (external and HEADER_VALUE_RE.match(name)):
                check.add(
                    key,
                    f"{entry} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})"
                    + ("" if external else "; groups from your proxy count only with web.proxy_groups_header"),
                )
                continue
            named.append(name)
        elif entry == "*" or IDENTITY_RE.match(entry):
            people.append(entry)
        else:
            check.add(key, f'{entry!r} is not a user name, group:NAME nor "*"')
    return tuple(dict.fromkeys(people)), tuple(dict.fromkeys(named))


HEADER_VALUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:/+-]{0,127}$")  # a group name as a proxy may say it
