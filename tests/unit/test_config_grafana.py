"""Config `grafana:` (deployment annotations): parsed into core.settings.Grafana, every problem said with its key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load
from gitopsd.core.settings import Grafana


def config(tmp_path: Path, grafana: str) -> Path:
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    path = tmp_path / "gitopsd.yml"
    path.write_text(f"repositories:\n  - name: shop\n    path: {repo}\n{grafana}")
    return path


def test_grafana_is_off_unless_configured(tmp_path):
    assert load(config(tmp_path, "")).grafana is None


def test_grafana_takes_a_url_a_token_file_relative_to_the_config_and_an_optional_dashboard(tmp_path):
    loaded = load(
        config(
            tmp_path,
            "grafana:\n  url: http://grafana.local:3000/\n  token_file: grafana.token\n  dashboard_uid: gitopsd-overview\n",
        )
    )
    assert loaded.grafana == Grafana(
        url="http://grafana.local:3000",
        token_file=(tmp_path / "grafana.token").resolve(),
        dashboard_uid="gitopsd-overview",
        timeout=3.0,
    )


def test_each_problem_of_grafana_is_said_with_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(config(tmp_path, "grafana:\n  url: grafana:3000\n  dashboard_uid: 'a b'\n  timeout: 600\n  color: red\n"))
    said = "\n".join(str(p) for p in info.value.problems)
    for key in ("grafana.url", "grafana.token_file", "grafana.dashboard_uid", "grafana.timeout", "grafana.color"):
        assert key in said
