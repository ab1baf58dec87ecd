"""What a failure of the state database means, in one line that says what to do.

SQLite's own words ("unable to open database file", "file is not a database") do not say which
file, whose fault, or what helps. The store raises every failure as `translate` makes it: a
StoreError of the kind the caller acts on, with `explain`'s line; the pre-receive hook uses
`classify` itself. Stdlib only and cheap: the hook imports this when it must refuse a push.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd

from ..core.errors import ConfigurationError, StalledError, StoreError, TransientError

TYPE_CHECKING = False  # true for mypy only
if TYPE_CHECKING:  # annotations only: the hook imports this when it refuses a push
    from collections.abc import Callable

PERMISSION, DAMAGED, BUSY, FULL, OTHER = "permission", "damaged", "busy", "full", "other"
UNREACHABLE = "unreachable"  # PostgreSQL down or not where the config says (adapters/store/postgresql.py)
FENCED = "fenced"  # a deployment written by a daemon that is no longer the leader (gitopsd/daemon/leadership.py)


class DatabaseFailure(Exception):
    """A failure of the database under the store, as a backend raises it in place of its driver's (sqlite3's, psycopg's).

    Its `store_kind` is what `classify` says of it: the backend that raised it knew its driver's errors."""

    store_kind = OTHER

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.store_kind = kind


class StatementFailure(DatabaseFailure):
    """A statement could not run: a table or column an older store lacks, a lock, a server gone (sqlite3's OperationalError)."""


class IntegrityFailure(DatabaseFailure):
    """A row broke a constraint of its table (a key already there)."""


def classify(exc: BaseException) -> str:
    """Given an error from opening or using the store, say which kind of trouble it is."""
    kind = getattr(exc, "store_kind", None)  # a backend's DatabaseFailure knows its kind
    if isinstance(kind, str):
        return kind
    text = str(exc).lower()
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PERMISSION
        return FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else OTHER
    if "permission denied" in text or "readonly database" in text or "unable to open database" in text:
        return PERMISSION  # SQLite says "unable to open" when the file, its folder or its -wal cannot be opened
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return DAMAGED
    if "locked" in text or "busy" in text:
        return BUSY
    if "full" in text:
        return FULL
    return OTHER


def _name(table: Callable[[int], object], key: int, attr: str) -> str:
    try:
        return str(getattr(table(key), attr))
    except KeyError:
        return str(key)


def owner_and_group(path: str) -> tuple[str, str, bool]:
    """Who owns `path` (or the nearest folder above it this user may look at), by name, and may its group read it?"""
    while True:
        try:
            st = os.stat(path)
            return (
                _name(pwd.getpwuid, st.st_uid, "pw_name"),
                _name(grp.getgrgid, st.st_gid, "gr_name"),
                bool(st.st_mode & 0o040),
            )
        except OSError:
            parent = os.path.dirname(path)
            if parent == path:
                return "root", "root", False
            path = parent


def explain(database: str, exc: BaseException) -> str:
    """One line for an operator: what is wrong with which file, and what to do."""
    kind = classify(exc)
    if database.startswith(("postgresql:", "postgres:")):
        return _explain_postgresql(kind, exc)
    where = getattr(exc, "filename", None) or database
    if kind == PERMISSION:
        user = _name(pwd.getpwuid, os.geteuid(), "pw_name")
        owner, group, group_reads = owner_and_group(database)
        folder = os.path.dirname(database)
        daemon, _group, _reads = owner_and_group(folder)  # the state folder is the daemon's (install-service)
        if daemon == user and owner != user:  # the daemon's own folder, a file someone else made in it
            return (
                f"cannot open the state database {database}: permission denied for {user} ({exc}): it belongs "
                f"to {owner}:{group}, though the state folder {folder} is {user}'s (a command run as {owner} made "
                f"it). Give it back to the daemon's user: chown -R {user}: {folder}"
            )
        run_as = (
            f"Run gitopsd as {daemon}, the daemon's user (sudo -u {daemon} gitopsd ...)"
            if daemon != "root"
            else f"Run gitopsd as the user that owns {folder} (the daemon's)"
        )
        if "readonly" in str(exc):  # it was read; a write was refused: joining the group would not help
            return (
                f"cannot write the state database {database}: permission denied for {user} ({exc}); it belongs "
                f"to {owner}:{group}, and only its owner writes it. {run_as}."
            )
        if not group_reads:  # joining the group would not help: the file is not readable by it
            return (
                f"cannot open the state database {database}: permission denied for {user} ({exc}); it belongs "
                f"to {owner}:{group} without group read. {run_as}; readers need group read access to it "
                f"(folder 0750, files 0640, as the service installs them)."
            )
        return (
            f"cannot open the state database {database}: permission denied for {user} ({exc}); it belongs to "
            f"{owner}:{group}. {run_as}; to read it as {user}, "
            f"{user} needs the group {group}: usermod -aG {group} {user}, then log in again."
        )
    if kind == DAMAGED:
        return (
            f"cannot read the state database {database}: {exc} (corrupt?). Move it aside and restart the "
            f"daemon: deployments are recorded again as it converges."
        )
    if kind == BUSY:
        return f"the state database {database} is busy ({exc}): another process holds it. Try again in a moment."
    if kind == FULL:
        return (
            f"cannot write the state database {database}: the disk is full ({exc}). "
            f"Free space on the file system of {os.path.dirname(where)} and try again."
        )
    return f"the state database {database} failed: {exc}. Run with --debug to see where."


def _explain_postgresql(kind: str, exc: BaseException) -> str:
    """The line for a PostgreSQL store; its error's text starts with the URL, password left out (store/postgresql.redact)."""
    if kind == UNREACHABLE:
        return (
            f"cannot reach the PostgreSQL state database {exc}. Start PostgreSQL or fix `database:` in the "
            f"config; the daemon keeps trying."
        )
    if kind == FENCED:
        return (
            f"refused by the PostgreSQL state database: {exc}. Another gitopsd took over as the leader; "
            f"this one records and starts nothing more and stops."
        )
    if kind == PERMISSION:
        return (
            f"the PostgreSQL state database refused gitopsd: {exc}. Check the user and password in `database:` "
            f"(or ~/.pgpass) and that the user may use that database (GRANT)."
        )
    return f"the PostgreSQL state database failed: {exc}. Run with --debug to see where."


def postgresql_missing(exc: BaseException | None = None) -> str | None:
    """What to install when this Python cannot use PostgreSQL (the `postgresql` extra is absent); None when it can.

    Given the ImportError met, also say it when the packages are there but cannot load (no libpq, say).
    """
    import importlib.util
    import sys

    missing = []
    for module in ("psycopg", "psycopg_pool"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent that fails to import, or a module blocked in sys.modules
            found = False
        if not found:
            missing.append(module)
    if not missing and exc is None:
        return None
    what = f"is not installed ({', '.join(missing)} missing)" if missing else f"cannot be loaded ({exc})"
    return f"the postgresql extra {what}: pip install 'gitopsd[postgresql]' into gitopsd's virtualenv ({sys.prefix})"


class StoreBusy(StoreError, TransientError):
    """Another process holds the database, or its disk is full: the next attempt may succeed."""


class StoreUnusable(StoreError, ConfigurationError):
    """This user may not open the database: a person fixes owner, group or mode."""


class StoreDamaged(StoreError, StalledError):
    """The database file is not a database any more: a person moves it aside."""


class StoreUnreachable(StoreError, TransientError):
    """The PostgreSQL server cannot be reached now: it may be back on the next attempt."""


class StoreFenced(StoreError, StalledError):
    """This daemon is no longer the leader: the database refuses its deployment records (epoch fencing)."""


_KINDS = {
    BUSY: StoreBusy,
    FULL: StoreBusy,
    PERMISSION: StoreUnusable,
    DAMAGED: StoreDamaged,
    UNREACHABLE: StoreUnreachable,
    FENCED: StoreFenced,
}


def translate(database: str, exc: BaseException) -> StoreError:
    """The StoreError to raise for `exc` (a DatabaseFailure, sqlite3.Error or OSError) from the database at `database` (a file or a URL)."""
    return _KINDS.get(classify(exc), StoreError)(explain(database, exc))
