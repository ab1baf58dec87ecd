"""`gitopsd status --json` as the daemon serves it on its control socket: the rows kept, made again only when needed.

At 1,000 repositories a `status` that reads the store and every branch costs about 150 ms of CPU (issue 28), so the
daemon keeps the JSON lines it last made and makes them again only when something they show may have moved: another
connection committed to the store (the data_version of the read-only store this module is given, so the daemon's
own writes count too), an environment branch or packed-refs changed (one stat each), the configuration was
reloaded, or a time they depend on came (a retry due, a watch's time left, a lock's end; at the latest MAX_AGE).
The rows are services/status.py's all_status, so the answer is what `status` reads from the store itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..adapters.store import Store
from ..core.settings import Config
from .readconfig import repository_problem
from .status import all_status

MAX_AGE = 60.0  # seconds: the rows are made again at least this often when asked for (what no fingerprint sees)
WATCH_AGE = 1.0  # seconds: a watching environment's row says how long is left


class StatusRows:
    """The rows of `status --json`, one JSON line per environment, kept until the store, a branch or the clock moves.

    `open_store`: a read-only store of its own (Store.of(config, readonly=True)), not the one the daemon writes with,
    opened at the first request.
    """

    def __init__(self, config: Callable[[], Config], open_store: Callable[[], Store], clock: Callable[[], float] = time.time):
        self.config, self.open_store, self.clock = config, open_store, clock
        self._store: Store | None = None
        self._lock = threading.Lock()  # one making at a time; the others wait and take its rows
        self._key: tuple[Any, ...] | None = None
        self._until = 0.0
        self._rows: list[tuple[str, str]] = []  # (repo, JSON line)
        self._states: list[tuple[str, str]] = []  # (repo, state) of each row
        self._paths: tuple[Config | None, list[str]] = (None, [])  # the ref files _fingerprint looks at, of that config
        self._whole: bytes | None = None  # every row's text as `status --json` prints it, once asked for raw

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's `status` op: {"ok": True, "json": the text `status --json` prints, "stamp": that of the
        configuration file as the daemon read it (the caller's may be newer)}; `repo` in the request: only its rows.
        `raw` true in the request: that text's bytes under "raw" instead, sent after the answer's line as they are
        (adapters/control.py): 2 MB of JSON lines at 1,000 repositories, not escaped into a JSON string and back."""
        repo = request.get("repo")
        config = self.config()
        raw = request.get("raw") is True
        with self._lock:
            rows = self._current(config)
            if raw and repo is None and self._whole is None:  # made with the rows it shows, kept as long as they are
                self._whole = _text([line for _name, line in rows]).encode()
            whole = self._whole
        if raw:
            text = whole if repo is None else _text([line for name, line in rows if name == repo]).encode()
            return {"ok": True, "raw": text, "stamp": config.stamp}
        return {"ok": True, "json": _text([line for name, line in rows if repo in (None, name)]), "stamp": config.stamp}

    def close(self) -> None:
        """Let go of the store (the daemon's stop: its writer, closed last, then removes the write-ahead log)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self.open_store()
        return self._store

    def _current(self, config: Config) -> list[tuple[str, str]]:
        key = self._fingerprint(config)
        now = self.clock()
        if key is None or key != self._key or now >= self._until:
            self._rows, self._until, self._states = self._make(config, now)
            self._key, self._whole = key, None
        return self._rows

    def in_state(self, state: str) -> set[str]:
        """The repositories with an environment in `state` as these rows say: the dashboard's ?state= filter, which
        read every environment's status per request (0.2-0.4 s at 1,000 repositories, issue 28)."""
        config = self.config()
        with self._lock:
            self._current(config)
            return {repo for repo, found in self._states if found == state}

    def _make(self, config: Config, now: float) -> tuple[list[tuple[str, str]], float, list[tuple[str, str]]]:
        unavailable = {r.name: problem for r in config.repositories if (problem := repository_problem(r.path))}
        rows = all_status(config, self.store, None, unavailable)
        until = now + MAX_AGE
        for row in rows:
            if row.next_retry_at is not None and row.next_retry_at > now:
                until = min(until, row.next_retry_at)
            if row.state == "watching":
                until = min(until, now + WATCH_AGE)
        for lock in self.store.all_locks(now):
            if lock.expires_at is not None and lock.expires_at > now:
                until = min(until, lock.expires_at)
        return [(row.repo, json.dumps(row.as_json())) for row in rows], until, [(row.repo, row.state) for row in rows]

    def _fingerprint(self, config: Config) -> tuple[Any, ...] | None:
        """What the rows were made from, cheaply: None when there is nothing to compare (PostgreSQL: made every time)."""
        version = self.store.data_version()
        if version is None:
            return None
        if self._paths[0] is not config:  # joined once per configuration: 4,000 joins were half the look's time
            paths = [
                os.path.join(repo.path, name)
                for repo in config.repositories
                for name in ("packed-refs", *(f"refs/heads/{e.branch}" for e in repo.environments))
            ]
            self._paths = (config, paths)
        return (id(config), version, *map(_stamp, self._paths[1]))


def _text(lines: list[str]) -> str:
    """The JSON lines as `status --json` prints them: one row a line inside the list's brackets."""
    return "[\n" + ",\n".join(lines) + "\n]" if lines else "[]"


def _stamp(path: str) -> tuple[int, int, int]:
    """A ref file's identity: a branch moves by renaming a new file onto it (new inode, new mtime)."""
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_mtime_ns, info.st_size)
