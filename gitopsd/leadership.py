"""A leader and its standby (README, "Standby daemon"): two `gitopsd run` with one PostgreSQL database.

Leadership is a lease in PostgreSQL (adapters/pgstore.Lease): a session advisory lock one daemon
holds at a time, and an epoch each daemon raises as it takes the lock. The leader's deployment rows
carry its epoch, and the database refuses a row from an older one (fencing): a leader that was cut
off or paused, and wakes up, records and starts nothing.

The standby is READY and says `standby` in STATUS=, /metrics and `gitopsd status`; it asks for the
lock every POLL seconds. Once it has it, it starts as any leader does after a crash (daemon.py):
deployments left running are marked interrupted, their processes here reaped, every environment
converges. A leader checks its lease as often; when another daemon took the lead, or when it cannot
reach the database for SELF_FENCE seconds while a standby waits, it cancels its runs and exits
(EXIT_LOST: systemd starts it again, as the standby). The server drops a vanished leader's session
(TCP keepalives, pgstore.LEASE_OPTIONS) only after that, so the two never deploy at once.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Callable

from .adapters.systemd import Notifier
from .core.settings import Config

if TYPE_CHECKING:
    from .adapters.pgstore import Lease

log = logging.getLogger("gitopsd.leadership")

POLL = 0.5               # seconds between a standby's tries for the lease, and between a leader's checks of it
HEARTBEAT = 2.0          # seconds between the rows each daemon writes in `daemons` (gitopsd status shows them)
SELF_FENCE = 2.0         # a leader that cannot confirm its lease this long, while a standby waits, stops deploying
STANDBY_SEEN = 15.0      # a standby heard of within this many seconds is waiting
HOOK_COPY_EVERY = 30.0   # seconds between a standby's refreshes of its pre-receive hook's copy of the records
EXIT_LOST = 75           # EX_TEMPFAIL: the leader stepped down; systemd (Restart=on-failure) starts it again


def identity(config: Config) -> str:
    """How this daemon is named to the others: its host and its state folder (two may share a host)."""
    return f"{socket.gethostname()}:{config.state_dir}"


def api_address(config: Config) -> str:
    api = config.api
    if api is None:
        return ""
    return f"http://[{api.host}]:{api.port}" if ":" in api.host else f"http://{api.host}:{api.port}"


class Leadership:
    """This daemon's side of the lease: wait for it as the standby, then watch it as the leader."""

    def __init__(self, config: Config, lease: Lease | None = None):
        from .adapters.pgstore import Lease
        self.name = identity(config)
        self.api = api_address(config)
        self.lease = lease or Lease(config.database_url, self.name)
        self.leading = False
        self.seen_epoch = 0        # the lease's epoch as last read (ours once we lead)
        self.lost = threading.Event()
        self.why_lost = ""
        self.daemons: list[tuple[str, str, int, int, str, float]] = []   # the last heartbeat's view of all daemons
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()   # the lease's one connection: the watch thread and close() take turns

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch

    def role(self) -> tuple[bool, int]:
        """For /metrics: (leading, the epoch last seen)."""
        return self.leading, self.seen_epoch

    # -- the standby -----------------------------------------------------------------------------------
    def wait_for_lead(self, config: Config, early: list[int], notifier: Notifier) -> bool:
        """Be the standby until this daemon takes the lead (True) or SIGTERM/SIGINT came (False). READY meanwhile."""
        from .adapters.store import Store
        if self._try_take():
            return True
        server = None
        if config.api is not None:
            from .api.server import serve_standby
            from .metrics import standby_exposition
            server = serve_standby(config, standby_exposition(self.role), self.leader_line)
        hook_copy: Store | None = None
        try:
            said, ready, last_ping, last_beat, last_copy = "", False, 0.0, 0.0, time.monotonic()
            while True:
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in early):
                    log.info("the standby stops")
                    self._forget()
                    return False
                if self._try_take():
                    return True
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT:
                    last_beat = now
                    self._beat("standby")
                text = f"standby: {self.leader_line()}"
                if not ready:
                    notifier.ready(text)
                    ready = True
                if text != said:
                    notifier.status(text)
                    log.info("%s", text)
                    said = text
                if notifier.watchdog_interval and now - last_ping >= notifier.watchdog_interval:
                    notifier.watchdog()
                    last_ping = now
                if now - last_copy >= HOOK_COPY_EVERY:   # a push this machine's hook judges sees recent records
                    last_copy = now
                    try:
                        hook_copy = hook_copy or Store.of(config)
                        hook_copy.refresh_hook_copy()
                    except Exception as exc:   # noqa: BLE001 (the store's errors; the leader's daemon judges again)
                        log.warning("standby: the hook's copy of the records could not be refreshed: %s", exc)
                time.sleep(POLL)
        finally:
            if server is not None:
                server.stop()
            if hook_copy is not None:
                hook_copy.close()

    def _try_take(self) -> bool:
        try:
            epoch = self.lease.take()
        except sqlite3.Error as exc:   # the database cannot be reached: ask again
            log.debug("cannot ask for the lead: %s", exc)
            return False
        if epoch is None:
            return False
        self.leading, self.seen_epoch = True, epoch
        before = self._leader_before
        log.info("this gitopsd leads now (epoch %d)%s", epoch, f"; the leader was {before}" if before else "")
        return True

    _leader_before = ""

    def leader_line(self) -> str:
        """Who leads, in words (STATUS=, the standby's 503)."""
        try:
            found = self.lease.leader()
        except sqlite3.Error as exc:
            return f"the database cannot be reached ({exc})"
        if found is None:
            return "no gitopsd leads yet"
        epoch, holder, since = found
        self.seen_epoch = epoch
        self._leader_before = holder
        api = next((d[4] for d in self.daemons if d[0] == holder and d[4]), "")
        return (f"the leader is {holder} (epoch {epoch}, since {time.strftime('%H:%M:%S', time.localtime(since))}"
                + (f", API {api}" if api else "") + ")")

    # -- the leader ------------------------------------------------------------------------------------
    def watch(self, on_lost: Callable[[], None]) -> None:
        """Check the lease every POLL seconds in a thread; `on_lost()` once it is gone (then see `why_lost`)."""
        self._thread = threading.Thread(target=self._watch, args=(on_lost,), name="lease", daemon=True)
        self._thread.start()

    def _watch(self, on_lost: Callable[[], None]) -> None:
        from .adapters.pgstore import LeaseLost
        confirmed, last_beat = time.monotonic(), 0.0
        while not self._stop.wait(POLL):
            try:
                with self._lock:
                    self.lease.confirm()
                    confirmed = time.monotonic()
                    if confirmed - last_beat >= HEARTBEAT:
                        last_beat = confirmed
                        self._beat("leader")
                continue
            except LeaseLost as exc:
                why = f"another gitopsd took the lead ({exc})"
            except sqlite3.Error as exc:   # cannot reach the database: hold on, unless a standby waits to take over
                waiting = [d[0] for d in self.daemons if d[1] == "standby" and d[0] != self.name and d[5] < STANDBY_SEEN]
                silent = time.monotonic() - confirmed
                if not waiting or silent < SELF_FENCE:
                    log.warning("cannot confirm the leader's lease for %.1f s: %s", silent, exc)
                    continue
                why = (f"the database could not be reached for {silent:.1f} s ({exc}) and the standby "
                       f"{', '.join(waiting)} takes over")
            self.leading, self.why_lost = False, why
            self.lost.set()
            on_lost()
            return

    def _beat(self, role: str) -> None:
        try:
            self.daemons = self.lease.heartbeat(self.name, role, os.getpid(), self.api)
        except sqlite3.Error as exc:
            log.debug("heartbeat not written: %s", exc)

    def _forget(self) -> None:
        try:
            self.lease.forget(self.name)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """The daemon stops: let go of the lease (a standby takes it at once) and of this daemon's row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self._forget()
            self.lease.drop()
        self.leading = False
