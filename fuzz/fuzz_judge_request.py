"""The judge socket's request (daemon/judge.Request.parse): any member of the daemon's group may connect and send one."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.daemon.judge import MAX_OPTIONS, Request, quarantine_environ


def test_one_input(data: bytes) -> None:
    got = Request.parse(data)
    if got is not None:
        assert len(got.options) <= MAX_OPTIONS and all(name.isidentifier() for name in got.identity)
        assert set(got.fields) <= {"config", "database", "repository", "quarantine", "objects", "alternates", "names"}
        assert all("\0" not in value for value in (*got.fields.values(), *got.options, *got.identity.values()))
        # Whatever it names, the quarantine is taken only as a folder of the repository's own objects.
        env = quarantine_environ(got, "/nonexistent/gitopsd-fuzz/shop.git")
        assert env in (None, {}), env


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
