"""The periodic sweep, the safety net that converges whatever events were lost (APScheduler lives here)."""
from __future__ import annotations

from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler


class Sweeper:
    """Calls `callback()` every `interval` seconds, with up to 10% jitter."""

    def __init__(self, interval: float, callback: Callable[[], None]):
        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(callback, "interval", seconds=interval, jitter=max(1, int(interval * 0.1)),
                               id="sweep", max_instances=1, coalesce=True)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
