"""Config: load -> normalize -> validate, every problem at once with file, line and key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gitopsd.yml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return [str(p) for p in info.value.problems]


def test_a_minimal_config_gets_the_default_environments_in_promotion_order(tmp_path, repo):
    config = load(write(tmp_path, f"repositories:\n  - name: shop\n    path: {repo}\n"))
    [shop] = config.repositories
    assert [(e.name, e.branch, e.promote_from) for e in shop.environments] == [
        ("qa", "qa", "main"), ("staging", "staging", "qa"), ("production", "production", "staging")]
    assert shop.environments[0].inventory == "environments/qa/hosts.yml"
    assert shop.environments[0].playbook == "playbooks/deploy.yml"
    assert config.state_dir == Path("/var/lib/gitopsd") and config.runtime_dir == Path("/run/gitopsd")
    assert config.sweep_interval == 60


def test_relative_paths_in_the_config_are_relative_to_the_config_file(tmp_path, repo):
    config = load(write(tmp_path, "state_dir: state\nrepositories:\n  - name: shop\n    path: shop.git\n"))
    assert config.state_dir == tmp_path / "state"
    assert config.repositories[0].path == repo


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path, repo):
    path = write(tmp_path, f"""\
sweep_interval: soon
colour: blue
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        inventory: ../../etc/hosts
      - name: "staging; rm -rf /"
        playbook: /etc/passwd
      - name: prod
        branch: qa
        timeout: -5
  - name: Bad Name
    path: {tmp_path}/missing.git
""")
    found = problems(path)
    text = "\n".join(found)
    assert f"{path}:1: sweep_interval: must be a number, not 'soon'" in text
    assert f"{path}:2: colour: unknown key" in text
    assert f"{path}:8: repositories[0].environments[0].inventory: path escapes the repository tree" in text
    assert f"{path}:9: repositories[0].environments[1].name: must be a plain name" in text
    assert f"{path}:10: repositories[0].environments[1].playbook: path escapes the repository tree" in text
    assert f"{path}:12: repositories[0].environments[2].branch: branch 'qa' is already used by environment 'qa'" in text
    assert f"{path}:13: repositories[0].environments[2].timeout: must be at least 1" in text
    assert f"{path}:14: repositories[1].name: must be a plain name" in text
    assert f"{path}:15: repositories[1].path: no Git repository at" in text
    assert len(found) == 9


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "repositories:\n  - name: shop\n    path: [unclosed\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_yaml_tags_that_would_build_python_objects_are_refused(tmp_path):
    path = write(tmp_path, "repositories: !!python/object/apply:os.system ['touch /tmp/gitopsd-pwned']\n")
    [problem] = problems(path)
    assert "invalid YAML" in problem
    assert not Path("/tmp/gitopsd-pwned").exists()


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    [problem] = problems(tmp_path / "nope.yml")
    assert "cannot read config" in problem


def test_check_config_command_exits_non_zero_and_lists_problems(tmp_path):
    path = write(tmp_path, "repositories:\n  - name: shop\n    path: /nonexistent\n    surprise: 1\n")
    proc = subprocess.run([sys.executable, "-m", "gitopsd", "check-config", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "2 problems" in proc.stderr and "surprise: unknown key" in proc.stderr and "path: no Git repository" in proc.stderr
