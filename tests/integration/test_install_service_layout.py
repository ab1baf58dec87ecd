"""`gitopsd install-service` for a second instance and for the git user it names: the unit's ConfigurationDirectory
follows the config's folder, and the printed hint names the account pushes arrive as, never a literal `git`.

Real: the CLI as a process, a temporary root with a copy of this system's user database (test_install_service's
helpers), the unit text install-service writes, checked with systemd-analyze where it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gitopsd.installers import service
from tests.integration.test_install_service import EXE, system_root, write_config
from tests.support import GITOPSD, run

GIT_UID = 64_991  # the git user of the temporary root's user database only (no user of this machine)


def _unit(root: Path, config: Path) -> list[str]:
    return next(s for s in service.plan("team2", config, root, executable=EXE).steps if s.content).content.splitlines()


@pytest.mark.parametrize(
    ("config", "directory"),
    [
        ("/etc/gitopsd/gitopsd.yml", "gitopsd"),
        ("/etc/other/gitopsd.yml", "other"),
        ("/etc/teams/two/gitopsd.yml", "teams/two"),
        ("/srv/conf/gitopsd.yml", ""),
        ("/etc/gitopsd.yml", ""),
    ],
)
def test_the_units_configuration_directory_is_the_configs_folder_under_etc_and_none_elsewhere(tmp_path, config, directory):
    root = system_root(tmp_path)
    path = root / config.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("repositories:\n  - {name: shop, path: /srv/git/shop.git}\n")
    lines = _unit(root, Path(config))
    assert [line for line in lines if line.startswith("ConfigurationDirectory=")] == [f"ConfigurationDirectory={directory}"]
    if shutil.which("systemd-analyze"):
        unit = tmp_path / "gitopsd-team2.service"
        unit.write_text("\n".join(lines) + "\n")
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr


def test_the_hint_names_the_account_pushes_arrive_as_in_words_when_no_repository_says_who(tmp_path):
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    out = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "gitopsd-test"]).stdout
    hint = next(line.strip() for line in out.splitlines() if "usermod" in line)
    assert hint == (
        "# let the account pushes arrive as (e.g. the git-shell user) reach the nudge socket: usermod -aG gitopsd-test ACCOUNT"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a repository to another user: needs root")
def test_the_hint_names_the_git_user_that_owns_the_configured_repositories(tmp_path):
    root = system_root(tmp_path)
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write(f"gt-isl-git:x:{GIT_UID}:{GIT_UID}::/srv/git:/usr/bin/git-shell\n")
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    repo = root / "srv/git/shop.git"
    repo.mkdir(parents=True)
    os.chown(repo, GIT_UID, GIT_UID)  # as `gitopsd init --git-user gt-isl-git` shares it
    out = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "gitopsd-test"]).stdout
    assert "# let gt-isl-git, who pushes, reach the nudge socket: usermod -aG gitopsd-test gt-isl-git" in out, out
    assert "ACCOUNT" not in out and " git\n" not in out


def test_a_tokens_file_others_may_read_is_left_to_its_owner_and_the_services_group(tmp_path):
    root = system_root(tmp_path)
    config = write_config(root, {"api": {"listen": "127.0.0.1:8080", "tokens_file": "tokens.yml"}, "repositories": []})
    tokens = config.parent / "tokens.yml"
    tokens.write_text("tokens: []\n")
    tokens.chmod(0o644)  # as an editor or `cp` left it: the tokens' hashes readable by every local user
    steps = service.plan("gitopsd-test", Path("/etc/gitopsd/gitopsd.yml"), root, executable=EXE).steps
    (step,) = [s for s in steps if str(tokens) in s.what]
    assert (step.group, step.mode) == ("gitopsd-test", 0o640), step.what  # the service's group reads it; others not
