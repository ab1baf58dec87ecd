"""The control socket asked for an answer with bytes after its line (control.py): `status --json`'s rows (issue 28).

Only socket and json are imported: `status --json` runs this before the rest of the command line is imported, and
at 1,000 repositories its 2 MB come as they are instead of escaped into a JSON string, decoded and printed again.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

TYPE_CHECKING = False  # true for mypy only: `typing` costs a quick command
if TYPE_CHECKING:
    from typing import Any


def serving(sock: socket.socket, owner: Path) -> tuple[int, int]:
    """(the uid of the process serving the connected `sock`, the daemon's uid: `owner`'s owner, root if unknown)."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    try:
        daemon = os.stat(owner).st_uid
    except OSError:
        daemon = 0
    return uid, daemon


def trusted(uid: int, daemon: int) -> bool:
    """A control socket may be asked when served by root, the caller or the daemon's user: one that another user made
    at that path (a runtime_dir others may write) must not hear or answer requests."""
    return uid in (0, os.geteuid(), daemon)


def ask(path: Path, request: dict[str, Any], timeout: float, owner: Path) -> tuple[dict[str, Any], bytes] | None:
    """(the answer's JSON object, the bytes after it) of `request` with "raw": true; None when the socket is served by
    another user than root, the caller or `owner`'s owner (the state folder's: the daemon's user), when the answer has
    no such bytes (an older daemon, a refusal) or was cut short. Raise OSError when the socket cannot be asked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        if not trusted(*serving(sock, owner)):  # someone else's socket at that path: nothing sent
            return None
        try:
            sock.sendall(json.dumps({**request, "raw": True}).encode())
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered ("busy") before reading the request: that answer has no bytes, so None below
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    data = b"".join(chunks)
    line, _newline, rest = data.partition(b"\n")
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("bytes") != len(rest):
        return None
    return answer, rest
