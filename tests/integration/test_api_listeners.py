"""The HTTP API's listener limits: slow request heads cut off, connections capped per client address, accept
errors told once a minute.

Real: uvicorn serving a small ASGI app on a loopback port through gitopsd/api/server.py, real client sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from typing import Any

from gitopsd.api import server


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def serving(monkeypatch, **limits: Any) -> tuple[server.ApiServer, int]:
    for name, value in limits.items():
        monkeypatch.setattr(server, name, value, raising=False)  # also before these limits existed
    sock = server.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    api = server._run(hello, sock, f"127.0.0.1:{port}", threading.Event())
    deadline = time.monotonic() + 10
    while not api.server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return api, port


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return conn.recv(4096)


def closed_within(conn: socket.socket, seconds: float) -> bool:
    conn.settimeout(seconds)
    try:
        return conn.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_connection_that_sends_no_whole_request_head_in_time_is_closed_while_others_are_answered(monkeypatch):
    api, port = serving(monkeypatch, HEAD_TIMEOUT=1.0)
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert get(port).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        for _ in range(3):  # headers trickle in, the head never ends
            slow.sendall(b"X-A: b\r\n")
            time.sleep(0.3)
        assert closed_within(silent, 3) and closed_within(slow, 3)
        assert time.monotonic() - started < 3
    finally:
        api.stop()


def test_connections_beyond_the_limit_per_client_address_are_closed_at_once_and_another_address_is_served(monkeypatch):
    api, port = serving(monkeypatch, MAX_PER_CLIENT=3)
    held = []
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert closed_within(extra, 2)
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as other:
            other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert other.recv(4096).startswith(b"HTTP/1.1 200")
        for conn in held:
            conn.close()
        time.sleep(0.3)
        assert get(port).startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()
        api.stop()


def test_accept_errors_are_one_line_a_minute_without_a_traceback(caplog):
    _protocol, on_error = server._guarded("127.0.0.1:1")
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="gitopsd.api"):
            for _ in range(100):
                on_error(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    },
                )
    finally:
        loop.close()
    lines = [r for r in caplog.records if r.name == "gitopsd.api"]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "cannot accept connections: Too many open files" in lines[0].getMessage()
