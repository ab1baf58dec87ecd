"""A Unix stream socket served by a thread of its own: the daemon's control socket and its judge socket.

The socket is made afresh at its path (one a killed daemon left is replaced) with the mode given, before the
daemon says it is ready. Each connection is answered in a thread of its own, at most `slots` at once; the
connection beyond them goes to `busy` (which says so, or just closes it). Out of file descriptors, accept fails:
the server waits a tenth of a second, the peers in the listen backlog, instead of spinning on the error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gitopsd.sockets")

EXHAUSTED_PAUSE = 0.1  # seconds between accepts that fail (no file descriptor left for the connection)


class UnixServer:
    """Listens on `path` and hands each connection to `answer` (which closes it) in a thread named `name`-client."""

    def __init__(
        self,
        path: Path,
        name: str,
        answer: Callable[[socket.socket], None],
        busy: Callable[[socket.socket], None],
        slots: int,
        mode: int = 0o660,
        backlog: int = 64,
    ):
        self.path, self.name, self.answer, self.busy = Path(path), name, answer, busy
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, mode)
        self.sock.listen(backlog)
        self.closed = False
        self._slots = threading.BoundedSemaphore(slots)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop accepting (the accepting thread wakes at once), remove the socket, and wait for that thread."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (it blocks: no polling timeout)
        except OSError:
            pass
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(EXHAUSTED_PAUSE)  # out of file descriptors: the peer waits in the backlog
                continue
            if not self._slots.acquire(blocking=False):
                try:
                    self.busy(conn)
                finally:
                    conn.close()
                continue
            threading.Thread(target=self._one, args=(conn,), name=f"{self.name}-client", daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.answer(conn)
        except OSError as exc:
            log.debug("%s connection ended early: %s", self.name, exc)
        finally:
            self._slots.release()
