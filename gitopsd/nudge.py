"""The nudge: a datagram on the daemon's Unix socket saying "look at this repository".

Sending never fails a push: if the daemon is down, the sweep catches up when it is back. The
daemon reads the sender's uid from the kernel (SCM_CREDENTIALS), so who sent a nudge is never
taken on the sender's word alone.
"""
from __future__ import annotations

import json
import os
import pwd
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAX_DATAGRAM = 65_000
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Nudge:
    repo: str                     # repository path as the sender saw it
    trigger: str                  # push | rollback | retry | cli
    actor: str | None = None      # who the transport says pushed (GL_USER, REMOTE_USER, ...)
    commits: tuple[str, ...] = field(default_factory=tuple)   # new heads this nudge is about
    sender_uid: int | None = None  # filled in by the receiver from the kernel
    reason: str | None = None      # e.g. an emergency override's reason, recorded with the deployment

    def who(self) -> str:
        """The identity to record: the transport's user, checked against the kernel's uid."""
        unix = user_name(self.sender_uid) if self.sender_uid is not None else None
        if self.actor and unix and self.actor != unix:
            return f"{self.actor} (via {unix})"
        return self.actor or unix or "unknown"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def send(socket_path: Path, nudge: Nudge) -> bool:
    """Send a nudge; return False (never raise) if no daemon is listening."""
    payload = json.dumps({"repo": nudge.repo, "trigger": nudge.trigger, "actor": nudge.actor,
                          "commits": list(nudge.commits)[:200], "reason": nudge.reason}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.sendto(payload[:MAX_DATAGRAM], str(socket_path))
        return True
    except OSError:
        return False


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
        self.sock.settimeout(0.5)  # so the reading thread notices close() promptly
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
                _pid, uid, _gid = _CREDS.unpack(cdata[:_CREDS.size])
        try:
            raw = json.loads(data)
            commits = tuple(c for c in raw.get("commits", []) if isinstance(c, str) and len(c) == 40
                            and all(ch in "0123456789abcdef" for ch in c))
            actor, reason = raw.get("actor"), raw.get("reason")
            return Nudge(repo=str(raw["repo"]), trigger=str(raw.get("trigger", "push"))[:20],
                         actor=str(actor)[:100] if actor else None, commits=commits, sender_uid=uid,
                         reason=str(reason)[:300] if reason else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
