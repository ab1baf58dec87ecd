"""The daemon judges pushes for the hook's shim, so that a push starts no Python (issue 28, docs/trust-model.md).

hooks/pre-receive describes the push (its ref updates, the quarantine git keeps its objects in, its
push options and the transport's identity variables) on the judge socket, through the one Unix-socket
client every git has: `git credential-cache --socket PATH get` sends its standard input after two
lines of its own and prints what comes back. Here the gate's own code (gate/receive.py) judges it in
a thread of its own, with that push as the thread's circumstances (base/hookenv.py): the same rules,
the same words, the same nudges, without the 10-20 ms of a Python starting and importing.

The shim's word is taken no further than the hook's own would be: the kernel says who connected
(SO_PEERCRED), the socket is the daemon group's alone (0660, like the nudge socket), the repository,
config and database must be this daemon's, and the quarantine must be a folder git made in that
repository's objects. Anything else, or anything that fails here, gets no verdict: the shim then
starts Python, which judges as it always did. The daemon is never the only guard either: it judges
again before it deploys (core/judging.py).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from ..adapters import signing
from ..adapters.unixserver import UnixServer
from ..base import hookenv
from ..config import load
from ..core.settings import Config
from ..gate import receive
from ..gate.nudge import Nudge
from ..gate.push import REQUEST_PREFIX

log = logging.getLogger("gitopsd.judge")

MAGIC = "gitopsd-judge-1"
MAX_REQUEST = 1 << 20  # bytes: a push of ~10,000 refs; a bigger one is judged by the hook's own Python
MAX_OPTIONS = 100
BUSY = 8  # pushes judged at once; the next ones are judged by their hooks' Python
READ_TIMEOUT = 5.0  # seconds for the shim to send its whole request (a slow sender holds no slot longer)
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
QUARANTINE_PREFIXES = ("tmp_objdir-incoming-", "incoming-")  # git's names for a push's quarantine folder


class Request:
    """A push as the shim describes it: key=value lines, then `input` and git's ref-update lines as pre-receive got them."""

    __slots__ = ("fields", "options", "identity", "updates")

    def __init__(self, fields: dict[str, str], options: list[str], identity: dict[str, str], updates: str):
        self.fields, self.options, self.identity, self.updates = fields, options, identity, updates

    @classmethod
    def parse(cls, data: bytes) -> Request | None:
        """None for anything but a well-formed request (after credential-cache's own `action=`/`timeout=` lines)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        head, sep, updates = text.partition("\ninput\n")
        lines = head.split("\n")
        while lines and lines[0].startswith(("action=", "timeout=")):
            lines.pop(0)
        if not sep or not lines or lines[0] != MAGIC:
            return None
        fields: dict[str, str] = {}
        options: list[str] = []
        identity: dict[str, str] = {}
        for line in lines[1:]:
            key, eq, value = line.partition("=")
            if not eq or "\0" in value:
                return None
            if key == "option":
                options.append(value)
            elif key == "identity":
                name, eq, value = value.partition("=")
                if not eq or not name.isidentifier() or not name.isascii():
                    return None
                identity[name] = value
            elif key in ("config", "database", "repository", "quarantine", "objects", "alternates", "names"):
                fields[key] = value
            else:
                return None
        if len(options) > MAX_OPTIONS:
            return None
        return cls(fields, options, identity, updates)


def quarantine_environ(request: Request, repo_path: str) -> dict[str, str] | None:
    """Git's quarantine variables for this push, checked to be the folder git made for it; None when they are not."""
    quarantine = request.fields.get("quarantine", "")
    objects, alternates = request.fields.get("objects", ""), request.fields.get("alternates", "")
    if not quarantine:
        return {} if not objects and not alternates else None
    own = os.path.realpath(os.path.join(repo_path, "objects"))
    folder = os.path.realpath(quarantine)
    if os.path.dirname(folder) != own or not os.path.basename(folder).startswith(QUARANTINE_PREFIXES):
        return None
    if os.path.realpath(objects) != folder or os.path.realpath(alternates) != own:
        return None
    if not os.access(folder, os.R_OK | os.X_OK):
        return None  # the shim could not open it to this daemon's group: its Python judges
    return {"GIT_QUARANTINE_PATH": folder, "GIT_OBJECT_DIRECTORY": folder, "GIT_ALTERNATE_OBJECT_DIRECTORIES": own}


class Judge:
    """The judge socket and the threads that answer it; `heard` is where the gate's nudges go (the daemon's intake)."""

    def __init__(self, config: Config, heard: Callable[[Nudge], None], path: Path | None = None):
        self.config, self.heard = config, heard
        # Each repository by its real path, once: a thousand repositories' paths are not resolved again per push.
        self.repositories = {os.path.realpath(repo.path): repo for repo in config.repositories}
        # Busy: the connection is closed unanswered, the shim gets no verdict and its Python judges.
        self.server = UnixServer(Path(path or config.judge_socket), "judge", self._answer, lambda _conn: None, BUSY)
        self.path = self.server.path
        self.server.start()

    def close(self) -> None:
        self.server.close()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(READ_TIMEOUT)
        _pid, uid, _gid = _CREDS.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
        data, deadline = bytearray(), time.monotonic() + READ_TIMEOUT
        while len(data) <= MAX_REQUEST:
            conn.settimeout(max(0.01, deadline - time.monotonic()))  # the whole request, not each read
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        request = Request.parse(bytes(data)) if len(data) <= MAX_REQUEST else None
        nudges: list[Nudge] = []
        verdict = self.judge(request, uid, nudges.append) if request is not None else None
        if verdict is not None:
            code, said = verdict
            word = "accept" if code == 0 else "refuse"
            said += "" if not said or said.endswith("\n") else "\n"
            conn.sendall(f"gitopsd-judge {word}\n{said}gitopsd-judge end\n".encode())
        conn.close()  # the shim has its answer: the push goes on while its nudges are heard
        for nudge in nudges:  # after the answer, as the hook's datagrams reach the daemon after it
            # As a datagram would arrive: every field bounded and checked, the sender the kernel's word.
            heard = Nudge.decode(nudge.encode(), uid)
            if heard is not None:
                self.heard(heard)

    def judge(self, request: Request, uid: int, deliver: Callable[[Nudge], None]) -> tuple[int, str] | None:
        """(0 or 1, what the pusher is told) for this push; None when the shim's Python must judge it instead.

        The nudges the gate sends go to `deliver`, to be heard once the shim has its answer."""
        config = self.config
        fields = request.fields
        if os.path.realpath(fields.get("config", "")) != os.path.realpath(config.source):
            return None  # another configuration's repository: not this daemon's to judge
        if fields.get("database", "") != str(config.database):
            return None
        repo = self.repositories.get(os.path.realpath(fields.get("repository", "") or "/nonexistent"))
        if repo is None or any(line.split(" ")[-1].startswith(REQUEST_PREFIX) for line in request.updates.split("\n")):
            return None  # a promotion request writes a commit as the pusher: the hook's own Python makes it
        repo_path = os.path.realpath(repo.path)
        quarantine = quarantine_environ(request, repo_path)
        if quarantine is None:
            return None
        out = io.StringIO()
        source, database = fields["config"], fields["database"]  # as the hook names them (the same files)
        found = receive.gate_config(source, database, repo_path, out, load)
        if found is None or found[0].identity_env != tuple(fields.get("names", "").split()):
            return None  # an unreadable config, or identity variables the shim did not send: Python says and judges
        hidden = set(found[0].identity_env) | {"GIT_PUSH_OPTION_COUNT", "GIT_PUSH_CERT"}
        environ = {k: v for k, v in os.environ.items() if k not in hidden and not k.startswith(("GIT_PUSH_", "GIT_QUARANTINE"))}
        environ.update(quarantine)
        environ.update({name: value for name, value in request.identity.items() if name in found[0].identity_env})
        environ["GIT_PUSH_OPTION_COUNT"] = str(len(request.options))
        environ.update({f"GIT_PUSH_OPTION_{i}": option for i, option in enumerate(request.options)})

        token = hookenv.judging(hookenv.Push(environ, uid, repo_path, deliver))
        try:
            code = receive.pre_receive(
                source,
                database,
                request.updates,
                out,
                load_config=load,
                ssh_crypto=signing.ssh_crypto,
                gate=found,
            )
        except Exception:  # the hook's own Python judges what this cannot
            log.exception("judging a push to %s failed; its hook judges it", repo.name)
            return None
        finally:
            hookenv.done(token)
        return (code, out.getvalue()) if code in (0, 1) else None
