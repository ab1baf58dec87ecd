"""The sdist and the wheel, built as a release is: `python -m build` in an isolated environment."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from tests.support import ROOT, _built_once, run


@functools.cache
def build_dist() -> tuple[Path, Path]:
    """The checkout's sdist and wheel, (sdist, wheel): built once per test run and shared by its workers, or once per
    process without them (the build is 4 s of CPU; test_packaging.py, test_install.py and test_installed.py use it)."""
    out = _built_once(
        "dist", str(ROOT), lambda root: run([sys.executable, "-m", "build", "--outdir", str(root), str(ROOT)], timeout=600)
    )
    (sdist,) = out.glob("gitopsd-*.tar.gz")
    (wheel,) = out.glob("gitopsd-*.whl")
    return sdist, wheel
