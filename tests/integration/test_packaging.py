"""What we ship is what we test: the sdist and the wheel `python -m build` makes, checked file by file.

Real: `python -m build` (isolated, as a release is built), `twine check`, the wheel's zip listing and
metadata, and the wheel installed with `pip --no-deps` into a fresh virtualenv whose `gitopsd --version`
runs. An editable checkout hides a forgotten package; only the built artifact shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import gitopsd
from tests.dist import build_dist
from tests.support import ROOT, run

PACKAGE = ROOT / "gitopsd"


def shipped_files() -> set[str]:
    """Every file under gitopsd/ that an installed gitopsd needs: all of it, but caches."""
    files = set()
    for folder, dirs, names in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if not name.endswith((".pyc", ".pyo")):
                files.add(str((Path(folder) / name).relative_to(ROOT)))
    return files


@pytest.fixture(scope="module")
def dist() -> tuple[Path, Path]:
    return build_dist()


def test_the_wheel_holds_every_module_and_data_file_of_the_package_and_nothing_else(dist):
    _sdist, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}
    expected = shipped_files()
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not names - expected, f"in the wheel but not in gitopsd/: {sorted(names - expected)}"
    # Subpackages a hand-written list forgot once, the data the installers read, the sandbox launcher.
    for needed in (
        "gitopsd/ci/__init__.py",
        "gitopsd/data/hooks/pre-receive",
        "gitopsd/data/systemd/gitopsd.service",
        "gitopsd/data/sample/playbooks/deploy.yml",
        "gitopsd/web/templates/base.html",
    ):
        assert needed in names


def test_the_sandbox_launcher_and_the_hook_shim_stay_executable_in_the_wheel(dist):
    _sdist, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        for name in ("gitopsd/libexec/sandboxed-ansible-playbook", "gitopsd/data/hooks/pre-receive"):
            mode = archive.getinfo(name).external_attr >> 16
            assert mode & 0o111, f"{name} is not executable in the wheel ({oct(mode)})"


def test_the_sdist_carries_the_package_and_its_metadata_but_no_tests_bench_or_caches(dist):
    sdist, _wheel = dist
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "gitopsd/__init__.py", "gitopsd/ci/runs.py"} <= names
    assert not [
        n for n in names if n.startswith(("tests/", "bench/", ".venv/", ".demo/")) or "__pycache__" in n or n.endswith(".pyc")
    ], sorted(names)


def test_twine_finds_nothing_to_fix_in_the_sdist_and_the_wheel(dist):
    proc = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_installed_wheel_says_the_one_version_the_package_and_its_metadata_carry(dist, tmp_path):
    _sdist, wheel = dist
    assert wheel.name.startswith(f"gitopsd-{gitopsd.__version__}-")
    venv = tmp_path / "venv"
    # Without its dependencies: --version needs none, and this test must not reach an index.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        timeout=300,
    )
    for argv in ([str(venv / "bin" / "gitopsd"), "--version"], [str(venv / "bin" / "python"), "-m", "gitopsd", "--version"]):
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, check=False)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"gitopsd {gitopsd.__version__}"), proc
