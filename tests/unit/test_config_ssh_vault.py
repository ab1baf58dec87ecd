"""The `ssh:` section and `vault_password_file:` are validated like the rest: every problem at once, with file:line:key."""

from __future__ import annotations

import subprocess

import pytest

from gitopsd.config import ConfigError, load


def test_bad_known_hosts_and_vault_password_files_are_reported_together_with_their_lines(tmp_path):
    (tmp_path / "folder").mkdir()
    config = tmp_path / "gitopsd.yml"
    config.write_text(
        f"state_dir: {tmp_path}/state\nruntime_dir: {tmp_path}/run\nsandbox: {{enabled: false}}\n"
        f"ssh:\n  known_hosts: {tmp_path}/folder\n  strict: no\n"
        "repositories:\n  - name: shop\n    path: nosuch.git\n    environments:\n"
        "      - {name: qa, vault_password_file: vault/qa.pass}\n"
        f"      - {{name: production, vault_password_file: {tmp_path}/missing.pass}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(config)
    text = str(caught.value)
    assert f"{config}:5: ssh.known_hosts: {tmp_path}/folder is a folder" in text
    assert f"{config}:6: ssh.strict: unknown key" in text
    assert f"{config}:11: repositories[0].environments[0].vault_password_file: must be an absolute path" in text
    assert f"{config}:12: repositories[0].environments[1].vault_password_file: {tmp_path}/missing.pass is not a file" in text


def test_known_hosts_defaults_to_the_state_folder_and_is_what_runs_are_shown(tmp_path):
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp_path / "shop.git")], check=True)
    config = tmp_path / "gitopsd.yml"
    config.write_text(
        f"state_dir: {tmp_path}/state\nruntime_dir: {tmp_path}/run\nsandbox: {{enabled: false}}\n"
        "repositories: [{name: shop, path: shop.git}]\n"
    )
    loaded = load(config)
    assert loaded.known_hosts == tmp_path / "state" / ".ssh" / "known_hosts"
    assert loaded.sandbox.known_hosts == loaded.known_hosts
