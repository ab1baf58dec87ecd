"""A playbook run's only way out of its network: SSH to the hosts its inventory names (sandbox.playbook_network).

With `ssh-only` (the default) a playbook run has a network namespace of its own: its loopback is its own and nothing
listens there, so no task, lookup or plugin of the tree reaches the daemon's API, its dashboard, a proxy or any other
service of the deploy server. ssh gets out through this forwarder: the run's ssh config makes libexec/ssh-proxy its
`ProxyCommand`, which names host and port on a Unix socket in the run's folder; the daemon, outside the sandbox,
connects only to an address an inventory host (or a jump host its ssh args name) resolves to, never to one the
daemon listens on, and relays the bytes once the server has greeted it as an SSH server does (so an inventory
naming a web server, a database or a proxy on this machine gets no tunnel to it). ssh itself (host keys, the run's agent, ProxyJump) is unchanged. The
inventory is read (in the sandbox) at the run's first SSH connection: runs with only local hosts never pay for it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.errors import GitopsdError
from ..core.types import HostInfo

log = logging.getLogger("gitopsd.sshgate")

SOCKET_NAME = "ssh-gate.sock"  # in the run's folder; the sandbox shows it as sandbox.SSH_GATE_SOCKET
# What the forwarder needs to know of each host, read from the inventory (in the sandbox) before the run.
VARIABLES = (
    "ansible_host",
    "ansible_ssh_host",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_connection",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_ssh_args",
)
ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")  # where an inventory names jump hosts
LOCAL = ("local", "ansible.builtin.local")
JUMP = re.compile(r"(?:ProxyJump[= ]\s*|-J\s*)(\S+)")
REQUEST = re.compile(r"([A-Za-z0-9._:%\[\]-]{1,255}) ([0-9]{1,5})\n")
WILDCARD = ("", "0.0.0.0", "::")  # noqa: S104 (addresses compared with, never bound)
# A run's connections served at once (a thread and two descriptors each, in the daemon): a run that opens thousands
# must not take the descriptors and threads every other environment's deployments need. Ansible keeps one
# ControlMaster per host open through the play (ControlPersist), one more while a jump host's starts: MAX_OPEN, or
# twice the run's SSH addresses once they are known, whichever is more.
MAX_OPEN = 256  # forks=100 (a run's processes allow it) start that many masters at once, before the inventory is read
SAID_AT_MOST = 20  # distinct refusals of one run logged (and kept in `refused`): a run that loops cannot flood the log


def _port(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 0 < int(value) < 65536 else None


def targets(hosts: list[HostInfo]) -> set[tuple[str, int]]:
    """The (host, port) pairs a run may reach over SSH: each non-local inventory host, and the jump hosts
    (`ProxyJump=` or `-J`) its ansible_ssh_common_args, ansible_ssh_extra_args or ansible_ssh_args name."""
    found: set[tuple[str, int]] = set()
    for host in hosts:
        values = host.vars
        if values.get("ansible_connection") in LOCAL:
            continue
        found.add(_destination(host))
        found |= _jumps(host)
    return found


def hops(hosts: list[HostInfo]) -> dict[tuple[str, int], set[tuple[str, int]]]:
    """The (host, port) each jump host an inventory names leads to: ssh asks the forwarder for the jump only, and
    reaches what lies behind it through the jump host's own network, which the forwarder never sees."""
    found: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for host in hosts:
        if host.vars.get("ansible_connection") not in LOCAL:
            for jump in _jumps(host):
                found.setdefault(jump, set()).add(_destination(host))
    return found


def _destination(host: HostInfo) -> tuple[str, int]:
    values = host.vars
    # The ssh connection takes the old ansible_ssh_* names over the new ones when both are set (as `hosts trust`
    # reads them): the pair the connection will use is the first of each.
    port = _port(values.get("ansible_ssh_port") or values.get("ansible_port")) or 22
    return (values.get("ansible_ssh_host") or values.get("ansible_host") or host.name, port)


def _jumps(host: HostInfo) -> set[tuple[str, int]]:
    found = set()
    for key in ARGS:
        for jumps in JUMP.findall(host.vars.get(key, "")):
            for jump in jumps.strip("'\"").split(","):
                address = jump.removeprefix("ssh://").rpartition("@")[2]
                name, colon, port_text = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
                found.add((name or address, (_port(port_text) or 22) if colon else 22))
    return found


def resolve(host: str, port: int) -> set[tuple[str, int]]:
    """The addresses `host` resolves to now, with `port`; empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {(str(ipaddress.ip_address(str(info[4][0]).split("%")[0])), port) for info in infos}


class Forwarder:
    """The socket a playbook run's ssh connects through, to what `allowed` returns (asked once, at the first
    connection; a GitopsdError it raises refuses every connection) and never to a `forbidden` address."""

    def __init__(
        self,
        path: Path,
        allowed: Callable[[], set[tuple[str, int]]],
        forbidden: set[tuple[str, int]],
        label: str,
        run_as: tuple[int, int] | None = None,
        guarded: Callable[[], dict[tuple[str, int], str]] | None = None,
        through: Callable[[], dict[tuple[str, int], set[tuple[str, int]]]] | None = None,
    ):
        self.path, self.label, self.run_as = path, label, run_as
        self._targets: Callable[[], set[tuple[str, int]]] | None = allowed
        # What each jump host of the inventory leads to (hops): a jump to a guarded host is refused as that host is.
        self._through = through
        self.leads: dict[tuple[str, int], tuple[str, str]] = {}  # jump address -> (the host behind it, its owner)
        self.allowed: set[tuple[str, int]] = set()
        # Addresses of a later environment's inventory, and that environment (guarded.py): asked with `allowed`.
        self._guarded = guarded
        self.guarded: dict[tuple[str, int], str] = {}
        self.unknown: str | None = None  # why the allowed hosts are unknown
        self.forbidden = {a for host, port in forbidden if host not in WILDCARD for a in resolve(host, port)}
        self.forbidden_ports = {port for host, port in forbidden if host in WILDCARD}
        self.refused: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._open: set[socket.socket] = set()
        self._serving = 0
        self._unsaid = 0  # refusals not logged (past SAID_AT_MOST, or said before): counted in the last line
        self._lock = threading.Lock()

    def __enter__(self) -> Forwarder:
        # Bound through the folder's descriptor: a socket's path is limited to 107 bytes, a run's folder is not.
        folder = os.open(self.path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            self._server.bind(f"/proc/self/fd/{folder}/{self.path.name}")
        finally:
            os.close(folder)
        if self.run_as is not None:
            os.chown(self.path, *self.run_as)
        os.chmod(self.path, 0o600)
        self._server.listen(16)
        threading.Thread(target=self._accept, name=f"ssh-gate {self.label}", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()
        with self._lock:
            for conn in self._open:
                conn.close()
            if self._unsaid:
                log.warning("playbook run %s: refused %d more SSH connections, as said above", self.label, self._unsaid)
                self._unsaid = 0
        self.path.unlink(missing_ok=True)

    def _refuse(self, conn: socket.socket, why: str) -> None:
        """Answer `why` to the run's ssh-proxy (which shows it) and log it once per run."""
        with self._lock:
            if why in self.refused or len(self.refused) >= SAID_AT_MOST:
                self._unsaid += 1
            else:
                self.refused.append(why)
                log.warning("playbook run %s: refused an SSH connection: %s", self.label, why)
        try:
            conn.sendall(f"refused: {why}\n".encode())
        except OSError:
            pass

    def judge(self, host: str, port: int) -> tuple[str, int] | str:
        """The address to connect to for `host`:`port`, or why not."""
        with self._lock:
            if self._targets is not None:
                # Both read while ssh waits for the server's greeting (its ConnectTimeout): side by side.
                with ThreadPoolExecutor(max_workers=1) as pool:
                    later = pool.submit(self._guarded) if self._guarded is not None else None
                    try:
                        self.allowed = {a for name, number in self._targets() for a in resolve(name, number)}
                    except GitopsdError as exc:
                        self.unknown = str(exc)
                    try:
                        self.guarded = later.result() if later is not None else {}
                    except Exception as exc:  # noqa: BLE001 (whatever failed, those hosts are unknown: refuse every connection)
                        self.unknown = self.unknown or f"the inventory of a later environment cannot be read: {exc}"
                if self.unknown is None and self.guarded and self._through is not None:
                    self.leads = self._leads(self._through())
                self._targets = self._guarded = self._through = None
        if self.unknown is not None:
            return f"the hosts this run may reach over SSH are unknown: {self.unknown}"
        addresses = resolve(host, port)
        if not addresses:
            return f"{host} does not resolve"
        if any(a in self.forbidden or a[1] in self.forbidden_ports for a in addresses):
            return f"{host}:{port} is where gitopsd itself listens"
        owner = next((self.guarded[a] for a in sorted(addresses) if a in self.guarded), None)
        behind = next((self.leads[a] for a in sorted(addresses) if a in self.leads), None)
        who = f"{host}:{port}"
        if owner is None and behind is not None:  # ssh would reach that host through this one
            who, owner = f"{host}:{port} is the jump host to {behind[0]}, which", behind[1]
        if owner is not None:
            return (
                f"{who} is a host of {owner}'s inventory, which {owner}'s own tree does not share with this "
                f"environment: a push here may not deploy to {owner}'s hosts (a host meant for both: promote it to "
                f"{owner} first, or name it in sandbox.shared_hosts)"
            )
        usable = sorted(a for a in addresses if a in self.allowed)
        if not usable:
            return (
                f"{host}:{port} is not a host of this deployment's inventory (sandbox.playbook_network: ssh-only "
                "lets a playbook run reach only those, over SSH)"
            )
        return usable[0]

    def _leads(self, through: dict[tuple[str, int], set[tuple[str, int]]]) -> dict[tuple[str, int], tuple[str, str]]:
        """The jump addresses that lead to a guarded host: (that host, its owner)."""
        found: dict[tuple[str, int], tuple[str, str]] = {}
        for (name, port), behind in sorted(through.items()):
            for host, number in sorted(behind):
                owner = next((self.guarded[a] for a in sorted(resolve(host, number)) if a in self.guarded), None)
                if owner is not None:
                    for address in resolve(name, port):
                        found.setdefault(address, (f"{host}:{number}", owner))
        return found

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError as exc:
                if self._server.fileno() == -1:  # closed: the run is over
                    return
                # Out of descriptors (EMFILE): this run's ssh waits in the backlog until some are free.
                log.warning("playbook run %s: its SSH forwarder cannot take a connection now: %s", self.label, exc)
                time.sleep(1)
                continue
            with self._lock:
                most = max(MAX_OPEN, 2 * len(self.allowed))
                busy = self._serving >= most
                self._serving += 0 if busy else 1
            if busy:
                conn.settimeout(1)  # the line fits the socket's buffer; never wait on a run that does not read
                self._refuse(conn, f"{most} SSH connections of this run are open already, the most one run may have")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name=f"ssh-gate {self.label}", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
        upstream = None
        try:
            conn.settimeout(10)
            request = b""
            while not request.endswith(b"\n") and len(request) < 300:
                chunk = conn.recv(300 - len(request))
                if not chunk:
                    return
                request += chunk
            match = REQUEST.fullmatch(request.decode("ascii", "replace"))
            verdict = self.judge(match.group(1), int(match.group(2))) if match else "a malformed request"
            if isinstance(verdict, str):
                self._refuse(conn, verdict)
                return
            try:
                upstream = socket.create_connection(verdict, timeout=10)
            except OSError as exc:
                conn.sendall(f"cannot connect to {verdict[0]}:{verdict[1]}: {exc.strerror or exc}\n".encode())
                return
            with self._lock:
                self._open.add(upstream)
            greeting = _greeting(upstream)
            if greeting is None:
                self._refuse(conn, f"{verdict[0]}:{verdict[1]} does not answer as an SSH server")
                return
            conn.sendall(b"ok\n" + greeting)
            conn.settimeout(None)
            upstream.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join()
        except OSError:
            return
        finally:
            with self._lock:
                self._serving -= 1
                self._open.discard(conn)
                if upstream is not None:
                    self._open.discard(upstream)
            conn.close()
            if upstream is not None:
                upstream.close()


def _greeting(upstream: socket.socket) -> bytes | None:
    """What a server sent up to its SSH identification line (RFC 4253: `SSH-2.0-...`, other lines may come
    first), or None when it sends something else, nothing in 10 s, or closes."""
    received = b""
    try:
        while len(received) < 8192:
            chunk = upstream.recv(8192 - len(received))
            if not chunk:
                return None
            received += chunk
            if any(line.startswith(b"SSH-") for line in received.split(b"\n")[:-1]):
                return received
    except OSError:
        return None
    return None


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then end `sink`'s writing half."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
