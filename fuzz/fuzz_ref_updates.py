"""The pre-receive hook's input: `<old> <new> <ref>` lines, and the ref names it judges (gate/push.py)."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.gate import push

BRANCHES = {"qa", "staging", "production"}


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4096)
    updates = push.read_updates(text)
    for update in updates:
        assert update.old and update.new and update.ref and not any(c.isspace() for c in update.ref)
        push.shadowed(update.ref, BRANCHES)
        push.is_reserved(update.ref)
    push.unpoliced(updates, BRANCHES)


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
