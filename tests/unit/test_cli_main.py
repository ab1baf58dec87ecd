"""The command line's entry point run in this process, as the suite's waits run it: its parser is built once.

Real: gitopsd.cli.main.main and its argparse parser. Faked: nothing (a missing config file: the commands fail at once).
"""

from __future__ import annotations

from gitopsd.cli import main as cli
from tests.support import in_process


def test_commands_run_in_one_process_build_each_parser_once_and_none_keeps_the_options_of_the_one_before(monkeypatch):
    built = []
    real = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda command=None: built.append(command) or real(command))
    monkeypatch.setattr(cli, "_PARSERS", {})  # as a process that has run no command yet
    for argv in (["--debug", "history", "--json"], ["history"], ["logs", "1"]):
        proc = in_process([*argv, "--config", "/nonexistent/gitopsd.yml"], check=False)
        assert proc.returncode == 1 and "/nonexistent/gitopsd.yml" in proc.stderr, proc
        assert ("Traceback" in proc.stderr) == ("--debug" in argv), proc.stderr  # --debug is that command's alone
    assert in_process(["histroy"], check=False).returncode == 2  # a typo: the whole parser says what there is
    assert in_process(["--help"], check=False).returncode == 0
    assert built == ["history", "logs", None], "history's parser once, logs' once, the whole one once"
