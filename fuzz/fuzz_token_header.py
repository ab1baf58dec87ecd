"""The `Authorization` header the HTTP API and the dashboard read (tokens.TokenCheck.authenticate)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd import tokens

FOLDER = Path(tempfile.mkdtemp(prefix="gt-fuzz-token-"))
FILE = FOLDER / "tokens.yml"
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)
SECRET = tokens.create(FILE, "ci", ["statuses:write"], created_by="fuzz")
CHECK = tokens.TokenCheck(lambda: FILE)


def test_one_input(data: bytes) -> None:
    header = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(512)
    found = CHECK.authenticate(header)
    assert found is None or SECRET in header


if __name__ == "__main__":
    from _harness import run
    run(test_one_input)
