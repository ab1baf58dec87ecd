"""The configuration for the read-only commands (`status`, `history`, `logs`), from the snapshot the daemon keeps.

From the snapshot the daemon saves in the state database while it matches the file, so they need not import PyYAML
and validate the whole file on every call (docs/benchmarks.md, "Scale"). Light on purpose: `status --json` asks the
running daemon through this module before the rest of the command line is imported (cli/quick.py, issue 28).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.lookup import by_name

TYPE_CHECKING = False  # true for mypy and import-linter only: `typing` and the settings cost a quick command
if TYPE_CHECKING:
    import sqlite3
    from typing import Any

    from ..config import Config
    from ..gate.snapshot import GateRepository

# Where the file puts the state folder, when it says so on one plain top-level line (a value with a `/`, so
# YAML cannot read it as null, a number or a boolean). Anything else and the file is loaded in full.
_STATE_DIR_LINE = re.compile(
    r"""^state_dir:[ \t]+(?:([\w./~+@%,=-]*/[\w./~+@%,=-]*)|'([^'\n]+)'|"([^"\\\n]+)")"""
    r"""[ \t]*(?:#.*)?$""",
    re.MULTILINE,
)
CONTROL_SOCKET = "control.sock"  # in the runtime folder: core.settings.Config.control_socket
DEFAULT_STATE_DIR = "/var/lib/gitopsd"  # core.settings.Config.state_dir (a test holds them equal)


class ReadConfig:
    """The configuration as `status`, `history` and `logs` use it, taken from the daemon's snapshot.

    Repositories and environments carry names, paths and branches; any other setting (e.g.
    sweep_interval) loads and validates the file, once.
    """

    def __init__(
        self, path: Path, source: str, state_dir: Path, runtime_dir: Path, repositories: list[GateRepository], stamp: str = ""
    ):
        self._path, self.stamp = path, stamp  # the file's stamp, as the snapshot has it
        self._full: Config | None = None
        self.source, self.state_dir, self.runtime_dir, self.repositories = Path(source), state_dir, runtime_dir, repositories

    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def control_socket(self) -> Path:
        """core.settings.Config.control_socket: the daemon's, which `status --json` asks (cli/quick.py)."""
        return self.runtime_dir / CONTROL_SOCKET

    @property
    def database_url(self) -> str:
        """'' (SQLite): only a SQLite store holds this snapshot (with PostgreSQL the file is loaded in full)."""
        return ""

    @property
    def ci_dir(self) -> Path:
        return self.state_dir / "ci"

    def repository(self, name: str) -> GateRepository | None:
        return by_name(self.repositories, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._full is None:
            from ..config import ConfigError, load

            try:
                self._full = load(self._path)
            except ConfigError as exc:  # a repository gone since: the rest of the file still counts, as in cli
                if exc.config is None:
                    raise
                self._full = exc.config
        return getattr(self._full, name)


_CONFIG_MAX = 10 * 2**20  # characters: config.CONFIG_MAX, which load() refuses past (not imported: it pulls in YAML)


def read_config(path: Path, check: bool = True) -> tuple[ReadConfig, dict[str, str]] | None:
    """The configuration for a read-only command and {repository: problem} for those that cannot be read.

    From the snapshot the daemon (or install-hooks) saved in the state database after validating
    this very version of the file (same device, inode, size and mtime); None when there is none,
    and then the caller loads the file. `check` False: the repositories' folders are not looked at
    (`history` and `logs` read only the store: 2,000 stats at 1,000 repositories, issue 28). The snapshot's row names the file and its stamp, so a state
    folder guessed wrong from the text finds no row: never a wrong answer, only the slow path.
    """
    import sqlite3

    from ..gate import snapshot

    opened = _open_snapshot(path)
    if opened is None:
        return None
    source, stamp, state_dir, db = opened
    try:
        runtime_dir = _runtime_dir(db, source, stamp)
        if runtime_dir is None:
            return None
        # Inserted in the config's order, repository by repository (snapshot.save): rowid keeps it.
        rows = db.execute(
            "SELECT repo, repo_path, name, branch, promote_from, signoff FROM gate_environments WHERE config = ? ORDER BY rowid",
            (source,),
        ).fetchall()
    except sqlite3.Error:  # an older store without the snapshot
        return None
    finally:
        db.close()
    repos: dict[str, snapshot.GateRepository] = {}
    for repo, repo_path, name, branch, promote_from, signoff in rows:
        need = None
        if signoff:  # `history` shows the sign-offs it names
            from ..gate.approvals import SignoffNeed

            need = SignoffNeed.decode(signoff)
        repos.setdefault(repo, snapshot.GateRepository(repo, repo_path, [])).environments.append(
            snapshot.GateEnvironment(name, branch, promote_from, signoff=need)
        )
    if not repos:
        return None
    unavailable = {r.name: problem for r in repos.values() if check and (problem := repository_problem(Path(r.path)))}
    return ReadConfig(Path(path), source, state_dir, runtime_dir, list(repos.values()), stamp), unavailable


def _open_snapshot(path: Path) -> tuple[str, str, Path, sqlite3.Connection] | None:
    """(the file's real path, its stamp, the state folder its text names, a read-only connection to that folder's
    store) when the file can be read as it is now; None when it cannot (the caller then loads the file)."""
    import sqlite3

    from ..gate import snapshot

    source = os.path.realpath(path)
    stamp = snapshot.file_stamp(source)
    try:  # /dev/zero or a FIFO would never end: config.load, on the slow path, says what is wrong with it
        if not os.path.isfile(source):
            return None
        with open(source, encoding="utf-8") as handle:
            text = handle.read(_CONFIG_MAX + 1)
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) > _CONFIG_MAX:
        return None
    found = _STATE_DIR_LINE.findall(text)
    if len(found) != text.count("state_dir") or len(found) > 1 or not stamp or snapshot.file_stamp(source) != stamp:
        return None
    value = "".join(found[0]) if found else DEFAULT_STATE_DIR
    try:
        state_dir = (Path(path).parent / os.path.expanduser(value)).resolve()  # as config._dir resolves it
        db = snapshot.connect_readonly(str(state_dir / "state.db"))
    except (OSError, RuntimeError, ValueError, sqlite3.Error):
        return None
    if db is None:
        return None
    return source, stamp, state_dir, db


def control_target(path: Path, repo: str | None = None) -> tuple[Path, str, Path] | None:
    """(the daemon's control socket, the file's stamp, the state folder) from the snapshot of the file as it is now,
    without building its environments (3,000 at 1,000 repositories: `status --json` asks the daemon with these alone,
    cli/quick.py); None when there is no such snapshot, or it names no repository (no repository `repo`, when given)."""
    import sqlite3

    opened = _open_snapshot(path)
    if opened is None:
        return None
    source, stamp, state_dir, db = opened
    try:
        runtime_dir = _runtime_dir(db, source, stamp)
        named = db.execute(
            "SELECT 1 FROM gate_environments WHERE config = ? AND (? IS NULL OR repo = ?) LIMIT 1", (source, repo, repo)
        ).fetchone()
    except sqlite3.Error:  # an older store without the snapshot
        return None
    finally:
        db.close()
    if runtime_dir is None or named is None:
        return None
    return runtime_dir / CONTROL_SOCKET, stamp, state_dir


def _runtime_dir(db: sqlite3.Connection, source: str, stamp: str) -> Path | None:
    """The runtime folder the snapshot of `source` names, while the snapshot is of the file as it is now (`stamp`)."""
    row = db.execute("SELECT stamp, runtime_dir FROM gate_config WHERE config = ?", (source,)).fetchone()
    return Path(row[1]) if row is not None and row[0] == stamp else None


def repository_problem(path: Path) -> str | None:
    """Why `path` is not a Git repository this user can read, in config.load's words; None if it is one."""
    try:
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            return None
    except PermissionError:
        import pwd

        return f"{path} cannot be read by {pwd.getpwuid(os.geteuid()).pw_name} (run `gitopsd doctor` as root to see why)"
    return f"no Git repository at {path} (run `gitopsd init {path}` to create one)"
