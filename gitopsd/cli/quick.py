"""`gitopsd status --json` answered by the running daemon, before the rest of the command line is imported (issue 28).

The full command line imports every command group and builds every parser, and `status` reads the store and every
branch: at 1,000 repositories that is 9.5 times a bare Python start. This path takes only the plain forms
(`status --json`, with `--repo NAME`, `--config FILE` and `--debug` before or after the command) and asks the daemon,
which keeps the rows (services/statusrows.py). Anything else, no daemon answering, or a configuration file changed
since the daemon read it: None, and main() goes on as before, reading the store, with the same output. A repository
the daemon cannot read is `unavailable` in its rows; one only this user cannot read is not (the daemon's view).
"""

from __future__ import annotations

import sys
from pathlib import Path

TIMEOUT = 10.0  # seconds: a daemon that cannot answer sooner (stopped, swamped) leaves `status` to read the store


def status_json(argv: list[str], default_config: str) -> int | None:
    """Print `status --json` as the daemon answers it and return 0; None when this path does not apply."""
    options = _plain_status_json(argv)
    if options is None:
        return None
    from ..services.readconfig import control_target

    # Neither the repositories' folders (2,000 stats: the daemon's rows say which it cannot read) nor the snapshot's
    # 3,000 environments are looked at: only the control socket and the file's stamp.
    target = control_target(Path(options.get("config", default_config)), options.get("repo"))
    if target is None:  # no snapshot of the file as it is now, or no such repository (main() says which there are)
        return None
    socket_path, stamp, state_dir = target
    if not socket_path.exists():  # no daemon started here: nothing more to import or to try
        return None
    from ..adapters.controlraw import ask

    try:
        answered = ask(socket_path, {"op": "status", "repo": options.get("repo")}, timeout=TIMEOUT, owner=state_dir)
    except OSError:  # no daemon (or not ours to ask): the store says it all the same
        return None
    if answered is None:  # served by another user than the daemon's, or an answer without the rows' bytes
        return None
    answer, raw = answered
    if answer.get("ok") is not True or answer.get("stamp") != stamp or not raw.startswith(b"["):
        return None  # an older daemon, one whose state database was replaced, or one that has not read the file as it is
    out = getattr(sys.stdout, "buffer", None)  # the rows' bytes as they came (ASCII: json.dumps escapes the rest)
    if out is None:  # a text stream with no bytes under it (the tests' in-process runs)
        sys.stdout.write(raw.decode() + "\n")
    else:
        sys.stdout.flush()
        out.write(raw + b"\n")
    sys.stdout.flush()  # a reader gone meanwhile (`| head -1`) shows here, where main() looks for it
    return 0


def _plain_status_json(argv: list[str]) -> dict[str, str] | None:
    """{"config": FILE, "repo": NAME} (either may be absent) for `status --json` in its plain forms, else None."""
    options: dict[str, str] = {}
    command, json_flag = False, False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "status" and not command:
            command = True
        elif arg == "--json" and command:
            json_flag = True
        elif arg == "--debug":
            pass
        elif name in ("--config", "--repo") and (command or name == "--config"):
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                    return None
                i, value = i + 1, argv[i + 1]
            if not value:
                return None
            options[name[2:]] = value
        else:
            return None  # --watch, --help, another command, an abbreviation: argparse's
        i += 1
    return options if command and json_flag else None
