"""The nudge datagram the daemon reads from its runtime socket (gate/nudge.Nudge.decode): any local user may send one."""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.gate import nudge


def test_one_input(data: bytes) -> None:
    got = nudge.Nudge.decode(data, 1000)
    if got is not None:
        assert got.repo and len(got.trigger) <= 20 and len(got.commits) <= len(data)
        assert all(len(c) == 40 for c in got.commits) and len(got.refusals) <= 20
        again = nudge.Nudge.decode(got.encode(), 1000)  # what the daemon re-sends (a standby's relay) reads the same
        assert again is not None and again.repo == got.repo
        got.who()


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
