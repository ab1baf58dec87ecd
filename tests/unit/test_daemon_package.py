"""The daemon package stays cut by concern: each module says in its docstring what it holds.

Real: the package's source files, read and parsed with ast. Nothing faked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parents[2] / "gitopsd" / "daemon"
MODULES = sorted(DAEMON.glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_each_module_of_the_daemon_opens_with_a_docstring(module: Path) -> None:
    assert ast.get_docstring(ast.parse(module.read_text(encoding="utf-8"))), f"gitopsd/daemon/{module.name} has no docstring"


@pytest.mark.parametrize("module", [m for m in MODULES if m.name != "main.py"], ids=lambda p: p.name)
def test_no_concern_of_the_daemon_imports_main_which_builds_the_daemon_from_them(module: Path) -> None:
    imported = {
        node.module
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }
    assert "main" not in imported, f"gitopsd/daemon/{module.name} imports main: an import loop"
