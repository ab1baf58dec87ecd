"""Test helpers are written once, in tests/support.py, and imported from there (issue 24: helpers redefined in many files).

Real: the sources of tests/ and bench/, read with ast. Nothing faked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_free_port_is_defined_in_tests_support_alone_and_everyone_imports_it_from_there():
    defined, borrowed = [], []
    for path in sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") == "free_port":
                defined.append(name)
            elif isinstance(node, ast.ImportFrom) and node.module != "tests.support":
                borrowed += [name for alias in node.names if alias.name == "free_port"]
            elif isinstance(node, ast.Attribute) and node.attr == "free_port":
                borrowed.append(name)
    assert defined == ["tests/support.py"]
    assert borrowed == []
