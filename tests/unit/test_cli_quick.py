"""Which command lines cli/quick.py answers from the daemon: only the plain forms of `status --json`; argparse has the rest.

Real: the function that reads the command line. Faked: nothing (no daemon, no config: this only sorts argv).
"""

from __future__ import annotations

import pytest

from gitopsd.cli.quick import _plain_status_json


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["status", "--json"], {}),
        (["--config", "c.yml", "status", "--json", "--repo=shop"], {"config": "c.yml", "repo": "shop"}),
        (["--debug", "status", "--config=c.yml", "--json"], {"config": "c.yml"}),
        (["status", "--repo", "shop", "--json", "--config", "a.yml", "--config", "b.yml"], {"config": "b.yml", "repo": "shop"}),
    ],
)
def test_the_plain_forms_of_status_json_are_asked_of_the_daemon_with_their_options(argv, options):
    assert _plain_status_json(argv) == options


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],  # the table, not JSON
        ["status", "--json", "--watch"],
        ["status", "--jso"],  # an abbreviation argparse takes
        ["status", "--json", "--help"],
        ["history", "--json"],
        ["--json", "status"],
        ["--repo", "shop", "status", "--json"],  # not a global option: argparse says so
        ["status", "--json", "--repo"],
        ["status", "--json", "--repo", "--config"],
        ["status", "--json", "--repo="],
        ["status", "--json", "status"],
    ],
)
def test_anything_else_is_left_to_the_full_command_line(argv):
    assert _plain_status_json(argv) is None
