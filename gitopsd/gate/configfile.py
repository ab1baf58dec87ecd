"""The hook's slow path: the gate's configuration read from the YAML file when the daemon's snapshot is stale or missing.

Imported only then (receive.gate_config), so PyYAML and the config package cost nothing on an ordinary push. The
reading itself is config.load, which is above the gate: whoever runs the hook hands it in (LoadConfig).
"""

from __future__ import annotations

import os
import sqlite3
import sys

from ..core.errors import ConfigurationError
from . import snapshot

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from typing import Protocol, TextIO

    from ..core.settings import Config

    class LoadConfig(Protocol):
        """config.load, handed in by whoever runs the hook (hook_entry, `gitopsd hook`): the gate is below config.

        Raise ImportError when PyYAML cannot be imported, ConfigurationError (one problem a line) when the file is invalid.
        """

        def __call__(self, path: str) -> Config: ...


def gate_config(
    config_path: str, database: str, repo_path: str, store_error: sqlite3.Error | None, out: TextIO, load: LoadConfig
) -> tuple[snapshot.GateConfig, str] | None:
    """The gate's configuration when the snapshot is not current: the copy the last push kept, else the file.

    None (after saying why on `out`) when the file cannot be read or is invalid; `store_error` is why the
    store could not be opened, said only if that is what stops the file being read.
    """
    if database:
        copy = cached(config_path, repo_path)
        if copy is not None:
            return copy, database
    try:
        config = load(config_path)
    except ImportError as exc:
        if store_error is not None:
            from .messages import unreadable

            unreadable(database, store_error, out)
        else:
            print(
                f"\ngitopsd: push refused: the hook's Python ({sys.executable}) cannot read the configuration "
                f"({exc}).\nAsk an operator to run `gitopsd install-hooks` again with gitopsd's own Python.",
                file=out,
            )
        return None
    except ConfigurationError as exc:
        print(
            "\ngitopsd: push refused: the deploy server's gitopsd configuration is invalid, so environment\n"
            "branches cannot be checked. Ask an operator to run `gitopsd check-config`:",
            file=out,
        )
        for problem in str(exc).splitlines()[:5]:
            print(f"  {problem}", file=out)
        return None
    gate = snapshot.from_config(config)
    if database == str(config.database):
        keep(gate, repo_path)
    from pathlib import Path

    from .shimstamp import contents, write

    try:  # the shim decides pushes of main alone again from the next push on, as after the daemon's reload
        write(repo_path, contents(config, config.repository_at(Path(repo_path))), int(config.stamp.rsplit(":", 1)[-1]))
    except (OSError, ValueError):  # a folder the pusher may not write, a file with no stamp: Python judges them
        pass
    return gate, str(config.database)


# A config edit the daemon has not read yet: the first push parses the YAML and keeps the gate's part for this
# repository in a snapshot file of its own beside it, stamped like the daemon's (gate/snapshot.py); later
# pushes read that until the daemon has saved the new config. Whoever may write this file may also write the
# repository's hooks and git config, so it is trusted as they are.
CACHE_FILE = "gitopsd-gate.cache"


def cached(config_path: str, repo_path: str) -> snapshot.GateConfig | None:
    """The gate's part of the config as the last push here parsed it; None unless it is of the file as it is now."""
    path = os.path.join(repo_path, CACHE_FILE)
    try:
        db = snapshot.connect_readonly(path)
    except sqlite3.Error:
        return None
    if db is None:
        return None
    try:
        return snapshot.load(db, config_path, repo_path)
    finally:
        db.close()


def keep(gate: snapshot.GateConfig, repo_path: str) -> None:
    """Write the gate's part of the config for this repository beside it (see `cached`); quietly not if it cannot."""
    import time

    repo = gate.repository_at(repo_path)
    mine = snapshot.GateConfig(gate.source, gate.stamp, gate.runtime_dir, gate.identity_env, [repo] if repo else [])
    path = os.path.join(repo_path, CACHE_FILE)
    tmp = f"{path}.{os.getpid()}"
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(snapshot.SCHEMA)
            snapshot.save(db, mine, time.time())
        finally:
            db.close()
        os.replace(tmp, path)
    except (OSError, sqlite3.Error):
        try:
            os.unlink(tmp)
        except OSError:
            pass
