"""tests/support.py's `serving`, which the server fixtures (Prometheus, Alertmanager, Synapse) start their server with.

Real: a Python process serving HTTP on loopback (`python -m http.server`), and one that exits at once.
"""

from __future__ import annotations

import sys
import urllib.request

import pytest

from tests.support import free_port, serving


def test_a_server_is_ready_inside_the_block_and_stopped_when_the_block_ends(tmp_path):
    port = free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)]
    (tmp_path / "hello.txt").write_text("hello\n")
    with (
        serving("http.server", argv, f"http://127.0.0.1:{port}/hello.txt", tmp_path / "server.log") as proc,
        urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=30) as answer,
    ):
        assert answer.read() == b"hello\n"
    assert proc.poll() is not None


def test_a_server_that_exits_before_it_is_ready_fails_naming_it_with_its_exit_code_and_the_end_of_its_log(tmp_path):
    argv = [sys.executable, "-c", "print('no configuration file', flush=True); raise SystemExit(3)"]
    with (
        pytest.raises(AssertionError, match=r"(?s)Toy did not start \(3\):.*no configuration file"),
        serving("Toy", argv, f"http://127.0.0.1:{free_port()}/", tmp_path / "toy.log"),
    ):
        pass
