"""A commit status POSTed to the HTTP API: the body's JSON (api/app._decode), then the report (api/statuses.parse_report)."""
from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.api import app, statuses


def test_one_input(data: bytes) -> None:
    try:
        body = app._decode(data, "send a JSON object with a state")
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
