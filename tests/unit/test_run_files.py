"""A run's own files are read as what they are, never through a link the run made (gitopsd/core/runfiles.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gitopsd.core.runfiles import NOT_OWN, read_own, write_own


def deployment(tmp_path: Path) -> tuple[Path, Path]:
    """A deployment folder with run-1's output, and a secret outside it that the service user can read."""
    root = tmp_path / "deployments" / "7"
    (root / "run-1" / "artifacts" / "run").mkdir(parents=True)
    (root / "run-1" / "artifacts" / "run" / "stdout").write_text("PLAY [all]\n")
    secret = tmp_path / "secret"
    (secret / "run").mkdir(parents=True)
    (secret / "run" / "stdout").write_text("the signing key\n")
    return root, secret


def test_a_runs_own_output_is_read(tmp_path):
    root, _secret = deployment(tmp_path)
    assert read_own(root, root / "run-1" / "artifacts" / "run" / "stdout") == "PLAY [all]\n"


def test_an_output_folder_the_run_replaced_with_a_link_is_not_followed(tmp_path):
    root, secret = deployment(tmp_path)
    artifacts = root / "run-1" / "artifacts"
    (artifacts / "run" / "stdout").unlink()
    (artifacts / "run").rmdir()
    artifacts.rmdir()
    artifacts.symlink_to(secret)
    with pytest.raises(OSError, match="not the run's own file") as refused:
        read_own(root, artifacts / "run" / "stdout")
    assert refused.value.errno == errno.ELOOP and refused.value.strerror == NOT_OWN


def test_a_fifo_in_place_of_the_output_is_refused_without_waiting_for_a_writer(tmp_path):
    root, _secret = deployment(tmp_path)
    stdout = root / "run-1" / "artifacts" / "run" / "stdout"
    stdout.unlink()
    os.mkfifo(stdout)
    with pytest.raises(OSError, match="not the run's own file"):
        read_own(root, stdout)


def test_a_state_folder_that_is_itself_a_link_still_reads_its_runs_output(tmp_path):
    root, _secret = deployment(tmp_path)
    (tmp_path / "state").symlink_to(tmp_path / "deployments")
    linked = tmp_path / "state" / "7"
    assert read_own(linked, linked / "run-1" / "artifacts" / "run" / "stdout") == "PLAY [all]\n"


def test_a_file_the_daemon_writes_in_a_runs_folder_replaces_a_link_the_run_left_there_never_writes_through_it(tmp_path):
    victim = tmp_path / "tokens.yml"
    victim.write_text("secret\n")
    planted = tmp_path / "run" / "ssh_config"
    planted.parent.mkdir()
    planted.symlink_to(victim)
    write_own(planted, b"Host *\n", 0o644)
    assert victim.read_text() == "secret\n"
    assert not planted.is_symlink() and planted.read_bytes() == b"Host *\n"
    assert planted.stat().st_mode & 0o777 == 0o644
