"""A commit status POSTed to the HTTP API: the body's JSON (api/inputs.decode), then the report (api/statuses.parse_report)."""

from __future__ import annotations

import json

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.api import inputs, statuses


def text(fdp: atheris.FuzzedDataProvider, known: list[str]) -> object:
    """A field's value: a known good one, fuzzed text after one, or another JSON type (JSON's parser is C: no feedback)."""
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        return fdp.PickValueInList(known)
    if kind == 1:
        return fdp.PickValueInList(known) + fdp.ConsumeUnicodeNoSurrogates(64)
    return [fdp.ConsumeUnicodeNoSurrogates(64), None, fdp.ConsumeInt(4), [], {"a": 1}][kind - 2]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        raw = fdp.ConsumeBytes(4096)
    else:
        shown = fdp.ConsumeIntInRange(0, 15)  # which fields the body has, first: the rest of the input is their values
        known = {
            "state": list(statuses.STATES),
            "context": ["ci/test", "gitopsd/build", ""],
            "target_url": ["https://ci.example/1", "http://", "ftp://x"],
            "description": ["ok", "x" * 1001],
        }
        raw = json.dumps({k: text(fdp, v) for i, (k, v) in enumerate(known.items()) if shown & (1 << i)}).encode()
    try:
        body = inputs.decode(raw, "send a JSON object with a state")
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    try:
        report = statuses.parse_report(body)
    except statuses.InvalidStatus as exc:
        assert exc.field and "\n" not in str(exc)
        return
    except statuses.ReservedContext:
        return
    assert report.state in statuses.STATES and report.context.isprintable() and len(report.context) <= 255


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
