"""What every fuzz target shares: atheris's setup, and the one rule they check.

The rule: a parser of outside input returns a value or raises the error it documents (the caller
turns that into one line); any other exception is a finding. Run a target alone with
`.venv/bin/python fuzz/fuzz_NAME.py -max_total_time=60 fuzz/corpus/NAME`, all of them with `make fuzz`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Fuzz `test_one_input` with libFuzzer's options from the command line (-max_total_time=N, -runs=N, a corpus)."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def scratch(name: str) -> Path:
    """A folder of this run for a target's files, under $GITOPSD_FUZZ_TMP when set (libFuzzer ends the process
    without Python's exit handlers, so the caller removes it: the pytest's temp folder, make fuzz's .fuzz/tmp)."""
    base = os.environ.get("GITOPSD_FUZZ_TMP")
    if base:
        os.makedirs(base, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"gt-fuzz-{name}-", dir=base or None)).resolve()
