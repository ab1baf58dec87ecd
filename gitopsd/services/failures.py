"""What a failure of the server's own files, database or repositories is to a client of the API or the dashboard.

What passes by itself (a locked store, a store server away) is a 503 the client may retry after a while. What does
not (permission denied, a read-only file system, a full disk, a name too long, a folder where a file goes, a damaged
database, git failing on a repository) is a 500 saying what is wrong and that the operator must act: its whole story
goes to the daemon's log once, at error level, for the operator (journald), and no path or traceback to the client.
"""

from __future__ import annotations

import errno
import logging

from ..base.storeerrors import (
    BUSY,
    DAMAGED,
    FULL,
    PERMISSION,
    StoreBusy,
    StoreDamaged,
    StoreFenced,
    StoreUnreachable,
    StoreUnusable,
    classify,
)
from ..core.errors import INTERNAL, UNAVAILABLE, Refused, StoreError

RETRY_AFTER = "5"  # seconds a client waits before asking again after a 503 (the Retry-After header)
# Errors of the system that pass by themselves: another process holds the file, too many open files for a moment.
PASSING = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
LOG = "(the daemon's log names the file)"


def server_failure(exc: BaseException, log: logging.Logger, what: str) -> Refused:
    """Given a StoreError, GitError or OSError met while serving `what` (e.g. "API POST /api/v1/..."), log it once and
    return the refusal to answer with: unavailable (503, retry) when it passes by itself, else internal (500)."""
    trouble = _trouble(exc)
    if trouble == BUSY:
        log.warning("%s: %s (answered 503: try again)", what, _one_line(exc))
        return Refused(
            "the state database or the repository is busy or out of reach; try again in a moment",
            UNAVAILABLE,
            "store_unavailable",
        )
    log.error("%s failed: %s", what, _one_line(exc))
    why = f" ({_strerror(exc)})" if _strerror(exc) else ""
    if trouble == PERMISSION:
        return Refused(
            f"the server may not write its own files{why or ' (permission denied)'}: retrying cannot help; an operator "
            f"must fix their owner, mode or mount on the server {LOG}",
            INTERNAL,
            "server_permission",
        )
    if trouble == FULL:
        return Refused(
            f"the server's disk is full{why}: retrying cannot help; an operator must free space on the server {LOG}",
            INTERNAL,
            "server_disk_full",
        )
    if trouble == DAMAGED:
        return Refused(
            f"the server's state database is damaged: retrying cannot help; an operator must move it aside {LOG}",
            INTERNAL,
            "server_files",
        )
    if trouble == "git":
        return Refused(
            "git failed on the repository on the server: retrying cannot help; an operator must fix the repository "
            "(the daemon's log has git's words)",
            INTERNAL,
            "repository_failed",
        )
    return Refused(
        f"a file or folder of the server is not as gitopsd needs it{why}: retrying cannot help; an operator must fix it {LOG}",
        INTERNAL,
        "server_files",
    )


def _trouble(exc: BaseException) -> str:
    """BUSY (passes by itself), PERMISSION, FULL, DAMAGED, "git", or "other"."""
    if isinstance(exc, StoreError):
        if isinstance(exc, StoreBusy):  # busy or full: the cause tells
            return FULL if exc.__cause__ is not None and classify(exc.__cause__) == FULL else BUSY
        if isinstance(exc, StoreUnusable):  # without an error under it: a store let go (replaced), no extra to use it
            return PERMISSION if exc.__cause__ is not None else "other"
        if isinstance(exc, StoreDamaged):
            return DAMAGED
        if isinstance(exc, (StoreUnreachable, StoreFenced)):  # the server back, or the new leader, answers
            return BUSY
        return _trouble(exc.__cause__) if isinstance(exc.__cause__, OSError) else "other"
    if isinstance(exc, OSError):
        if exc.errno in PASSING or isinstance(exc, TimeoutError):
            return BUSY
        kind = classify(exc)
        return kind if kind in (PERMISSION, FULL) else "other"
    cause = exc.__cause__
    return _trouble(cause) if isinstance(cause, OSError) else "git"


def _strerror(exc: BaseException) -> str:
    """The system's words for an OSError (or one under the error), without the file name; "" when there are none."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__
    return ""


def _one_line(exc: BaseException) -> str:
    return " / ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
