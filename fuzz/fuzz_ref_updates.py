"""The pre-receive hook's input: `<old> <new> <ref>` lines, and the ref names it judges (gate/receive.py)."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.gate import receive

BRANCHES = {"qa", "staging", "production"}


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4096)
    updates = receive.read_updates(text)
    for update in updates:
        assert update.old and update.new and update.ref and not any(c.isspace() for c in update.ref)
        receive.shadowed(update.ref, BRANCHES)
        receive.is_reserved(update.ref)
    receive.unpoliced(updates, BRANCHES)


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
