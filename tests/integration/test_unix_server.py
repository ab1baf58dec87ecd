"""The daemon's control and judge sockets (adapters/unixserver.py): busy peers, and no file descriptor left.

Real: Unix sockets in a temp folder, the server's threads. Faked: the accept that fails for want of a file
descriptor (EMFILE), which a test cannot bring about in its own process without starving pytest too.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

from gitopsd.adapters.unixserver import UnixServer


class _Exhausted:
    """The listening socket of a process with no file descriptor left: every accept fails, counted."""

    def __init__(self, real: socket.socket):
        self.real, self.accepts = real, 0

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def shutdown(self, how: int) -> None:
        self.real.shutdown(how)

    def close(self) -> None:
        self.real.close()


def test_out_of_file_descriptors_the_server_waits_between_accepts_instead_of_spinning_a_core(short_tmp):
    server = UnixServer(short_tmp / "s.sock", "test", lambda conn: None, lambda conn: None, slots=1)
    exhausted = _Exhausted(server.sock)
    server.sock = exhausted  # type: ignore[assignment]
    server.start()
    time.sleep(1.0)
    server.close()
    assert 1 <= exhausted.accepts <= 20, f"{exhausted.accepts} accepts in a second"


def test_a_connection_beyond_the_slots_goes_to_busy_and_the_next_after_a_free_slot_is_answered(short_tmp):
    release, answered, busy = threading.Event(), [], []

    def answer(conn: socket.socket) -> None:
        answered.append(conn.recv(10))
        release.wait(10)

    server = UnixServer(short_tmp / "s.sock", "test", answer, lambda conn: busy.append(1), slots=1)
    server.start()
    try:
        first = socket.socket(socket.AF_UNIX)
        first.connect(str(server.path))
        first.sendall(b"one")
        deadline = time.monotonic() + 10
        while not answered and time.monotonic() < deadline:
            time.sleep(0.01)
        second = socket.socket(socket.AF_UNIX)
        second.connect(str(server.path))
        second.settimeout(10)
        assert second.recv(10) == b""  # closed by the server: busy
        assert busy == [1]
        release.set()
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the slot comes back once the first answer returns
            with socket.socket(socket.AF_UNIX) as third:
                third.connect(str(server.path))
                third.settimeout(10)
                try:
                    third.sendall(b"three")
                    third.recv(10)
                except OSError:
                    pass  # still busy: closed before it read
            if answered[-1] == b"three" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answered[-1] == b"three"
    finally:
        release.set()
        server.close()
    assert not server.path.exists()
