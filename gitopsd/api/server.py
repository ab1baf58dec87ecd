"""uvicorn serving the API app in a thread of the daemon: the one module that imports uvicorn.

The daemon owns the signals (uvicorn installs none outside the main thread) and the log (uvicorn's
own lines are quieted; api/app.py logs each request at DEBUG). The API is optional: when its
address cannot be bound, the daemon logs why and goes on deploying without it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..adapters.store import Store
from ..core.settings import Api, Config
from ..services.tokens import TokenCheck
from .app import create_app, create_standby_app

log = logging.getLogger("gitopsd.api")

# Listeners cannot take the daemon down: connections are capped in all (at most a quarter of the open files the
# daemon may have) and per client address (beyond, they are closed at once), a request's head must arrive within
# HEAD_TIMEOUT (slow headers), an idle keep-alive connection ends after KEEP_ALIVE, and accept errors (out of
# file descriptors) are one line a minute, not a traceback each.
MAX_CONNECTIONS = 512
MAX_PER_CLIENT = 64
HEAD_TIMEOUT = 10.0
KEEP_ALIVE = 5
SAY_EVERY = 60.0


class _Sayer:
    """Log each kind of trouble at most once per SAY_EVERY seconds, with how often it happened meanwhile."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.count: Counter[str] = Counter()

    def say(self, kind: str, line: str) -> None:
        self.count[kind] += 1
        now = time.monotonic()
        if now - self.last.get(kind, -SAY_EVERY) >= SAY_EVERY:
            n, self.count[kind], self.last[kind] = self.count[kind], 0, now
            log.warning("%s%s", line, f" ({n} times since the last such line)" if n > 1 else "")


def max_connections() -> int:
    """MAX_CONNECTIONS, or a quarter of the open files this process may have if that is less: runs need theirs."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft // 4))


def _guarded(address: str) -> tuple[type[H11Protocol], Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]]:
    """uvicorn's HTTP/1.1 protocol with the limits above, and the event loop's exception handler for accept errors."""
    per_client: Counter[str] = Counter()
    most = max_connections()
    sayer = _Sayer()

    class Guarded(H11Protocol):
        _counted: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
            if sum(per_client.values()) >= most or per_client[client] >= MAX_PER_CLIENT:
                sayer.say(
                    "full",
                    f"the HTTP API on {address} refuses connections: {sum(per_client.values())} open "
                    f"({per_client[client]} from {client}; at most {most}, "
                    f"{MAX_PER_CLIENT} per client address)",
                )
                transport.abort()
                return
            per_client[client] += 1
            self._counted = client
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late)

        def _head_late(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no whole request head yet
                sayer.say(
                    "slow",
                    f"the HTTP API on {address} closed connections that sent no whole request head within {HEAD_TIMEOUT:g}s",
                )
                self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted is None:
                return  # refused in connection_made: uvicorn never knew of it
            per_client[self._counted] -= 1
            if per_client[self._counted] <= 0:
                del per_client[self._counted]
            self._counted = None
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            sayer.say(
                "accept",
                f"the HTTP API on {address} cannot accept connections: {exc.strerror or exc}; it tries again each second",
            )
        else:
            loop.default_exception_handler(context)

    return Guarded, on_error


class _Server(uvicorn.Server):
    """uvicorn's server with the event loop's exception handler set before it listens."""

    on_error: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None] | None = None

    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self.on_error)
        await super().serve(sockets)

    async def main_loop(self) -> None:
        """uvicorn's, ticking once a second instead of ten times (its Date header is to the second; an idle daemon's
        wake-ups, issue 28), and at once when `exit_soon` is called."""
        self._stop, self._loop = asyncio.Event(), asyncio.get_running_loop()
        while not await self.on_tick(0):  # tick 0: the Date header is made again each time
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except TimeoutError:
                pass

    def exit_soon(self) -> None:
        """Stop serving (from another thread): the main loop wakes now, not at its next tick."""
        self.should_exit = True
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has ended already
                pass


class ApiServer:
    """A running API: where it listens, and how to stop it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, address: str, stopping: threading.Event | None = None):
        self.server, self.thread, self.address = server, thread, address
        self.stopping = stopping or threading.Event()  # ends the dashboard's event streams, which never end alone
        self.closing: list[Callable[[], None]] = []  # what the apps close once the server has stopped

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking requests, let those in flight finish (up to `timeout`), and end the thread."""
        self.stopping.set()
        if isinstance(self.server, _Server):
            self.server.exit_soon()
        else:
            self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
        for close in self.closing:
            close()


def listen_address(api: Api) -> str:
    """host:port of the API, an IPv6 host in brackets."""
    return f"[{api.host}]:{api.port}" if ":" in api.host else f"{api.host}:{api.port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is one). Raise OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # socket.create_server's say 0. Without it every answer waited ~40 ms (Nagle and delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    config: Callable[[], Config],
    store: Store,
    on_status: Callable[[str], None],
    human_gates: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
    dashboard: Callable[..., Any] | None = None,
) -> ApiServer | None:
    """Start the API of `config().api` in a thread; None (and one error line) when it cannot listen.

    `human_gates` is the daemon's HumanGates.handle: the sign-offs and approvals the API takes go there;
    `metrics` gives /metrics its text and content type (gitopsd/services/metrics.py); `dashboard` is web.app.create_web_app,
    handed in by the daemon so that the API never imports the dashboard (it serves / when `config().web` is set)."""
    api = config().api
    assert api is not None
    address = listen_address(api)
    try:
        sock = bind(api.host, api.port)
    except OSError as exc:
        log.error(
            "the HTTP API is not started: cannot listen on %s (%s); free that port or set api.listen in %s "
            "to a free address, then restart gitopsd. Deployments go on without the API.",
            address,
            exc.strerror or exc,
            config().source,
        )
        return None

    def tokens_file() -> Path:
        current = config().api
        return current.tokens_file if current is not None else api.tokens_file

    app = create_app(config, store, TokenCheck(tokens_file), on_status, human_gates, metrics)
    stopping = threading.Event()
    closing: list[Callable[[], None]] = []
    web = getattr(config(), "web", None) if dashboard is not None else None
    if web is not None:  # the dashboard at /, the API and /metrics where they were (docs/web.md)
        assert dashboard is not None
        app = dashboard(config, human_gates=human_gates, api=app, stopping=stopping, on_stop=closing.append)
    server = _run(app, sock, address, stopping)
    server.closing = closing
    log.info(
        "HTTP API listening on http://%s/api/v1/ (tokens in %s)%s%s",
        address,
        api.tokens_file,
        f", metrics on http://{address}/metrics" if metrics is not None else "",
        f", the web dashboard on http://{address}/" if web is not None else "",
    )
    return server


def serve_standby(config: Config, metrics: Callable[[], tuple[bytes, str]], leader: Callable[[], str]) -> ApiServer | None:
    """A standby's /metrics where the API listens, and 503 (naming the leader) for the rest; None if it cannot listen."""
    api = config.api
    assert api is not None
    address = listen_address(api)
    try:
        sock = bind(api.host, api.port)
    except OSError as exc:
        log.error("the standby's /metrics is not served: cannot listen on %s (%s)", address, exc.strerror or exc)
        return None
    server = _run(create_standby_app(metrics, leader), sock, address, threading.Event())
    log.info("standby: metrics on http://%s/metrics; the API answers 503 until this gitopsd leads", address)
    return server


def _run(app: Any, sock: socket.socket, address: str, stopping: threading.Event) -> ApiServer:
    """Serve `app` on `sock` in a thread of its own."""
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start and stop lines; errors still show
    logging.getLogger("uvicorn.error").setLevel(logging.ERROR)  # "Exceeded concurrency limit." per refused request
    protocol, on_error = _guarded(address)
    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For/-Proto from any 127.0.0.1 peer as the truth;
    # the dashboard decides itself whom to believe (web.trusted_proxies, gitopsd/web/auth.py).
    settings = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=protocol,
        loop="asyncio",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=3,
        proxy_headers=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE,
        # asyncio accepts up to `backlog` connections in a row before the protocol can refuse any: at 512 a burst
        # of idle clients took every open file of a daemon limited to 256 (its runs then failed with EMFILE).
        backlog=max(16, max_connections() // 2),
    )
    server = _Server(settings)
    server.on_error = on_error

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: B036 (uvicorn ends a failed start with SystemExit: never let it out of the thread)
            log.error("the HTTP API on %s stopped: %s: %s", address, type(exc).__name__, exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name="api", daemon=True)
    thread.start()
    return ApiServer(server, thread, address, stopping)
