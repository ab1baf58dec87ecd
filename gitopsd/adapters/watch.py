"""Watching each repository's refs with one inotify instance for all of them (inotify_simple lives here only).

An event is only a hint to look: a branch update is a rename of `<ref>.lock` onto the ref, and
`git pack-refs` deletes loose refs that still exist. The reconciler re-reads Git either way. What
cannot be watched (system limits reached, folder gone) still deploys through the push nudge and
the periodic sweep, so the watcher logs it and carries on instead of failing.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

log = logging.getLogger("gitopsd.watch")

RECHECK = 10.0  # seconds between looks at what is not watched (folder back? limit raised?)
NAMES_SHOWN = 20  # a log line names at most this many repositories; `unwatched` has them all

# The repository folder: packed-refs is moved into place there; the folder itself may vanish.
_REPO_MASK = flags.MOVED_TO | flags.DELETE | flags.CLOSE_WRITE | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
# refs/heads and each folder below it (branch names with slashes). CREATE is for new folders;
# CLOSE_WRITE catches a ref written by hand; no ACCESS or CLOSE_NOWRITE: reading refs must not trigger looks.
_HEADS_MASK = (
    flags.MOVED_TO
    | flags.MOVED_FROM
    | flags.CREATE
    | flags.DELETE
    | flags.CLOSE_WRITE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
)
_FILE_CHANGES = flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.CLOSE_WRITE
_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT | flags.IGNORED

# Why a repository is not watched; the limit kinds name the sysctl that raises them.
MISSING, WATCH_LIMIT, INSTANCE_LIMIT, ERROR = "missing", "watch-limit", "instance-limit", "error"
SYSCTL = {WATCH_LIMIT: "fs.inotify.max_user_watches", INSTANCE_LIMIT: "fs.inotify.max_user_instances"}


class _Unwatchable(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _why(exc: OSError, path: Path) -> _Unwatchable:
    if exc.errno == errno.ENOSPC:
        return _Unwatchable(WATCH_LIMIT, f"the inotify watch limit ({SYSCTL[WATCH_LIMIT]}) is reached")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return _Unwatchable(MISSING, f"{path} is missing")
    return _Unwatchable(ERROR, f"cannot watch {path}: {exc.strerror or exc}")


class RefWatcher:
    """Calls `callback(repo_name)` when a branch or packed-refs of a repository may have changed.

    One inotify instance and one thread serve every repository. `unwatched` says which repositories
    are not watched now and why; they are looked at again every `recheck` seconds (and on `refresh()`).
    """

    def __init__(self, repos: dict[str, Path], callback: Callable[[str], None], recheck: float = RECHECK):
        self.repos = {name: Path(path) for name, path in repos.items()}
        self.callback = callback
        self.recheck = recheck
        self._inotify: INotify | None = None
        self._wds: dict[int, tuple[str, Path]] = {}  # watch -> (repository, folder)
        self._repo_wds: dict[str, set[int]] = {}
        self._identity: dict[str, tuple[int, int]] = {}  # repository -> (device, inode) of its folder
        self._unwatched: dict[str, _Unwatchable] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="ref-watcher", daemon=True)

    # -- what others may ask ---------------------------------------------------------------------
    @property
    def unwatched(self) -> dict[str, str]:
        """Repositories whose refs are not watched now, with the reason (for `status` and `doctor`)."""
        with self._lock:
            return {name: u.reason for name, u in sorted(self._unwatched.items())}

    def start(self) -> None:
        with self._lock:
            try:
                self._inotify = INotify()  # close-on-exec: playbooks never inherit it
            except OSError as exc:
                self._unwatched = {name: self._init_failure(exc) for name in self.repos}
            else:
                for name in self.repos:
                    self._arm_or_mark(name)
            self._report(dict(self._unwatched))
        self._thread.start()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def refresh(self) -> None:
        """Watch again what came back (folder, limit raised); notice folders replaced or moved behind our back."""
        looks: list[str] = []
        with self._lock:
            if self._stopping.is_set():
                return
            if self._inotify is None:
                try:
                    self._inotify = INotify()
                except OSError:
                    return  # already reported; the nudge and the sweep carry on
                os.write(self._wake_w, b"x")  # the reading thread starts polling the new instance
            for name, path in self.repos.items():
                if name not in self._unwatched and _identity(path) != self._identity.get(name):
                    # No event says so when a parent folder is moved or the folder is swapped between looks.
                    self._lose(name, _Unwatchable(MISSING, f"{path} was replaced, moved or deleted"))
            for name in sorted(self._unwatched):
                before = self._unwatched[name]
                try:
                    self._arm(name)
                except _Unwatchable as exc:
                    self._unwatched[name] = exc  # quietly: the reason was logged when it stopped being watched
                    if exc.kind in SYSCTL and before.kind not in SYSCTL:
                        self._report({name: exc})  # but a limit is news: say which sysctl raises it
                    continue
                del self._unwatched[name]
                looks.append(name)  # it may have moved while no one watched
            if looks:
                shown = ", ".join(looks[:NAMES_SHOWN]) + (
                    f" and {len(looks) - NAMES_SHOWN} more" if len(looks) > NAMES_SHOWN else ""
                )
                log.info("now watching the refs of %d repositor%s: %s", len(looks), "y" if len(looks) == 1 else "ies", shown)
        for name in looks:
            self.callback(name)

    # -- arming ----------------------------------------------------------------------------------
    def _init_failure(self, exc: OSError) -> _Unwatchable:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            return _Unwatchable(
                INSTANCE_LIMIT, f"the inotify instance limit ({SYSCTL[INSTANCE_LIMIT]}) or the open-file limit is reached"
            )
        return _Unwatchable(ERROR, f"cannot create an inotify instance: {exc.strerror or exc}")

    def _arm_or_mark(self, name: str) -> None:
        try:
            self._arm(name)
        except _Unwatchable as exc:
            self._unwatched[name] = exc

    def _arm(self, name: str) -> None:
        """Watch the repository folder and its refs/heads tree, all or nothing. Raise _Unwatchable."""
        if self._inotify is None:
            raise self._unwatched.get(name) or _Unwatchable(ERROR, "no inotify instance")
        path = self.repos[name]
        try:
            identity = os.stat(path)
            self._add(name, path, _REPO_MASK)
            heads = path / "refs" / "heads"
            if not heads.is_dir():
                raise _Unwatchable(MISSING, f"{heads} is missing (not a Git repository?)")
            self._add_tree(name, heads)
        except OSError as exc:
            self._disarm(name)
            raise _why(exc, path) from None
        except _Unwatchable:
            self._disarm(name)
            raise
        self._identity[name] = (identity.st_dev, identity.st_ino)

    def _add(self, name: str, folder: Path, mask: int) -> None:
        assert self._inotify is not None
        wd = self._inotify.add_watch(folder, mask)
        self._wds[wd] = (name, folder)
        self._repo_wds.setdefault(name, set()).add(wd)

    def _add_tree(self, name: str, folder: Path) -> None:
        """Watch `folder` before listing it, so a subfolder made meanwhile is not missed."""
        self._add(name, folder, _HEADS_MASK)
        with os.scandir(folder) as entries:
            subfolders = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        for sub in subfolders:
            try:
                self._add_tree(name, sub)
            except FileNotFoundError:
                pass  # removed between the listing and the watch: nothing to watch

    def _disarm(self, name: str, under: Path | None = None) -> None:
        """Stop watching a repository (or only its folders at and below `under`)."""
        for wd in list(self._repo_wds.get(name, ())):
            folder = self._wds[wd][1]
            if under is not None and folder != under and under not in folder.parents:
                continue
            del self._wds[wd]
            self._repo_wds[name].discard(wd)
            try:
                if self._inotify is not None:
                    self._inotify.rm_watch(wd)
            except OSError:
                pass  # the kernel dropped it already (folder deleted)
        if under is None:
            self._repo_wds.pop(name, None)
            self._identity.pop(name, None)

    def _lose(self, name: str, why: _Unwatchable) -> None:
        """A watched repository cannot be watched any more: one log line, then the recheck takes over."""
        if name in self._unwatched:
            return
        self._disarm(name)
        self._unwatched[name] = why
        if why.kind == MISSING:
            log.warning(
                "repository %s: %s; its refs are not watched until it is back (looked for every %gs)",
                name,
                why.reason,
                self.recheck,
                extra={"repo": name},
            )
        else:
            self._report({name: why})

    # -- reporting -------------------------------------------------------------------------------
    def _report(self, unwatched: dict[str, _Unwatchable]) -> None:
        """One line per kind of reason, naming the repositories and what to do about it."""
        by_kind: dict[str, list[str]] = {}
        for name, why in sorted(unwatched.items()):
            by_kind.setdefault(why.kind, []).append(name)
        for kind, names in by_kind.items():
            shown = ", ".join(f"{n} ({unwatched[n].reason})" if kind == ERROR else n for n in names[:NAMES_SHOWN])
            if len(names) > NAMES_SHOWN:
                shown += f" and {len(names) - NAMES_SHOWN} more"
            counted = f"{len(names)} of {len(self.repos)} repositories"
            if kind == MISSING:
                log.warning(
                    "%s are not watched because their folder or refs/heads is missing (looked for again every %gs): %s",
                    counted,
                    self.recheck,
                    shown,
                )
                continue
            fallback = "pushes to them deploy through the push nudge and the periodic sweep instead"
            if kind not in SYSCTL:
                log.warning("%s are not watched; %s: %s", counted, fallback, shown)
                continue
            key = SYSCTL[kind]
            now = _read_sysctl(key)
            more = max(2 * now, 1024) if now is not None else 1024
            log.warning(
                "%s%s: %s are not watched; %s: %s. To watch them all, raise the limit: "
                "`sysctl -w %s=%d`, and keep it in /etc/sysctl.d/90-gitopsd.conf as `%s = %d`",
                unwatched[names[0]].reason,
                f" (now {now})" if now is not None else "",
                counted,
                fallback,
                shown,
                key,
                more,
                key,
                more,
            )

    # -- the reading thread ----------------------------------------------------------------------
    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        polled: int | None = None
        next_recheck = _now() + self.recheck
        while not self._stopping.is_set():
            with self._lock:
                fd = self._inotify.fileno() if self._inotify is not None else None
            if fd != polled:
                if polled is not None:
                    poller.unregister(polled)
                if fd is not None:
                    poller.register(fd, select.POLLIN)
                polled = fd
            ready = poller.poll(max(0.0, next_recheck - _now()) * 1000)
            for ready_fd, _ in ready:
                if ready_fd == self._wake_r:
                    _drain(self._wake_r)
                elif ready_fd == polled:
                    self._read_events()
            if _now() >= next_recheck and not self._stopping.is_set():
                self.refresh()
                next_recheck = _now() + self.recheck

    def _read_events(self) -> None:
        looks: list[str] = []
        with self._lock:
            if self._inotify is None:
                return
            try:
                events = self._inotify.read(timeout=0)
            except OSError as exc:
                log.warning("reading inotify events failed: %s; the periodic sweep covers what was missed", exc)
                return
            for event in events:
                looks.extend(self._handle(event.wd, event.mask, event.name))
        for name in dict.fromkeys(looks):  # each repository once per batch, in order
            self.callback(name)

    def _handle(self, wd: int, mask: int, filename: str) -> list[str]:
        """Given one event, return the repositories to look at (and keep the watches in step with folders)."""
        if mask & flags.Q_OVERFLOW:
            log.debug("inotify queue overflowed: looking at every watched repository")
            return [n for n in self.repos if n not in self._unwatched]
        if wd not in self._wds:
            return []  # a watch we removed: its last events are still queued
        name, folder = self._wds[wd]
        path = self.repos[name]
        if mask & _GONE:
            if folder in (path, path / "refs" / "heads"):
                self._lose(name, _Unwatchable(MISSING, f"{path} was deleted or moved away"))
            elif mask & flags.IGNORED:
                self._disarm(name, under=folder)  # a branch folder git removed once empty
            return []
        if folder == path:
            return [name] if filename == "packed-refs" else []
        if filename.endswith(".lock"):
            return []
        if mask & flags.ISDIR:
            sub = folder / filename
            if mask & flags.MOVED_FROM:
                self._disarm(name, under=sub)
            elif mask & (flags.CREATE | flags.MOVED_TO):
                try:
                    self._add_tree(name, sub)
                except FileNotFoundError:
                    pass  # already gone again
                except OSError as exc:
                    self._lose(name, _why(exc, sub))
            return [name]
        return [name] if mask & _FILE_CHANGES else []


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _read_sysctl(key: str) -> int | None:
    try:
        return int(Path("/proc/sys", *key.split(".")).read_text())
    except (OSError, ValueError):
        return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _now() -> float:
    return time.monotonic()
