"""The daemon's guard over its state database: the file still the one it opened, and its scheduled copies."""

from __future__ import annotations

import logging
import time

from ..adapters import backups
from ..core.errors import StoreError
from .parts import Parts

log = logging.getLogger("gitopsd.daemon")


class StateDb(Parts):
    """Each sweep, look and deployment's end asks check_store; the loop asks _backup_if_due."""

    def check_store(self) -> bool:
        """Is the SQLite file still the one this daemon opened? If not: start no deployment, say so once, keep a copy.

        Each sweep, each look and each deployment's end ask (one os.stat). A deleted or replaced state.db would
        be recreated empty by the next opener: this daemon keeps its records in the file it still holds, and
        writes what it has into backups/ so a restore brings them back."""
        if self.store_lost is not None:
            return False
        reason = self.store.replaced()
        if reason is None:
            return True
        with self._store_lost_lock:  # the loop and a deployment's end may find it at once: said once
            if self.store_lost is not None:
                return False
            self.store_lost = reason
        self.reconciler.accepting = False
        self.store.let_go(reason)  # first: no other thread writes meanwhile into the log a new file would read
        copy = None
        try:
            copy = backups.scheduled(
                self.store, self.config.backup_dir, self.config.backup.keep, time.time(), prefix=backups.RESCUED
            )
            rescued = f"; the records this daemon still held are in {copy}"
        except (OSError, StoreError) as exc:
            rescued = f"; its records could not be copied ({exc})"
        line = f"{reason}: no deployment starts until it is restored{rescued}"
        log.error("%s; %s", line, backups.what_to_do(self.config.backup_dir, copy))
        try:
            backups.say_replaced(self.config.runtime_dir, line)
        except OSError as exc:
            log.warning("could not tell `gitopsd status` (%s): %s", backups.replaced_marker(self.config.runtime_dir), exc)
        if self.metrics is not None:
            self.metrics.store_replaced = True
        return False

    def _backup_in(self) -> float:
        """Seconds until the scheduled copy is due (the loop sleeps no longer); an hour when there is none to make."""
        if self.store.backend != "sqlite" or self.store_lost is not None:
            return 3600.0
        return max(0.0, self._next_backup - time.time())

    def _backup_if_due(self) -> None:
        """The scheduled copy of the SQLite store (`backup:`), on a monitor worker: never holding up the loop."""
        now = time.time()
        if now < self._next_backup or self.store.backend != "sqlite" or self.store_lost is not None:
            return
        self._next_backup = now + self.config.backup.interval

        def copy() -> None:
            try:
                target = backups.scheduled(self.store, self.config.backup_dir, self.config.backup.keep, now)
                log.info("state database copied to %s", target)
            except (OSError, StoreError) as exc:
                log.error(
                    "could not copy the state database to %s: %s; check that the daemon's user can write "
                    "there (config `backup.dir`)",
                    self.config.backup_dir,
                    exc,
                )

        self.monitor.submit(copy)
