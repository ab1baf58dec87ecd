"""A TCP forwarder on loopback that can cut the network the way a lost link does (tests of the standby daemon).

`cut()` stops relaying in both directions without closing the client's sockets (the client sees
silence, no FIN, as when a cable or a route goes), takes new connections and never answers them,
and closes the server's side only after `server_notices` seconds (as PostgreSQL's TCP keepalives
drop a silent client's session).
"""

from __future__ import annotations

import socket
import threading
import time


class CuttableProxy:
    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cut_at: float | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held: list[socket.socket] = []  # connections taken after the cut: never answered
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_at is not None:
                with self._lock:
                    self._held.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            # The 5 s were for connecting only: left on the socket, a session idle for 5 s (a pooled connection
            # between two deployments, a busy machine) ended its relay in silence, and the daemon waited forever
            # for PostgreSQL's answer (test_standby's cut-off test, at load 10-15).
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(a, b), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if self.cut_at is not None:  # the link is down: what was in flight is lost, nothing is said
                return
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut(self, server_notices: float) -> None:
        """Lose the link now; the server side learns of it `server_notices` seconds later."""
        self.cut_at = time.monotonic()

        def close_servers() -> None:
            time.sleep(server_notices)
            with self._lock:
                for _client, server in self._pairs:
                    try:  # shutdown first: a close alone leaves the socket open while a relay thread waits in recv
                        server.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    server.close()

        threading.Thread(target=close_servers, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for pair in self._pairs:
                for sock in pair:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
            for held in self._held:
                held.close()
