"""Reading what a run left in its own folder: the file there, never the one a link the run made points to.

A run writes its folder from inside the sandbox; the daemon, `gitopsd logs` and the dashboard read that folder outside
it, as the service user, who can read what the sandbox hides (state.db, the signing key, every vault password). A run
that replaces its output with a symlink must not have those read back to it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

NOT_OWN = "not the run's own file (the run replaced it with a link or something other than a file): not read"


def open_own(root: Path, path: Path) -> int:
    """A read-only descriptor of `path`, a regular file below `root` reached through no symlink below `root`.

    Raise OSError (ELOOP, with NOT_OWN) when a link was in the way, else as open() does.
    """
    expected = os.path.join(os.path.realpath(root), os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, NOT_OWN if exc.errno == errno.ELOOP else exc.strerror, str(path)) from None
    try:
        # The kernel's name of what was opened: a symlinked folder anywhere on the way gives another name.
        if os.readlink(f"/proc/self/fd/{fd}") != expected or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, NOT_OWN, str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_own(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` in a run's folder as a new file of the daemon's: whatever the run put there (a link to a file the
    daemon may write) is removed first, never written through."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)  # whatever the daemon's umask: the run reads it
        handle.write(data)


def read_own(root: Path, path: Path) -> str:
    """The text of `path`, a run's own file below `root` (open_own). Raise OSError."""
    with os.fdopen(open_own(root, path), "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def as_text(output: str) -> str:
    """A run's output for a person's terminal: its lines kept, every other control character shown, never obeyed (an
    escape sequence in a task's name could retitle the terminal, set its clipboard or hide lines of the log)."""
    return _CONTROLS.sub(lambda found: repr(found.group())[1:-1], output.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """A line a run made (a deployment's reason, Ansible's error): as_text, its line ends shown too."""
    return as_text(text).replace("\n", "\\n").replace("\t", " ")
