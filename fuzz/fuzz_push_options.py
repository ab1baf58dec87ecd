"""Push options (`git push -o name=value`), pusher-controlled, as the hook reads them (gate/push.push_option)."""

from __future__ import annotations

import os

import atheris

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.gate import push


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    options = [fdp.ConsumeUnicodeNoSurrogates(300).replace("\0", "") for _ in range(fdp.ConsumeIntInRange(0, 8))]
    os.environ["GIT_PUSH_OPTION_COUNT"] = str(len(options))
    for i, option in enumerate(options):
        os.environ[f"GIT_PUSH_OPTION_{i}"] = option
    for name in ("override", "reason"):
        value = push.push_option(name)
        assert value is None or (0 < len(value) <= 200 and value == value.strip())


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
