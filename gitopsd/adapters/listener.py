"""The daemon's end of the nudge socket (see gate/nudge.py for the message and the sending side)."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from ..gate.nudge import MAX_DATAGRAM, Nudge

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Listener:
    """The daemon's end of the nudge socket."""

    def __init__(self, socket_path: Path, mode: int = 0o660):
        self.path = Path(socket_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(self.path))
        self.closed = False
        os.chmod(self.path, mode)

    def receive(self) -> Nudge | None:
        """Block until a datagram arrives; return it, or None for garbage or a closed socket."""
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_CREDS.size))
        except OSError:
            return None
        uid = None
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= _CREDS.size:
                _pid, uid, _gid = _CREDS.unpack(cdata[: _CREDS.size])
        return Nudge.decode(data, uid)

    def close(self) -> None:
        self.closed = True
        try:
            # Wakes the reading thread's receive at once (it blocks: no polling timeout to wake it twice a second).
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
