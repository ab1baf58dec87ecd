"""The API tokens file as the daemon reads it again on every change (tokens.read_tokens): a bad one refuses everyone,
in one line, and never stops the daemon."""

from __future__ import annotations

import atheris
from _harness import scratch

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.services import tokens

FOLDER = scratch("tokens")
FILE = FOLDER / "tokens.yml"


def test_one_input(data: bytes) -> None:
    FILE.write_bytes(data)
    try:
        found = tokens.read_tokens(FILE)
    except tokens.TokenError as exc:
        assert "\n" not in str(exc).strip() or "invalid YAML" in str(exc)
        return
    for token in found:
        assert isinstance(token.name, str) and all(s in tokens.SCOPES for s in token.scopes)


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
