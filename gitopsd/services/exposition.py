"""What a /metrics scrape gets: the store's figures as last rendered, made again on a thread of its own when they changed.

At 1,000 repositories the store's figures are 81,000 samples and seconds of CPU to render (issue 28), so a scrape
must not render them. The thread renders them again when the store moved (another connection committed:
Store.data_version) and when a scrape finds the rendering older than MAX_AGE (locks that expired, the DORA
figures); after a rendering it waits at least GAP times as long as that rendering took, so it never takes more
than a tenth of a core. A rendering that took under INLINE seconds (a small installation) is made again in the
scrape that finds it stale, as before. The daemon's own figures (process, leadership, refused pushes) are cheap
and rendered by every scrape. docs/monitoring.md, "How fresh a scrape is", says the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("gitopsd.metrics")

POLL = 1.0  # seconds between two looks at the store's data_version
DEBOUNCE = 1.0  # seconds at least between two renderings: a burst of changes makes one
GAP = 9.0  # after a rendering, wait at least GAP x its duration: at most a tenth of a core
INLINE = 0.25  # seconds: a rendering this quick is made in the scrape that finds it stale
MAX_AGE = 60.0  # seconds: a scrape finding the rendering older asks for a new one (locks that expired, DORA)
FIRST_WAIT = 0.5  # seconds the first scrape waits for the first rendering before it gets the daemon's own figures


class Rendering:
    """The store's figures as last rendered, and the daemon's own rendered for each scrape."""

    def __init__(
        self,
        render: Callable[[], bytes],
        own: Callable[[], bytes],
        version: Callable[[], object],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.render, self.own, self.version, self.clock, self.sleep = render, own, version, clock, sleep
        self._body: bytes | None = None
        self._seen: object = None  # the store's data_version the last rendering read
        self._at = float("-inf")  # when the last rendering began
        self._took = 0.0  # how long it took
        self._waited = False  # a scrape waited FIRST_WAIT for the first rendering
        self._wake = threading.Event()
        self._first = threading.Event()
        self._lock = threading.RLock()  # one rendering at a time
        self._starting = threading.Lock()
        self._thread: threading.Thread | None = None

    def prime(self) -> None:
        """Make the first rendering (at the daemon's start, after the history is added up)."""
        self._render()

    def scrape(self) -> bytes:
        """The text for a scrape: the store's last rendering, or a new one when it is stale and quick to make."""
        self._start()
        return self._store_part() + self.own()

    def _store_part(self) -> bytes:
        body = self._body
        if body is None:
            self._wake.set()
            waited, self._waited = self._waited, True  # only the first scrape waits: the others must be quick
            if not self._first.wait(0 if waited else FIRST_WAIT) or self._body is None:
                return b""  # the history is still being added up: the daemon's own figures meanwhile
            return self._body
        if not (self._moved() or self._aged()):
            return body
        if self._took <= INLINE:
            return self._render()
        self._wake.set()
        return body

    def _moved(self) -> bool:
        """Did the store change since the last rendering read it? (PostgreSQL has no data_version: only age says.)"""
        version = self.version()
        return version is not None and version != self._seen

    def _aged(self) -> bool:
        return self.clock() - self._at > MAX_AGE

    def _render(self) -> bytes:
        with self._lock:
            version, began = self.version(), self.clock()  # read first: a change meanwhile makes the next rendering
            body = self.render()
            self._body, self._seen, self._at, self._took = body, version, began, self.clock() - began
            self._first.set()
            log.debug("metrics: rendered %d bytes in %.2f s", len(body), self._took)
            return body

    def _start(self) -> None:
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="metrics-rendering", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            asked = self._wake.wait(POLL)
            self._wake.clear()
            due = self._at + max(DEBOUNCE, GAP * self._took)
            if self.clock() < due:
                self.sleep(due - self.clock())  # a burst of changes makes one rendering, at most a tenth of a core
            try:
                with self._lock:  # a scrape or prime() may have rendered meanwhile
                    if self._body is None or self._moved() or (asked and self._aged()):
                        self._render()
            except Exception as exc:  # noqa: BLE001 (the last rendering stays; tried again on the next change)
                log.warning("metrics: cannot render: %s: %s", type(exc).__name__, exc)
