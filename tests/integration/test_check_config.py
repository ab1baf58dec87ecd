"""`gitopsd check-config` as a person and as the service run it: every problem in one block, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, Sandbox

OTHER_UID = 54321


def check_config(
    config: Path, *, user: int | None = None, python: str = sys.executable, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid", str(user), "--regid", str(user), "--clear-groups"] if user is not None else []
    return subprocess.run(
        [*prefix, python, "-m", "gitopsd", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT if user is None else "/",
        check=False,
    )


def test_problems_that_used_to_crash_the_daemon_come_out_as_one_block(tmp_path):
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    config = tmp_path / "gitopsd.yml"
    config.write_text(f"""\
sweep_interval: .nan
runtime_dir: loop1/run
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        promote_from: production
        timeout: 60
        timeout: 90
      - name: production
        promote_from: qa
  - name: shop-again
    path: "{tmp_path}/x/../shop.git"
""")
    proc = check_config(config)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{config}: 5 problems:"
    assert all(line.startswith(f"  {config}:") for line in lines[1:]), proc.stderr
    assert len(lines) == 6
    for expected in (
        ":10: repositories[0].environments[0].timeout: duplicate key (first at line 9)",
        ":8: repositories[0].environments[0].promote_from: promotions go round in a loop (qa <- production <- qa)",
        f":14: repositories[1].path: {repo} is the repository of shop (repositories[0]) again",
        ":2: runtime_dir: cannot resolve 'loop1/run': Symlink loop from",
        ":1: sweep_interval: must be a finite number, not nan",
    ):
        assert expected in proc.stderr


def _python_for_others() -> tuple[str, dict[str, str]] | None:
    """A Python another user can run with gitopsd and PyYAML importable (this one may live under /root)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": f"{ROOT}:{Path(yaml.__file__).resolve().parent.parent}"}
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            [
                "setpriv",
                "--reuid",
                str(OTHER_UID),
                "--regid",
                str(OTHER_UID),
                "--clear-groups",
                candidate,
                "-c",
                "import gitopsd.config",
            ],
            capture_output=True,
            env=env,
            cwd="/",
            check=False,
        )
        if probe.returncode == 0:
            return candidate, env
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="checking folders as another user needs root and setpriv"
)
def test_check_config_run_as_the_service_user_refuses_folders_it_cannot_write_while_hooks_still_load_it():
    found = _python_for_others()
    if found is None:
        pytest.skip("no Python that another user may run with gitopsd importable")
    python, env = found
    root = Path(tempfile.mkdtemp(prefix="gt-", dir="/tmp"))  # pytest's own temp folders are root-only
    try:
        root.chmod(0o755)
        repo = root / "shop.git"
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
        (root / "state").mkdir()
        config = root / "gitopsd.yml"
        config.write_text(f"state_dir: state\nruntime_dir: run/gitopsd\nrepositories:\n  - name: shop\n    path: {repo}\n")
        proc = check_config(config, user=OTHER_UID, python=python, env=env)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.splitlines() == [
            f"{config}: 2 problems:",
            f"  {config}:1: state_dir: {root / 'state'} is not writable by uid {OTHER_UID}",
            f"  {config}:2: runtime_dir: {root / 'run' / 'gitopsd'} does not exist and uid {OTHER_UID} cannot create it: "
            f"{root} is not writable",
        ]
        # The pre-receive hook loads the same file as the pusher, who only reads the state: no folder check.
        loaded = subprocess.run(
            [
                "setpriv",
                "--reuid",
                str(OTHER_UID),
                "--regid",
                str(OTHER_UID),
                "--clear-groups",
                python,
                "-c",
                f"from gitopsd.config import load; print(load({str(config)!r}).state_dir)",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            check=False,
        )
        assert loaded.returncode == 0 and loaded.stdout.strip() == str(root / "state"), loaded.stderr
        # Given the folders, as the unit's StateDirectory= and RuntimeDirectory= would, the same check passes.
        for folder in (root / "state", root / "run" / "gitopsd"):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, OTHER_UID, OTHER_UID)
        proc = check_config(config, user=OTHER_UID, python=python, env=env)
        assert proc.returncode == 0, proc.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_without_the_postgresql_extra_each_command_says_in_one_line_what_to_install(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    url = "postgresql://gitopsd@127.0.0.1:1/gitopsd"
    sandbox.write_config(database=url)
    line = sandbox.config.read_text().splitlines().index(f"database: {url}") + 1
    # psycopg as if never installed: None in sys.modules makes its import fail as a missing package does.
    blocked = [
        sys.executable,
        "-c",
        "import sys; sys.modules['psycopg'] = None; from gitopsd.cli.main import main; sys.exit(main())",
    ]
    install = "pip install 'gitopsd[postgresql]' into gitopsd's virtualenv"

    def gitopsd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*blocked, *args], capture_output=True, text=True, env=sandbox.environ(), timeout=60, check=False)

    checked = gitopsd("check-config", "--config", str(sandbox.config))
    assert checked.returncode == 1
    assert (
        f"  {sandbox.config}:{line}: database: the postgresql extra is not installed (psycopg missing): "
        f"{install}" in checked.stderr
    ), checked.stderr
    for args in (
        ["run", "--config", str(sandbox.config)],
        ["status", "--config", str(sandbox.config)],
        ["db", "upgrade", "--database", url],
    ):
        proc = gitopsd(*args)
        assert proc.returncode != 0 and install in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stdout + proc.stderr, proc.stderr
    upgrade = gitopsd("db", "upgrade", "--database", url)
    assert len(upgrade.stderr.splitlines()) == 1, upgrade.stderr


def test_a_typo_in_promote_from_is_reported_with_its_line_and_the_known_names(tmp_path):
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    config = tmp_path / "gitopsd.yml"
    config.write_text(
        f"repositories:\n  - name: shop\n    path: {repo}\n    environments:\n      - name: qa\n"
        "      - name: staging\n      - name: production\n        promote_from: stagin\n"
    )
    proc = check_config(config)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{config}: 1 problem:",
        f"  {config}:8: repositories[0].environments[2].promote_from: 'stagin' is no environment branch here, not main "
        f"and no branch of {repo}: did you mean 'staging'? promote from one of qa, staging, production, main, or push "
        "the branch 'stagin' first",
    ]
