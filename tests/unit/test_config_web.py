"""Config `web:` (the dashboard's sign-in and roles): parsed into core.settings.Web, every mistake said with file:line:key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load
from gitopsd.core.settings import RoleGrant, Web


def config(tmp_path: Path, web: str, api: bool = True) -> Path:
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    path = tmp_path / "gitopsd.yml"
    path.write_text(
        f"repositories:\n  - name: shop\n    path: {repo}\n"
        "groups:\n  ops: [olga, oscar]\n  product: [paula]\n" + ("api:\n  listen: 127.0.0.1:8470\n" if api else "") + web
    )
    return path


def test_web_is_off_unless_configured_and_by_default_asks_for_a_login_and_lets_everyone_signed_in_view(tmp_path):
    assert load(config(tmp_path, "")).web is None
    web = load(config(tmp_path, "web: {}\n")).web
    assert web == Web()
    assert web.auth == "login" and web.grants == (RoleGrant("*", "viewer", ("*",)),)


def test_roles_resolve_config_groups_and_keep_group_names_for_the_proxys_groups(tmp_path):
    web = load(
        config(
            tmp_path,
            """\
web:
  auth: proxy
  proxy_groups_header: X-Forwarded-Groups
  trusted_proxies: [127.0.0.1, 10.1.0.0/16]
  proxy_secret_file: /etc/gitopsd/proxy-secret
  admin: [root]
  roles:
    "*": {viewer: ["*"], deployer: [group:ops]}
    production: {approver: [group:product, group:sso-release-managers]}
    shop/staging: {deployer: [dana]}
  secure_cookies: true
  session_hours: 2
""",
        )
    ).web
    assert web is not None
    assert (web.auth, web.proxy_header, web.proxy_groups_header) == ("proxy", "X-Forwarded-User", "X-Forwarded-Groups")
    assert web.trusted_proxies == ("127.0.0.1/32", "10.1.0.0/16")
    assert web.proxy_secret_file == Path("/etc/gitopsd/proxy-secret")
    assert (web.secure_cookies, web.session_hours) == ("true", 2)
    assert web.grants == (
        RoleGrant("*", "admin", ("root",)),
        RoleGrant("*", "viewer", ("*",)),
        RoleGrant("*", "deployer", ("olga", "oscar"), ("ops",)),
        RoleGrant("production", "approver", ("paula",), ("product", "sso-release-managers")),
        RoleGrant("shop/staging", "deployer", ("dana",)),
    )


def test_each_mistake_of_web_is_said_with_its_line_and_key(tmp_path):
    path = config(
        tmp_path,
        """\
web:
  auth: oidc
  proxy_header: "X User"
  trusted_proxies: [127.0.0.1, localhost]
  roles:
    prod: {deployer: [group:ops]}
    production: {boss: [alice], deployer: [group:nobody, "bad name"]}
  secure_cookies: maybe
  session_hours: 0
  colour: blue
  proxy_secret_file: /etc/gitopsd/proxy-secret
""",
        api=False,
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    said = [str(p) for p in caught.value.problems]
    expected = [
        (1, "web: the dashboard is served on the HTTP API's address"),
        (2, "web.auth: must be login"),
        (3, "web.proxy_header: must be an HTTP header name"),
        (4, "web.trusted_proxies[1]: must be an IP address or network"),
        (6, "web.roles.prod: names no environment"),
        (7, "web.roles.production.boss: is no role; roles are viewer, deployer, approver, admin"),
        (
            7,
            "web.roles.production.deployer: group:nobody names no group of `groups:` (ops, product); groups from your "
            "proxy count only with web.proxy_groups_header",
        ),
        (7, "web.roles.production.deployer: 'bad name' is not a user name"),
        (8, "web.secure_cookies: must be auto"),
        (9, "web.session_hours: must be at least 0.05"),
        (10, "web.colour: unknown key"),
    ]
    for line, words in expected:
        assert any(s.startswith(f"{path}:{line + 6}: {words}") for s in said), (words, said)
    assert len(said) == len(expected), said


def test_a_proxy_without_trusted_addresses_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"web.trusted_proxies: auth: proxy needs the proxy's address"):
        load(config(tmp_path, "web: {auth: proxy, trusted_proxies: []}\n"))


@pytest.mark.parametrize("web", ["web: {auth: proxy}\n", "web: {auth: login, trusted_proxies: [127.0.0.1]}\n"])
def test_a_trusted_proxy_without_a_shared_secret_is_refused_with_what_to_add(tmp_path, web):
    with pytest.raises(ConfigError) as caught:
        load(config(tmp_path, web))
    assert [str(p).split(": ", 1)[1] for p in caught.value.problems] == [
        "web.proxy_secret_file: trusted_proxies needs a shared secret too: add proxy_secret_file: "
        "/etc/gitopsd/proxy-secret (readable by root and the proxy only) and have the proxy send its content in "
        "X-Gitopsd-Proxy-Secret"
    ]
    assert load(config(tmp_path, "web: {auth: login}\n")).web == Web()  # no proxy: nothing to prove
