"""Filesystem watching of each repository's refs (watchdog lives here and nowhere else).

An event is only a hint to look: a branch update is a rename of `<ref>.lock` onto the ref, and
`git pack-refs` deletes loose refs that still exist. The reconciler re-reads Git either way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


WRITES = {"moved", "created", "deleted", "modified", "closed"}


class _RefsHandler(FileSystemEventHandler):
    def __init__(self, repo: str, callback: Callable[[str], None]):
        self.repo = repo
        self.callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in WRITES:
            return  # reads of refs (ours included) must not trigger looks: that would loop
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        relevant = [p for p in paths if p and not p.endswith((".lock", "packed-refs.new"))]
        if any("/refs/" in p or p.endswith("packed-refs") for p in relevant):
            self.callback(self.repo)


class RefWatcher:
    """Calls `callback(repo_name)` when anything under refs/ or packed-refs may have changed."""

    def __init__(self, repos: dict[str, Path], callback: Callable[[str], None]):
        self.observer = Observer()
        for name, path in repos.items():
            handler = _RefsHandler(name, callback)
            refs = path / "refs"
            if refs.is_dir():
                self.observer.schedule(handler, str(refs), recursive=True)
            self.observer.schedule(handler, str(path), recursive=False)  # packed-refs lives here
        self.observer.daemon = True

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
