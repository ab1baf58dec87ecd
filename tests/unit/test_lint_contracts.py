"""Each import-linter contract in pyproject.toml can fail: a forbidden import added to a copy of the package breaks it.

Real: lint-imports on a temporary copy of gitopsd/ and pyproject.toml. Nothing faked.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

LAYERS = "the layers: entry points > cli > daemon"
# (a module of the copy, a line that breaks one contract, the contract's name as lint-imports prints it)
BREAKS = [
    ("core/decide.py", "from ..adapters import store", LAYERS),
    ("core/reconcile.py", "import pygit2", "the core imports no third-party library"),
    ("gate/snapshot.py", "import yaml", "the hook path imports nothing heavy"),
    ("base/gitcli.py", "from .. import config", "the hook path imports nothing heavy"),
    ("gate/policy.py", "from ..adapters import notifications", LAYERS),
    ("core/settings.py", "import typing\nif typing.TYPE_CHECKING:\n    from ..gate import approvals", LAYERS),
    ("gate/approvals.py", "from ..adapters import ownership", LAYERS),
    ("adapters/checks.py", "from ..services import revert", LAYERS),
    ("adapters/checks.py", "from ..gate import policy", "the adapters never import the hook's judges"),
    ("services/status.py", "from ..cli import main", LAYERS),
    ("web/pages.py", "from ..cli import human", LAYERS),
    ("api/app.py", "from ..daemon import main", LAYERS),
    ("config/__init__.py", "from ..services import tokens", LAYERS),
    ("services/releases.py", "from ..ci import runs", LAYERS),
    ("installers/doctor.py", "from ..daemon import leadership", LAYERS),
    ("api/server.py", "from ..web import app", LAYERS),
    ("web/auth.py", "from ..api import statuses", LAYERS),
    ("services/hosts.py", "import pygit2", "pygit2 has one importer"),
    ("daemon/main.py", "import psutil", "ansible-runner and psutil have one importer"),
    ("adapters/checks.py", "import ansible", "ansible has one importer"),
    ("installers/service.py", "import yaml", "PyYAML has one importer"),
    ("config/edit.py", "import yaml", "PyYAML has one importer"),
    ("daemon/main.py", "import inotify_simple", "inotify_simple and APScheduler have one importer each"),
    ("services/chatroom.py", "import nio", "Matrix has one speaker"),
    ("services/releases.py", "from ..adapters import matrix", "Matrix has one speaker"),
]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=False)


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("lint")
    shutil.copytree(ROOT / "gitopsd", root / "gitopsd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


def test_the_contracts_hold_for_the_package_as_it_is(copy):
    proc = lint(copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module,line,contract", BREAKS, ids=[f"{m}: {line}" for m, line, _ in BREAKS])
def test_each_contract_fails_when_its_rule_is_broken(copy, module, line, contract):
    path = copy / "gitopsd" / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # added by the test\n")
    try:
        proc = lint(copy)
    finally:
        path.write_text(original)
    assert proc.returncode != 0
    broken = proc.stdout.split("Broken contracts")[-1]
    assert contract in broken, proc.stdout
