"""The `Authorization` header the HTTP API and the dashboard read (tokens.TokenCheck.authenticate)."""

from __future__ import annotations

import atheris
from _harness import scratch

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.services import tokens

FOLDER = scratch("token")
FILE = FOLDER / "tokens.yml"
SECRET = tokens.create(FILE, "ci", ["statuses:write"], created_by="fuzz")
CHECK = tokens.TokenCheck(lambda: FILE)


def test_one_input(data: bytes) -> None:
    header = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(512)
    found = CHECK.authenticate(header)
    assert found is None or SECRET in header


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
