"""What the web dashboard reads from a browser before any page: cookies, the posted CSRF token, a `next` link."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.web import auth


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    headers = {
        "cookie": fdp.ConsumeUnicodeNoSurrogates(512),
        "content-type": fdp.PickValueInList(["application/x-www-form-urlencoded", "text/plain", ""]),
    }
    cookies = auth._cookies(headers)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items())
    auth._posted_csrf(headers, fdp.ConsumeBytes(1024))
    target = auth._local(fdp.ConsumeUnicodeNoSurrogates(256))
    assert target.startswith("/") and not target.startswith("//") and "\\" not in target


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
