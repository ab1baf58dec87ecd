"""gitopsd: environment branches of a bare Git repository drive Ansible deployments."""

import sys as _sys


def _command(argv: list[str]) -> str | None:
    """The command of a command line, past the global options that may come before it (--debug, --config FILE)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--config" else 1
    return argv[i] if i < len(argv) else None


def _interrupted(_signum: int, _frame: object) -> None:
    """Ctrl-C while the command line is still importing: quiet, exit 130, as Ctrl-C later is (cli.main puts Python's
    own handler back once its parser is built)."""
    raise SystemExit(130)


_launcher = _sys.argv[0] if _sys.argv else ""
if _launcher == "-m" or _launcher.rpartition("/")[2] == "gitopsd":  # the command line (or `-m`), not a library user
    import signal as _signal

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:  # started ignoring it (`&` in a script): kept
        _signal.signal(_signal.SIGINT, _interrupted)

if _command(_sys.argv[1:]) == "run":
    # `gitopsd run`: hold SIGHUP (whose default action ends the process) and the stop signals from the first line
    # of gitopsd that runs, not after the command line's imports; daemon.run acts on them once it can. Also after
    # global options (`gitopsd --config FILE run`), which argparse takes before or after the command.
    import signal as _signal

    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT})

__version__ = "0.1.0"
