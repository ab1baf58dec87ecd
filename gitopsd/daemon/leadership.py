"""A leader and its standby (docs/install.md, "Standby daemon"): two `gitopsd run` with one PostgreSQL database.

Leadership is a lease in PostgreSQL (adapters/store/postgresql.Lease): a session advisory lock one daemon
holds at a time, and an epoch each daemon raises as it takes the lock. The leader's deployment rows
carry its epoch, and the database refuses a row from an older one (fencing): a leader that was cut
off or paused, and wakes up, records and starts nothing.

The standby is READY and says `standby` in STATUS=, /metrics and `gitopsd status`; it asks for the
lock every POLL seconds. Once it has it, it starts as any leader does after a crash (lifecycle.py):
deployments left running are marked interrupted, their processes here reaped, every environment
converges. A leader checks its lease as often; when another daemon took the lead, or when it cannot
reach the database for SELF_FENCE seconds while a standby waits, it cancels its runs and exits
(EXIT_LOST: systemd starts it again, as the standby). The server drops a vanished leader's session
(TCP keepalives, store/postgresql.LEASE_OPTIONS) only after that, so the two never deploy at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..adapters.systemd import Notifier
from ..base.storeerrors import DatabaseFailure
from ..core.settings import Config

if TYPE_CHECKING:
    from ..adapters.store.postgresql import Lease

log = logging.getLogger("gitopsd.leadership")

POLL = 0.5  # seconds between a standby's tries for the lease, and between a leader's checks of it
HEARTBEAT = 2.0  # seconds between the rows each daemon writes in `daemons` (gitopsd status shows them)
SELF_FENCE = 3.0  # a leader that cannot confirm its lease this long, while a standby waits, stops deploying
STANDBY_SEEN = 15.0  # a standby heard of within this many seconds is waiting
HOOK_COPY_EVERY = 30.0  # seconds between a standby's refreshes of its pre-receive hook's copy of the records
WARN_EVERY = 30.0  # seconds between the lines a leader logs while it cannot reach the database
STEP_DOWN_WITHIN = 15.0  # seconds a leader that lost the lead has to stop; then it exits at once (its runs canceled)
EXIT_LOST = 75  # EX_TEMPFAIL: the leader stepped down; systemd (Restart=on-failure) starts it again


def identity(config: Config) -> str:
    """How this daemon is named to the others: its host and its state folder (two may share a host)."""
    return f"{socket.gethostname()}:{config.state_dir}"


def api_address(config: Config) -> str:
    """Where this daemon's API listens, for the others to name (empty without one)."""
    if config.api is None:
        return ""
    from ..api.server import listen_address

    return f"http://{listen_address(config.api)}"


class Leadership:
    """This daemon's side of the lease: wait for it as the standby, then watch it as the leader."""

    def __init__(self, config: Config, lease: Lease | None = None):
        from ..adapters.store.postgresql import Lease

        self.name = identity(config)
        self.api = api_address(config)
        self.lease = lease or Lease(config.database_url, self.name)
        self.leading = False
        self.seen_epoch = 0  # the lease's epoch as last read (ours once we lead)
        self.lost = threading.Event()
        self.why_lost = ""
        self.daemons: list[tuple[str, str, int, int, str, float]] = []  # the last heartbeat's view of all daemons
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # the lease's one connection: the watch thread and close() take turns
        self._lose_lock = threading.Lock()
        self.confirmed_at = time.monotonic()  # when the leader last confirmed its lease
        self.said = "no gitopsd leads yet"  # who leads, in words, as the standby last read it (its API's 503)
        self._leader_before = ""

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch

    def role(self) -> tuple[bool, int]:
        """For /metrics: (leading, the epoch last seen)."""
        return self.leading, self.seen_epoch

    # -- the standby -----------------------------------------------------------------------------------
    def wait_for_lead(self, config: Config, early: list[int], notifier: Notifier) -> bool:
        """Be the standby until this daemon takes the lead (True) or SIGTERM/SIGINT came (False). READY meanwhile."""
        from ..adapters.store import Store

        if self._try_take():
            return True
        server = None
        if config.api is not None:
            from ..api.server import serve_standby
            from ..services.metrics import standby_exposition

            server = serve_standby(config, standby_exposition(self.role), lambda: self.said)
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
                self.said = self.leader_line()
                text = f"standby: {self.said}"
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
                if now - last_copy >= HOOK_COPY_EVERY:  # a push this machine's hook judges sees recent records
                    last_copy = now
                    try:
                        hook_copy = hook_copy or Store.of(config)
                        hook_copy.refresh_hook_copy()
                    except Exception as exc:  # noqa: BLE001 (the store's errors; the leader's daemon judges again)
                        log.warning("standby: the hook's copy of the records could not be refreshed: %s", exc)
                time.sleep(POLL)
        finally:
            if server is not None:
                server.stop()
            if hook_copy is not None:
                hook_copy.close()

    def _try_take(self) -> bool:
        try:
            with self._lock:
                epoch = self.lease.take()
        except DatabaseFailure as exc:  # the database cannot be reached: ask again
            log.debug("cannot ask for the lead: %s", exc)
            return False
        if epoch is None:
            return False
        self.leading, self.seen_epoch = True, epoch
        before = self._leader_before
        log.info("this gitopsd leads now (epoch %d)%s", epoch, f"; the leader was {before}" if before else "")
        return True

    def leader_line(self) -> str:
        """Who leads, in words (STATUS=, the standby's 503)."""
        try:
            with self._lock:
                found = self.lease.leader()
        except DatabaseFailure as exc:
            return f"the database cannot be reached ({exc})"
        if found is None:
            return "no gitopsd leads yet"
        epoch, holder, since = found
        self.seen_epoch = epoch
        self._leader_before = holder
        api = next((d[4] for d in self.daemons if d[0] == holder and d[4]), "")
        return (
            f"the leader is {holder} (epoch {epoch}, since {time.strftime('%H:%M:%S', time.localtime(since))}"
            + (f", API {api}" if api else "")
            + ")"
        )

    # -- the leader ------------------------------------------------------------------------------------
    def watch(self, on_lost: Callable[[], None]) -> None:
        """Check the lease every POLL seconds; `on_lost()` once it is gone (then see `why_lost`), from another thread.

        Two threads: one asks the database (a call there may hang for seconds when the network is cut), the other
        only watches the clock, so a cut-off leader stops its runs SELF_FENCE seconds after its last confirmation.
        """
        self.confirmed_at = time.monotonic()
        for target, name in ((self._watch, "lease"), (self._deadline, "lease-deadline")):
            thread = threading.Thread(target=target, args=(on_lost,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _watch(self, on_lost: Callable[[], None]) -> None:
        from ..adapters.store.postgresql import LeaseLost

        last_beat, warned = 0.0, 0.0
        while not self._stop.wait(POLL) and not self.lost.is_set():
            try:
                with self._lock:
                    self.lease.confirm()
                    self.confirmed_at = time.monotonic()
                    if self.confirmed_at - last_beat >= HEARTBEAT:
                        last_beat = self.confirmed_at
                        self._beat("leader")
            except LeaseLost as exc:
                self._lose(f"another gitopsd took the lead ({exc})", on_lost)
                return
            except DatabaseFailure as exc:  # cannot reach the database: hold on, unless a standby waits (_deadline)
                if time.monotonic() - warned >= WARN_EVERY:  # one line now and then, not one per check
                    warned = time.monotonic()
                    log.warning("cannot confirm the leader's lease for %.1f s: %s", time.monotonic() - self.confirmed_at, exc)

    def _deadline(self, on_lost: Callable[[], None]) -> None:
        while not self._stop.wait(POLL / 5) and not self.lost.is_set():
            silent = time.monotonic() - self.confirmed_at
            if silent < SELF_FENCE:
                continue
            waiting = [d[0] for d in self.daemons if d[1] == "standby" and d[0] != self.name and d[5] < STANDBY_SEEN]
            if waiting:
                self._lose(
                    f"its lease could not be confirmed for {silent:.1f} s (the database does not answer) and "
                    f"the standby {', '.join(waiting)} takes over",
                    on_lost,
                )
                return

    def _lose(self, why: str, on_lost: Callable[[], None]) -> None:
        with self._lose_lock:
            if self.lost.is_set():
                return
            self.leading, self.why_lost = False, why
            self.lost.set()
        on_lost()

    def _beat(self, role: str) -> None:
        """Called with the lease's lock held (the watch thread) or from the standby's loop."""
        try:
            self.daemons = self.lease.heartbeat(self.name, role, os.getpid(), self.api)
        except DatabaseFailure as exc:
            log.debug("heartbeat not written: %s", exc)

    def _forget(self) -> None:
        try:
            self.lease.forget(self.name)
        except DatabaseFailure:
            pass

    def close(self) -> None:
        """The daemon stops: let go of the lease (a standby takes it at once) and of this daemon's row."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            self._forget()
            self.lease.drop()
        self.leading = False
