"""Which repositories a periodic sweep looks at: those whose ref files, records or last look say something may be due.

At 1,000 repositories x 3 environments a sweep's 3,000 looks cost about 1.2 s of CPU each minute (issue 28). The sweep
is the safety net for lost inotify events, `git pack-refs`, due retries, watches and expiring locks, so a repository is
passed over only when nothing a look reads can have moved since its last look:

- its ref files (every file under refs/heads and packed-refs: inode, mtime, size) are as they were then;
- no connection committed to the store since the last sweep (the data_version of a read-only store of its own, so the
  daemon's own writes count too; PostgreSQL has none: every sweep looks at everything);
- its last look found every environment in sync with nothing due (Reconciler.settled), and it has nothing the clock
  alone changes: approvals that expire, automatic promotion; no alert freezes configured (their expiry runs on looks);
- the configuration is the one of the last sweep, and at most FULL_EVERY - 1 sweeps in a row passed it over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from ..adapters.store import Store
from ..core.errors import StoreError
from ..core.settings import Config, Repository

FULL_EVERY = 10  # every tenth sweep looks at every repository, whatever the stamps say

Stamp = tuple[tuple[str, int, int, int], ...]


def refs_stamp(path: os.PathLike[str] | str) -> Stamp:
    """The identity of every branch file and of packed-refs: a ref moves by renaming a new file onto it (new inode)."""
    found: list[tuple[str, int, int, int]] = []
    top = os.path.join(path, "refs", "heads")
    for name in ("packed-refs",):
        found.append(_file(os.path.join(path, name), name))
    for folder, folders, files in os.walk(top):
        folders.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            found.append(_file(full, os.path.relpath(full, top)))
    return tuple(found)


def _file(path: str, name: str) -> tuple[str, int, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (name, 0, 0, 0)
    return (name, info.st_ino, info.st_mtime_ns, info.st_size)


def clockless(repo: Repository) -> bool:
    """Whether the repository's looks find nothing new with time alone (besides retries and watches, which are never
    settled): approvals that expire and automatic promotion's looks are the clock's."""
    return not any((e.approvals is not None and e.approvals.expire_after) or e.auto_promote for e in repo.environments)


class SweepPlan:
    """Chooses the repositories of each periodic sweep; `open_store` gives a read-only store of its own, opened once."""

    def __init__(self, open_store: Callable[[], Store], full_every: int = FULL_EVERY):
        self.open_store = open_store
        self.full_every = full_every
        self._store: Store | None = None
        self._version: int | None = None
        self._config_id: int | None = None
        self._stamps: dict[str, Stamp] = {}
        self._passed = 0  # sweeps since the last that looked at everything

    def choose(self, config: Config, settled: Collection[str], everything: bool = False) -> list[Repository]:
        """The repositories this sweep looks at (in the configuration's order); `settled`: the reconciler's.

        `everything`: the start's or a reload's sweep, which looks at all; what it saw is kept for the next sweep."""
        version = self._data_version()
        full = (
            everything
            or version is None
            or version != self._version
            or id(config) != self._config_id
            or bool(config.freeze_on)
            or self._passed + 1 >= self.full_every
        )
        self._version, self._config_id = version, id(config)
        self._passed = 0 if full else self._passed + 1
        chosen = []
        for repo in config.repositories:
            stamp = refs_stamp(repo.path)
            if full or stamp != self._stamps.get(repo.name) or repo.name not in settled or not clockless(repo):
                chosen.append(repo)
            self._stamps[repo.name] = stamp
        return chosen

    def close(self) -> None:
        """Let go of the store (the daemon's stop: its writer, closed last, then removes the write-ahead log)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def _data_version(self) -> int | None:
        try:
            if self._store is None:
                self._store = self.open_store()
            return self._store.data_version()
        except StoreError:
            return None
