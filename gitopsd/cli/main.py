"""The `gitopsd` command line. Imports are lazy: the hook path must stay fast."""

from __future__ import annotations

import os
import sys

import gitopsd

from ..core.errors import GitopsdError, StoreError
from ..gate import snapshot

TYPE_CHECKING = False  # true for mypy only: `status --json` asked of the daemon needs neither typing nor argparse
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

DEFAULT_CONFIG = os.environ.get("GITOPSD_CONFIG", snapshot.DEFAULT_CONFIG)
# main's parsers, each built once per process (a command's group, or all of them: build_parser): building them costs
# 9 ms of CPU, and a process that runs commands itself (the test suite's waits) parses many command lines
_PARSERS: dict[str | None, argparse.ArgumentParser] = {}

DESCRIPTION = """\
GitOps for ordinary servers: environment branches (qa, staging, production) of a bare Git
repository say what must run where; the gitopsd daemon runs each environment's Ansible playbook
against its inventory whenever the branch head differs from what was last deployed. Reverting
a merge on an environment branch rolls that environment back.
"""

EPILOG = """\
typical use:
  gitopsd init /srv/git/shop.git --config /etc/gitopsd/gitopsd.yml --sample
  gitopsd run                          # the daemon (or run it as a systemd service)
  git push deploy main:qa              # from a clone: deploys qa
  gitopsd status                       # desired vs deployed, per environment
  gitopsd rollback production          # revert production to its previous good tree

The config file defaults to $GITOPSD_CONFIG, else /etc/gitopsd/gitopsd.yml.
"""


# -- commands --------------------------------------------------------------------------------------


# -- parser ----------------------------------------------------------------------------------------

# Each command group (cli/<group>.py) and the commands it registers, in the order --help lists them. A command line
# builds only its command's group (a third of a `history`'s time went to building the 56 others); --help, a typo and
# anything else build them all. tests/unit/test_cli_groups.py checks this table against what the groups register.
GROUPS: dict[str, tuple[str, ...]] = {
    "server": ("init", "install-hooks", "doctor", "run", "install-service", "check-config"),
    "reading": ("status", "history", "logs", "wait", "drift", "dora"),
    "operate": ("rollback", "promote", "retry", "suspend", "resume", "sync", "node"),
    "cancel": ("cancel",),
    "preview": ("preview", "where", "hosts"),
    "human": ("signoff", "rc", "approve", "reject", "withdraw"),
    "release": ("release",),
    "change": ("lock", "unlock", "locks", "override"),
    "provenance": ("verify",),
    "tokens": ("token",),
    "ci": ("ci",),
    "db": ("db",),
}
ENTRY_POINTS = ("git-shell", "hook")  # server.add_entry_points: after every group, as --help lists them


def command_word(argv: Sequence[str]) -> str | None:
    """The command a command line names, found as argparse would before any parser is built; None when unsure."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            i += 2
        elif arg == "--debug" or arg.startswith("--config="):
            i += 1
        elif arg.startswith("-"):
            return None  # --help, --version, an abbreviation, a typo: the whole parser says what it is
        else:
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or with `command` (command_word) only its group's, when known."""
    import argparse
    import importlib

    # The groups are imported here, not above: `status --json` answered by the daemon needs none of them (quick.py).
    entry_point = command in ENTRY_POINTS
    chosen = [g for g, commands in GROUPS.items() if command in commands] or (["server"] if entry_point else list(GROUPS))
    groups = [importlib.import_module(f"{__package__}.{name}") for name in chosen]

    parser = argparse.ArgumentParser(
        prog="gitopsd", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"gitopsd {gitopsd.__version__}")
    # Global options go before or after the command: the default is filled in after parsing (main), so
    # a subcommand's unset option cannot overwrite one given before the command.
    debug: dict[str, Any] = {"action": "store_true", "default": argparse.SUPPRESS, "help": "show the full traceback of an error"}
    config: dict[str, Any] = {
        "default": argparse.SUPPRESS,
        "metavar": "FILE",
        "help": "server configuration file (default: $GITOPSD_CONFIG or /etc/gitopsd/gitopsd.yml)",
    }
    parser.add_argument("--debug", **debug)
    parser.add_argument("--config", **config)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", **debug)
    common.add_argument("--config", **config)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, helptext: str, description: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common], help=helptext, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.set_defaults(func=func)
        return p

    for group in [] if entry_point else groups:
        group.add_commands(add, common)
    if entry_point or len(groups) == len(GROUPS):
        groups[0].add_entry_points(add)  # server's

    _bound_numbers(parser)
    return parser


COUNT_MAX = 10**9  # a count or an id past this is a typo; SQLite and int() would fail on it with a traceback


def _count(text: str) -> int:
    """A count or an id: a whole number from 1 to COUNT_MAX (argparse says so in one line)."""
    import argparse

    if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= COUNT_MAX):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {COUNT_MAX}, not {text[:20]!r}")
    return int(text)


def _seconds(text: str) -> float:
    """A duration: a number of seconds from 0 to a year (not nan, inf or 1e400)."""
    import argparse

    try:
        value = float(text) if text.isascii() and len(text) <= 20 else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to {366 * 86400}, not {text[:20]!r}")
    return value


def _bound_numbers(parser: argparse.ArgumentParser) -> None:
    """Every int argument of every command (and subcommand) is a count or an id, every float one a duration."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _bound_numbers(child)
        elif action.type is int:
            action.type = _count
        elif action.type is float:
            action.type = _seconds


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The one line for the first argument that is not valid UTF-8 (Python keeps such bytes as surrogates), or None."""
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            option = arg.partition("=")[0] if arg.startswith("--") and "=" in arg else ""
            if not option and i and argv[i - 1].startswith("-") and "=" not in argv[i - 1]:
                option = argv[i - 1]
            named = f"the value of {option[:40]}" if option else "an argument"
            return (
                f"{named} is not valid UTF-8 ('{shown[:60]}'); gitopsd takes names, text and paths as UTF-8: "
                "give it again spelled in UTF-8"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    garbled = _not_utf8(sys.argv[1:] if argv is None else argv)
    if garbled:
        print(f"gitopsd: error: {garbled}", file=sys.stderr)
        return 2
    try:  # before any parser is built: the daemon's rows, when it runs and may be asked (issue 28)
        from .quick import status_json

        quick = status_json(list(sys.argv[1:] if argv is None else argv), DEFAULT_CONFIG)
    except Exception as exc:
        if _reader_gone(exc):
            return _quiet_exit()
        quick = None  # the full command line below reads the store and says what is wrong, if anything
    if quick is not None:
        return quick
    command = command_word(sys.argv[1:] if argv is None else argv)
    known = command if any(command in names for names in (*GROUPS.values(), ENTRY_POINTS)) else None
    if known not in _PARSERS:
        _PARSERS[known] = build_parser(known)
    args = _PARSERS[known].parse_args(argv)
    if not hasattr(args, "config"):
        args.config = DEFAULT_CONFIG
    try:
        _interrupts_as_usual()  # inside: a Ctrl-C from here on is the KeyboardInterrupt caught below
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone meanwhile (`| head -1`) shows here, not in Python's exit
        return code
    except GitopsdError as exc:  # gitopsd's own errors are one line; --debug shows where
        if _reader_gone(exc):
            return _quiet_exit()
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        # A store error's line already says what is wrong and what to do (base/storeerrors.py).
        line = _control_unreachable(args, exc) or str(exc)
        print(f"gitopsd: {'' if isinstance(exc, StoreError) else 'error: '}{line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place a failure of the state database, the disk or a bug is told
        if _reader_gone(exc):
            return _quiet_exit()
        import sqlite3

        from ..base.storeerrors import DatabaseFailure

        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        if not isinstance(exc, (sqlite3.Error, DatabaseFailure, OSError)):  # a bug: still one line, never a traceback
            print(
                f"gitopsd: internal error: {type(exc).__name__}: {exc}"
                + ("" if getattr(args, "debug", False) else " (--debug shows where)"),
                file=sys.stderr,
            )
            return 1
        print(f"gitopsd: {_explain(args, exc)}", file=sys.stderr)
        return 1


def _interrupts_as_usual() -> None:
    """Ctrl-C from here on is Python's KeyboardInterrupt again (the commands catch it), no longer gitopsd's quiet exit."""
    import signal

    if signal.getsignal(signal.SIGINT) is gitopsd._interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _control_unreachable(args: argparse.Namespace, exc: BaseException | None) -> str | None:
    """For a failure to reach the control socket while the daemon runs without its runtime folder, the true line."""
    from ..adapters.control import ControlError
    from .common import load_config as _config
    from .common import unreachable

    seen = 0
    while exc is not None and seen < 10 and not isinstance(exc, ControlError):
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    if not isinstance(exc, ControlError):
        return None
    try:
        return unreachable(_config(args))
    except Exception:  # no config to find the folders by: the original line stands
        return None


def _reader_gone(exc: BaseException | None) -> bool:
    """Whether a failure is, or was caused by, writing to a closed stdout pipe (the store wraps what it meets)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, BrokenPipeError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _quiet_exit() -> int:
    """End as a Unix filter does when its reader went away: no message, and 141 (128 + SIGPIPE) as the status.

    stdout goes to /dev/null first so that Python's own flush at exit finds nowhere to fail.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _explain(args: argparse.Namespace, exc: Exception) -> str:
    """One line on a store, file or git error; for the state database, what is wrong with it and what to do."""
    import sqlite3

    from ..base.storeerrors import DatabaseFailure, explain
    from .common import load_config as _config

    try:
        database = str(_config(args).database)
    except Exception:  # no config to name the store by: say what failed, where
        database = ""
    filename = os.path.realpath(getattr(exc, "filename", None) or database or "/")
    about_store = isinstance(exc, (sqlite3.Error, DatabaseFailure)) or (
        isinstance(exc, OSError) and filename.startswith((database, os.path.dirname(database) + os.sep))
    )
    if database and about_store:
        return explain(database, exc)
    return f"error: {exc}" + ("" if getattr(args, "debug", False) else " (--debug shows where)")


if __name__ == "__main__":
    sys.exit(main())
