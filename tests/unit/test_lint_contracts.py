"""Each import-linter contract in pyproject.toml can fail: a forbidden import added to a copy of the package breaks it.

Real: lint-imports on temporary copies of gitopsd/ and pyproject.toml, one run for every break. Nothing faked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
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
    # Not even inside a function: what the gate needs from above is handed in (hook_entry, cli, daemon).
    ("gate/configfile.py", "def upstairs() -> None:\n    from .. import config", LAYERS),
    ("gate/signatures.py", "def upstairs() -> None:\n    from ..adapters import signing", LAYERS),
    ("adapters/checks.py", "from ..services import revert", LAYERS),
    ("adapters/checks.py", "from ..gate import policy", "the adapters never import the hook's judges"),
    ("services/status.py", "from ..cli import main", LAYERS),
    ("cli/common.py", "from .. import hook_entry", LAYERS),  # hook_entry is an entry point: nothing imports it
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
    ("adapters/store/holds.py", "from . import deployments", "the store's query modules never import each other"),
    ("services/chatroom.py", "import nio", "Matrix has one speaker"),
    ("services/releases.py", "from ..adapters import matrix", "Matrix has one speaker"),
]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def copy_of_the_package(root: Path) -> Path:
    shutil.copytree(ROOT / "gitopsd", root / "gitopsd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


def imported_module(module: str, line: str) -> str:
    """The module an added import line names, as lint-imports prints it (relative imports resolved)."""
    words = line.strip().split()
    if words[0] == "import":
        return words[1]
    dots = len(words[1]) - len(words[1].lstrip("."))
    package = ["gitopsd", *module.removesuffix(".py").split("/")][:-dots]
    return ".".join([*package, *filter(None, [words[1].lstrip(".")]), words[3]])


def broken_sections(stdout: str) -> dict[str, str]:
    """Each broken contract's part of the report, by its name in pyproject.toml (the report wraps names at 80)."""
    broken = stdout.split("Broken contracts")[-1]
    names = [c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]
    starts = sorted((broken.find("\n" + name[:40]), name) for name in names if "\n" + name[:40] in broken)
    ends = [start for start, _ in starts[1:]] + [len(broken)]
    return {name: broken[start:end] for (start, name), end in zip(starts, ends, strict=True)}


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return copy_of_the_package(tmp_path_factory.mktemp("lint"))


@pytest.fixture(scope="module")
def broken(copy, tmp_path_factory):
    """One lint-imports run over a copy with every break added: its report by contract, and where each line landed.

    Each break is then found by the exact import line the report names (importer -> imported, line number) in its
    own contract's section, so the breaks cannot stand in for each other (one run instead of one per break).
    """
    root = copy_of_the_package(tmp_path_factory.mktemp("broken"))
    for module, line, _ in BREAKS:
        path = root / "gitopsd" / module
        path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    landed = {}
    for module, line, _ in BREAKS:
        marked = line.splitlines()[-1] + "  # added by the test"
        landed[module, line] = (root / "gitopsd" / module).read_text().splitlines().index(marked) + 1
    proc = lint(root)
    assert proc.returncode != 0, proc.stdout
    return broken_sections(proc.stdout), landed, proc.stdout


def test_the_contracts_hold_for_the_package_as_it_is(copy):
    proc = lint(copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module,line,contract", BREAKS, ids=[f"{m}: {line}" for m, line, _ in BREAKS])
def test_each_contract_fails_when_its_rule_is_broken(broken, module, line, contract):
    sections, landed, stdout = broken
    names = [name for name in sections if name.startswith(contract)]
    assert names, f"{contract!r} is not among the broken contracts:\n{stdout}"
    importer = ".".join(["gitopsd", *module.removesuffix(".py").split("/")]).removesuffix(".__init__")  # a package
    expected = f"{importer} -> {imported_module(module, line.splitlines()[-1])} (l.{landed[module, line]})"
    assert expected in sections[names[0]], f"{expected!r} not reported under {names[0]!r}:\n{stdout}"
