"""The command line builds only the group of the command it is given (cli/main.py GROUPS): the table must say what
the groups register, and a command line must parse as it does with every group built.

Real: the command line's parser and its groups. Faked: nothing.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from gitopsd.cli import main as cli


def _registered(group: str) -> list[str]:
    names: list[str] = []

    def add(name: str, *_args: object, **_kwargs: object) -> argparse.ArgumentParser:
        names.append(name)
        return argparse.ArgumentParser(add_help=False)

    module = importlib.import_module(f"gitopsd.cli.{group}")
    module.add_commands(add, argparse.ArgumentParser(add_help=False))
    return names


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_the_table_of_groups_names_every_command_each_group_registers_in_the_order_help_lists_them():
    assert {group: tuple(_registered(group)) for group in cli.GROUPS} == cli.GROUPS
    every = [command for commands in cli.GROUPS.values() for command in commands] + list(cli.ENTRY_POINTS)
    assert _commands(cli.build_parser()) == every


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "--limit", "5"],
        ["--config", "/etc/x.yml", "history", "--repo", "shop"],
        ["--debug", "--config=/etc/x.yml", "rc", "list"],
        ["token", "create", "ci", "--scope", "ci"],
        ["hook", "pre-receive"],
        ["db", "backup", "--to", "/tmp/x.db"],
        ["status", "--json", "--debug"],
    ],
)
def test_a_command_line_parses_the_same_with_only_its_group_built_as_with_every_group(argv):
    alone = cli.build_parser(cli.command_word(argv))
    assert len(_commands(alone)) < len(_commands(cli.build_parser()))
    assert vars(alone.parse_args(argv)) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--config", "history", "status"], "status"),  # a config file named history
        (["--help"], None),
        (["--conf", "x.yml", "history"], None),  # an abbreviation: the whole parser takes it
        (["--config"], None),
        (["histroy"], "histroy"),
        ([], None),
    ],
)
def test_the_command_word_is_found_as_argparse_finds_it_or_not_at_all(argv, word):
    assert cli.command_word(argv) == word


def test_a_misspelled_command_is_told_with_every_command_to_choose_from(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser(cli.command_word(["histroy"])).parse_args(["histroy"])
    said = capsys.readouterr().err
    assert "invalid choice: 'histroy'" in said and "'history'" in said and "'token'" in said
