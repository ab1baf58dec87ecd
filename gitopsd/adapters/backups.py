"""Copies of the SQLite state database: the daemon's scheduled ones, `gitopsd db backup` and `gitopsd db restore`.

A copy is made with SQLite's online backup API (store/sqlite.py backup), so the daemon may write meanwhile. A
restore replaces state.db only while no daemon holds the state folder's lock, and keeps the file it replaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from ..base.storeerrors import DatabaseFailure
from ..core.errors import UserError
from . import ownership
from .store import Store
from .store.sqlite import SQLiteBackend

SCHEDULED = "state-"  # the daemon's own copies: state-20261207T041500Z.db, the newest `keep` kept
RESCUED = "rescued-"  # what the daemon still held when its file was deleted or replaced: never pruned
REQUIRED_TABLES = ("deployments", "env_status", "schema_version")


def stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def scheduled(store: Store, folder: Path, keep: int, now: float, prefix: str = SCHEDULED) -> Path:
    """Write a copy of the daemon's store into `folder`; keep the newest `keep` scheduled copies; return its path."""
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    target = store.backup(folder / f"{prefix}{stamp(now)}.db")
    if prefix == SCHEDULED:
        for old in sorted(folder.glob(f"{SCHEDULED}*.db"), reverse=True)[keep:]:
            old.unlink(missing_ok=True)
    return target


def newest_scheduled(folder: Path) -> float | None:
    """When the newest of the daemon's scheduled copies in `folder` was made (the stamp in its name), or None."""
    import calendar

    made = []
    for copy in folder.glob(f"{SCHEDULED}*.db"):
        try:
            made.append(calendar.timegm(time.strptime(copy.name[len(SCHEDULED) : -len(".db")], "%Y%m%dT%H%M%SZ")))
        except ValueError:
            continue
    return max(made, default=None)


def folder(path: Path, state_dir: Path) -> Path:
    """The backup folder, made if missing: the daemon's (it writes its copies there), even when root made it."""
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make the backup folder {path}: {exc.strerror}; give --to FILE") from None
    ownership.hand_over([path], ownership.daemon_account(state_dir))
    return path


def backup(database: Path, target: Path) -> Path:
    """`gitopsd db backup`: copy the state database at `database` to `target` while the daemon may run."""
    if not database.is_file():
        raise UserError(f"there is no state database at {database}: nothing to back up")
    if target.is_dir():
        target = target / f"{SCHEDULED}{stamp(time.time())}.db"
    try:
        source = SQLiteBackend.read_only(database, timeout=30)
    except DatabaseFailure as exc:
        raise UserError(f"cannot read the state database {database}: {exc}") from None
    try:
        source.backup(target)
    except PermissionError:
        raise UserError(f"cannot write {target}: permission denied; choose a folder this user can write (--to FILE)") from None
    except (OSError, DatabaseFailure) as exc:
        raise UserError(f"cannot write the backup {target}: {exc}; choose another place (--to FILE)") from None
    finally:
        source.close()
    # Made by root: the daemon's user can read and restore it, as it can its own copies.
    ownership.hand_over([target], ownership.daemon_account(database.parent))
    return target


def check_store_file(path: Path) -> int:
    """Given a file to restore, return its number of deployments. Raise UserError unless it is a sound gitopsd store."""
    if not path.is_file():
        raise UserError(f"{path} is not a file: give the path of a backup (gitopsd db backup, or <state_dir>/backups/)")
    try:
        db = SQLiteBackend.read_only(path)
        try:
            found = db.execute("PRAGMA integrity_check").fetchone()
            result = tuple(found) if found is not None else None
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if result is None or result[0] != "ok" or missing:
                raise UserError(
                    f"{path} is not a gitopsd state database ("
                    + (f"no {', '.join(missing)} table" if missing else f"integrity check: {result}")
                    + "): nothing was changed; restore a file `gitopsd db backup` made"
                )
            return int(db.execute("SELECT count(*) FROM deployments").rows[0][0])
        finally:
            db.close()
    except DatabaseFailure as exc:
        raise UserError(
            f"{path} is not a gitopsd state database ({exc}): nothing was changed; restore a file `gitopsd db backup` made"
        ) from None


@contextlib.contextmanager
def daemon_stopped(state_dir: Path, what: str) -> Iterator[None]:
    """Hold the daemon's lock on the state folder (daemon.lock) for a while; raise UserError if a daemon holds it."""
    try:
        handle = open(state_dir / "daemon.lock", "a", encoding="utf-8")  # noqa: SIM115 (held: the lock lives with it)
    except OSError as exc:
        raise UserError(
            f"cannot open {state_dir / 'daemon.lock'}: {exc.strerror}; run this as the daemon's user or root"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"the daemon is running with the state folder {state_dir}: stop it first (systemctl stop gitopsd), then {what}"
            ) from None
        yield


def restore(source: Path, database: Path, now: float) -> tuple[int, Path | None]:
    """Put a copy of `source` at `database`, the current file moved aside; return (its deployments, where aside).

    The caller holds daemon_stopped()."""
    deployments = check_store_file(source)
    aside = None
    temp = database.with_name(f".{database.name}.restore.tmp")
    try:
        src = SQLiteBackend.read_only(source)
        try:
            src.backup(temp)
        finally:
            src.close()
    except (OSError, DatabaseFailure) as exc:
        raise UserError(f"cannot copy {source} into {database.parent}: {exc}; nothing was changed") from None
    if database.exists():
        aside = database.with_name(f"{database.name}.before-restore-{stamp(now)}")
        os.rename(database, aside)
        for suffix in ("-wal", "-shm"):  # a log left by a daemon killed: it belongs to the file moved aside
            extra = Path(f"{database}{suffix}")
            if extra.exists():
                os.rename(extra, Path(f"{aside}{suffix}"))
    os.rename(temp, database)
    ownership.hand_over([database], ownership.daemon_account(database.parent))
    return deployments, aside


def replaced_marker(runtime_dir: Path) -> Path:
    """The file in which a running daemon says its state database was deleted or replaced (read by `status`)."""
    return runtime_dir / "store-replaced"


def what_to_do(folder: Path, rescued: Path | None) -> str:
    """What an operator does about a lost state database: restore a copy, or rebuild from the notes."""
    copy = rescued or f"{folder}/{SCHEDULED}<newest>.db"
    return (
        f"stop the daemon, then restore a copy (gitopsd db restore {copy}) or rebuild the records from the git "
        f"notes (gitopsd db rebuild), and start it again"
    )


def say_replaced(runtime_dir: Path, reason: str) -> None:
    """Leave the daemon's one line about a lost state database where `gitopsd status` finds it."""
    marker = replaced_marker(runtime_dir)
    temp = marker.with_name(f".{marker.name}.tmp")
    temp.unlink(missing_ok=True)  # made anew, never written through: a symlink planted there is not followed
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n{reason}\n")
    os.chmod(temp, 0o644)
    os.rename(temp, marker)


def replaced_said(runtime_dir: Path) -> str | None:
    """The running daemon's line about its lost state database, None if it has none (or is not running)."""
    try:  # not a FIFO (it would hang `status`), a symlink or a file of any size: a few KiB of a regular file
        fd = os.open(replaced_marker(runtime_dir), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            pid_line, reason = handle.read(4096).decode("utf-8", errors="replace").split("\n", 1)
    except (OSError, ValueError):  # none, or not this user's to read
        return None
    try:
        os.kill(int(pid_line), 0)
    except PermissionError:  # alive, as another user
        pass
    except (OSError, ValueError):
        return None
    shown = "".join(c if c.isprintable() else " " for c in reason.strip())  # no escape sequences to the terminal
    return shown or None
