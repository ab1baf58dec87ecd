"""The sdist and the wheel, built as a release is: `python -m build` in an isolated environment."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support import ROOT, run


def build_dist(out: Path) -> tuple[Path, Path]:
    """Build the checkout's sdist and wheel into OUT; return (sdist, wheel)."""
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=600)
    (sdist,) = out.glob("gitopsd-*.tar.gz")
    (wheel,) = out.glob("gitopsd-*.whl")
    return sdist, wheel
