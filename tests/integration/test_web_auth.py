"""Who you are on the web dashboard: a trusted proxy's header, or gitopsd's login with an API token and a session.

Real: `gitopsd run` as a process serving the dashboard with uvicorn on loopback, tokens made with
`gitopsd token create`, HTTP over TCP from 127.0.0.1 or 127.0.0.2 (one trusted as a proxy, one not),
the proxy's shared secret in a 0600 file. Nothing faked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox, free_port
from tests.webclient import Browser, token, web_up

ROLES = {"*": {"viewer": ["*"]}, "qa": {"deployer": ["group:ops"]}}
SECRET = "f0e1d2c3b4a5968778695a4b3c2d1e0f"  # the proxy's shared secret: what proves a request is the proxy's
PROOF = {"X-Gitopsd-Proxy-Secret": SECRET}


def secret_file(short_tmp: Path) -> str:
    path = short_tmp / "proxy-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return str(path)


def start(short_tmp: Path, web: dict[str, object]) -> tuple[Sandbox, Daemon, int]:
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={
            "groups": {"ops": ["olga"]},
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": web,
        },
        converged=True,
    )
    daemon = Daemon(sandbox)
    web_up(daemon)
    return sandbox, daemon, port


@pytest.fixture
def proxied(short_tmp: Path) -> Iterator[tuple[Sandbox, Daemon, int]]:
    sandbox, daemon, port = start(
        short_tmp,
        {
            "auth": "proxy",
            "trusted_proxies": ["127.0.0.2"],
            "proxy_secret_file": secret_file(short_tmp),
            "proxy_groups_header": "X-Forwarded-Groups",
            "roles": {"*": {"viewer": ["group:staff"]}, "qa": {"deployer": ["group:ops"]}},
        },
    )
    with daemon:
        yield sandbox, daemon, port


@pytest.fixture
def login(short_tmp: Path) -> Iterator[tuple[Sandbox, Daemon, int]]:
    sandbox, daemon, port = start(
        short_tmp,
        {
            "auth": "login",
            "trusted_proxies": ["127.0.0.2"],
            "roles": ROLES,
            "proxy_secret_file": secret_file(short_tmp),
            "session_hours": 1,
        },
    )
    with daemon:
        yield sandbox, daemon, port


def test_a_trusted_proxys_user_header_signs_in_and_the_same_header_from_elsewhere_is_ignored_and_logged_once(proxied):
    sandbox, daemon, port = proxied
    proxy = Browser(
        port, source="127.0.0.2", headers={"X-Forwarded-User": "olga@example.com", "X-Forwarded-Groups": "staff, ops", **PROOF}
    )
    page = proxy.get("/")
    assert page.status == 200 and "olga@example.com" in page.text
    session = page.set_cookies()["gitopsd_session"]  # a session of its own, for the forms' CSRF token
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Secure" not in session
    assert proxy.get("/", headers={"X-Forwarded-Proto": "https"}).status == 200

    # The proxy's groups give roles: staff sees, but without a group that has a role, nothing at all.
    outsider = Browser(port, source="127.0.0.2", headers={"X-Forwarded-User": "eve", "X-Forwarded-Groups": "guests", **PROOF})
    refused = outsider.get("/")
    assert refused.status == 403 and "eve has no role on this dashboard" in refused.text

    forged = Browser(port, source="127.0.0.1", headers={"X-Forwarded-User": "olga@example.com"})
    for _ in range(3):
        answer = forged.get("/")
        assert answer.status == 401 and "olga" not in answer.text
    told = [line for line in daemon.log().splitlines() if "ignored the X-Forwarded-User header from 127.0.0.1" in line]
    assert len(told) == 1, told
    assert Browser(port, source="127.0.0.2", headers=PROOF).get("/").status == 401  # the proxy, but no user header
    assert Browser(port, source="127.0.0.2", headers=PROOF).get("/login").status == 404  # no login page behind a proxy


def test_a_token_signs_in_to_a_session_cookie_that_is_httponly_samesite_strict_and_secure_behind_tls(login):
    sandbox, daemon, port = login
    secret = token(sandbox, "olga-laptop", "read", owner="olga")
    browser = Browser(port)
    assert browser.get("/").status == 303  # not signed in: off to the login page
    signed = browser.login(secret)
    assert signed.status == 303 and signed.header("location") == "/"
    cookie = signed.set_cookies()["gitopsd_session"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "Max-Age=3600" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would never come back
    page = browser.get("/")
    assert page.status == 200 and "olga" in page.text and secret not in page.text

    # Behind a TLS proxy (X-Forwarded-Proto from a trusted address) the cookie is Secure.
    tls = Browser(port, source="127.0.0.2", headers={"X-Forwarded-Proto": "https", **PROOF})
    assert "; Secure" in tls.login(secret).set_cookies()["gitopsd_session"]
    # ... but not on the word of an address that is not a proxy.
    plain = Browser(port, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in plain.login(secret).set_cookies()["gitopsd_session"]

    # A token without the read scope (a CI token) does not sign in; a wrong one neither.
    ci = token(sandbox, "jenkins", "statuses:write")
    assert Browser(port).login(ci).status == 401
    assert Browser(port).login("gitopsd_not-a-token").status == 401
    # Scripts keep their tokens on the API, beside the dashboard.
    api = Browser(port).get("/api/v1/status", headers={"Authorization": f"Bearer {secret}"})
    assert api.status == 200 and json.loads(api.text)[0]["env"] == "qa"


def test_revoking_the_token_ends_its_sessions_and_signing_out_ends_one_even_for_a_kept_copy(login):
    sandbox, daemon, port = login
    secret = token(sandbox, "olga-laptop", "read", owner="olga")
    first, second = Browser(port), Browser(port)
    assert first.login(secret).status == 303 and second.login(secret).status == 303
    kept = dict(first.cookies)
    csrf = first.csrf()
    assert first.post("/logout", {"csrf_token": csrf}).status == 303
    assert "gitopsd_session" not in first.cookies
    stolen = Browser(port, cookies=kept)
    assert stolen.get("/").status == 303  # the copy is refused: the session ended
    assert second.get("/").status == 200
    sandbox.command("token", "revoke", "olga-laptop")
    answer = second.get("/")
    assert answer.status == 303 and (answer.header("location") or "").startswith("/login")


def test_the_login_form_needs_its_csrf_value_and_failures_are_rate_limited_per_address(login):
    sandbox, daemon, port = login
    secret = token(sandbox, "olga-laptop", "read", owner="olga")
    browser = Browser(port)
    browser.get("/login")
    assert browser.post("/login", {"token": secret}).status == 403  # no CSRF value
    assert browser.post("/login", {"token": secret, "csrf_token": "wrong"}).status == 403
    assert "gitopsd_session" not in browser.cookies
    for _ in range(5):
        assert browser.login("gitopsd_guess").status == 401
    limited = browser.login(secret)  # even the right token waits: guessing must not go on
    assert limited.status == 429 and int(limited.header("retry-after") or 0) > 0
    assert "too many failed sign-ins" in limited.text
    assert Browser(port, source="127.0.0.2").login(secret).status == 303  # another address is not held up


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(login):
    sandbox, daemon, port = login
    browser = Browser(port)
    browser.login(token(sandbox, "olga-laptop", "read", owner="olga"))
    assert browser.post("/logout", {}).status == 403
    assert browser.post("/logout", {"csrf_token": "0" * 64}).status == 403
    assert browser.get("/").status == 200  # still signed in: nothing happened
    other = Browser(port)
    other.login(token(sandbox, "olga-phone", "read", owner="olga"))
    # Another session's token does not do either: each session has its own.
    assert browser.post("/logout", {"csrf_token": other.csrf()}).status == 403
    assert browser.post("/logout", {}, headers={"X-CSRF-Token": browser.csrf()}).status == 303


def test_a_user_header_from_the_proxys_address_counts_only_with_the_proxys_secret(proxied):
    sandbox, daemon, port = proxied
    # Any local account can send from loopback: two of them, each naming an approver, are nobody.
    for name in ("paula", "pete"):
        placed = Browser(port, source="127.0.0.2", headers={"X-Forwarded-User": name, "X-Forwarded-Groups": "staff"})
        answer = placed.get("/")
        assert answer.status == 401 and name not in answer.text
        approve = placed.post("/actions/approve", {"repo": "shop", "rc": "rc/1", "csrf_token": "x"})
        assert approve.status == 401
    told = [
        line
        for line in daemon.log().splitlines()
        if "ignored the X-Forwarded-User header from 127.0.0.2, without the right proxy secret" in line
    ]
    assert len(told) == 1, told
    wrong = Browser(
        port,
        source="127.0.0.2",
        headers={"X-Forwarded-User": "olga", "X-Forwarded-Groups": "staff", "X-Gitopsd-Proxy-Secret": SECRET[:-1] + "0"},
    )
    assert wrong.get("/").status == 401
    proven = Browser(port, source="127.0.0.2", headers={"X-Forwarded-User": "olga", "X-Forwarded-Groups": "staff", **PROOF})
    page = proven.get("/")
    assert page.status == 200 and "olga" in page.text
    # The secret from an address that is not the proxy's proves nothing either.
    assert Browser(port, source="127.0.0.1", headers={"X-Forwarded-User": "olga", **PROOF}).get("/").status == 401
    # A secret everyone may read proves nothing: the daemon says so once and believes no proxy until it is fixed.
    (sandbox.root / "proxy-secret").chmod(0o644)
    assert proven.get("/").status == 401
    assert "it is readable by everyone: chmod o-r" in daemon.log()
    (sandbox.root / "proxy-secret").chmod(0o640)
    assert proven.get("/").status == 200


def test_the_login_rate_limit_goes_by_the_peer_unless_a_proven_proxy_forwards_the_address(login):
    sandbox, daemon, port = login
    secret = token(sandbox, "olga-laptop", "read", owner="olga")
    guesser = Browser(port, source="127.0.0.2")  # the proxy's address, without its secret: a local account
    for i in range(5):
        assert guesser.login("gitopsd_guess").status == 401
        guesser.headers["X-Forwarded-For"] = f"10.0.0.{i + 1}"  # a new address each time does not help
    assert guesser.login("gitopsd_guess").status == 429
    proxy = Browser(port, source="127.0.0.2", headers={**PROOF, "X-Forwarded-For": "10.9.0.1"})
    for _ in range(5):
        assert proxy.login("gitopsd_guess").status == 401
    assert proxy.login(secret).status == 429  # 10.9.0.1 is held up ...
    proxy.headers["X-Forwarded-For"] = "10.9.0.2"
    assert proxy.login(secret).status == 303  # ... the next person behind the proxy is not


def test_a_token_session_may_do_what_its_scopes_allow_and_a_read_token_only_looks(login):
    sandbox, daemon, port = login
    reader = Browser(port)
    assert reader.login(token(sandbox, "olga-laptop", "read", owner="olga")).status == 303  # olga: qa's deployer
    assert 'action="/actions/signoff"' not in reader.get("/repos/shop/envs/qa").text  # no forms to act with
    for action, form in (
        ("retry", {"repo": "shop", "env": "qa"}),
        ("signoff", {"repo": "shop", "env": "qa"}),
        ("promote", {"repo": "shop", "env": "qa"}),
    ):
        refused = reader.post(f"/actions/{action}", {**form, "csrf_token": reader.csrf()}, headers={"HX-Request": "true"})
        assert refused.status == 403 and "with the token olga-laptop: it lacks the scope" in refused.text, refused.text
    approver = Browser(port)
    assert approver.login(token(sandbox, "olga-approvals", "read", "approvals:write", owner="olga")).status == 303
    refused = approver.post(
        "/actions/retry", {"repo": "shop", "env": "qa", "csrf_token": approver.csrf()}, headers={"HX-Request": "true"}
    )
    assert refused.status == 403 and "lacks the scope deployments:write" in refused.text
    deployer = Browser(port)
    assert deployer.login(token(sandbox, "olga-deploys", "read", "deployments:write", owner="olga")).status == 303
    assert 'action="/actions/signoff"' in deployer.get("/repos/shop/envs/qa").text
    answer = deployer.post(
        "/actions/retry", {"repo": "shop", "env": "qa", "csrf_token": deployer.csrf()}, headers={"HX-Request": "true"}
    )
    assert answer.status != 403 and "lacks the scope" not in answer.text, answer.text
