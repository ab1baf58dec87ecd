"""The daemon's control socket: commands whose caller's identity matters (sign-offs, release candidates, approvals).

The caller's identity is the kernel's word for the connecting process (SO_PEERCRED: its uid, as a
user name), never an environment variable, a flag or commit metadata. One request per
connection: a JSON object (at most 64 KiB) and the end of the caller's writing; one JSON answer (with bytes
that are not JSON, e.g. `status --json`'s rows: its line, then as many bytes as it says; controlraw.py reads those).
The handler serialises requests (HumanGates.handle holds one lock for this socket and the HTTP API),
so two approvals racing are counted once each, in order. Each connection is read in a thread of its own,
within TIMEOUT, so an idle or slow peer holds only its own thread; beyond MAX_CLIENTS at once, a
caller hears that the daemon is busy.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import INTERNAL, INVALID, UNAVAILABLE, Refused, refusal_answer
from .controlraw import serving, trusted
from .unixserver import UnixServer

log = logging.getLogger("gitopsd.control")

MAX_REQUEST = 64 * 1024
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
TIMEOUT = 10.0  # seconds a caller may take to send its request
MAX_CLIENTS = 32  # connections read or answered at once
BUSY = refusal_answer(
    Refused(
        f"the daemon is busy: {MAX_CLIENTS} control connections are open at once; try again in a few seconds",
        UNAVAILABLE,
        "daemon_busy",
    )
)
SEND = 'send one JSON object such as {"op": "status"} and end your writing'


class ControlError(Exception):
    """The daemon cannot be asked: not running, or the socket is not ours to use."""


def daemon_group(path: Path | str) -> str:
    """The group that may reach PATH (a socket in the daemon's folder), by name for usermod; gitopsd if none is seen."""
    import grp

    for seen in (Path(path), Path(path).parent):
        try:
            gid = os.stat(seen).st_gid
            if gid != 0:
                return grp.getgrgid(gid).gr_name
        except (OSError, KeyError):
            continue
    return "gitopsd"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


class ControlServer:
    """Accepts control requests and answers each with `handler(identity, request) -> answer`."""

    def __init__(self, path: Path, handler: Callable[[str, dict[str, Any]], dict[str, Any]], mode: int = 0o660):
        self.handler = handler
        self.server = UnixServer(Path(path), "control", self._answer, _say_busy, MAX_CLIENTS, mode)
        self.path = self.server.path

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()

    def _answer(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
        _pid, uid, _gid = _CREDS.unpack(creds)
        deadline = time.monotonic() + TIMEOUT  # for the whole request: a trickle cannot hold the thread longer
        data = b""
        while len(data) <= MAX_REQUEST:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_REQUEST:
            refused = Refused(f"the request is over {MAX_REQUEST // 1024} KiB; {SEND}", INVALID, "request_too_large")
            answer: dict[str, Any] = refusal_answer(refused)
        else:
            try:
                request = json.loads(data)
                if not isinstance(request, dict):
                    raise ValueError(f"a JSON {type(request).__name__}, not an object")
            except (ValueError, RecursionError) as exc:
                answer = refusal_answer(Refused(f"the request is not JSON ({str(exc)[:100]}); {SEND}", INVALID, "bad_request"))
            else:
                try:
                    answer = self.handler(user_name(uid), request)
                except Exception:  # a bug: the caller hears of it, the daemon goes on
                    log.exception("control request %s failed", str(request.get("op"))[:100])
                    refused = Refused("internal error in the daemon (its log says where)", INTERNAL, "internal_error")
                    answer = refusal_answer(refused)
        conn.settimeout(TIMEOUT)
        raw = answer.pop("raw", None) if isinstance(answer.get("raw"), bytes) else None
        if raw is None:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        else:  # the answer's line says how many bytes follow it as they are (controlraw.py reads them)
            conn.sendall(json.dumps({**answer, "bytes": len(raw)}).encode() + b"\n")
            conn.sendall(raw)


def _say_busy(conn: socket.socket) -> None:
    try:
        conn.settimeout(1.0)
        conn.sendall(json.dumps(BUSY).encode() + b"\n")
    except OSError:
        pass


def call(path: Path, request: dict[str, Any], timeout: float = 60.0, owner: Path | None = None) -> dict[str, Any]:
    """Send one request to the daemon's control socket and return its answer. `owner`: the daemon's own folder
    (state_dir): the socket must be served by its owner, root or the caller, else nothing is sent (ControlError)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError as exc:
            raise ControlError(
                f"the daemon is not running (no control socket at {path}); sign-offs and approvals "
                "are recorded by the daemon, which takes your identity from the socket"
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"you may not use {path}: ask an operator to add you to the daemon's group "
                f"(usermod -aG {daemon_group(path)} {user_name(os.getuid())}), then log in again"
            ) from exc
        except ConnectionRefusedError as exc:
            raise ControlError(f"the daemon is not running (nothing listens on {path})") from exc
        except BlockingIOError as exc:  # the socket's backlog is full (EAGAIN): not a database problem
            raise ControlError(
                f"the daemon is busy (its control socket {path} takes no more connections now); try again in a few seconds"
            ) from exc
        if owner is not None:
            _served_by_daemon(sock, path, owner)
        try:
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered ("busy") and closed before reading the request: its answer waits below
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # answered without reading our request ("busy"): the answer is whole
                break
            if not chunk:
                break
            data += chunk
    except TimeoutError as exc:
        raise ControlError(f"the daemon did not answer within {timeout:g}s") from exc
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ControlError("the daemon's answer was cut short (it may have stopped)") from exc
    return answer if isinstance(answer, dict) else {"ok": False, "error": "malformed answer"}


def _served_by_daemon(sock: socket.socket, path: Path, owner: Path) -> None:
    """Raise ControlError unless the process serving `sock` runs as root, the caller or `owner`'s owner (the daemon's
    user): a socket another user made at that path (a runtime_dir others may write) must not hear or answer requests."""
    uid, daemon = serving(sock, owner)
    if not trusted(uid, daemon):
        raise ControlError(
            f"{path} is served by {user_name(uid)}, not by the daemon's user {user_name(daemon)} (the owner of {owner}): "
            "someone else made that socket, and nothing was sent to it; ask an operator to remove it and to keep "
            "runtime_dir in a folder only the daemon's user may write (as /run/gitopsd)"
        )
