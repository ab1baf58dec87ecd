"""Each module keeps one concern: none of the package grows past 600 lines (issue 24, "Done when").

Real: the source files. Nothing faked.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gitopsd"
LIMIT = 600


def test_no_module_of_the_package_is_over_600_lines():
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}, "cut these along a concern"
