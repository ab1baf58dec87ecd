"""Timers on a jittered schedule: the periodic sweep (the safety net that converges whatever events
were lost) and drift detection's check-mode runs. APScheduler lives here."""

from __future__ import annotations

from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler


class Periodic:
    """Calls each job's callback every `interval` seconds, with up to 10% jitter, on one background scheduler."""

    def __init__(self) -> None:
        self.scheduler = BackgroundScheduler(daemon=True)

    def every(self, job_id: str, interval: float, callback: Callable[[], None]) -> None:
        # Jitter spreads the environments' runs apart (many drift checks on the hour would run at once).
        self.scheduler.add_job(
            callback, "interval", seconds=interval, jitter=max(1, int(interval * 0.1)), id=job_id, max_instances=1, coalesce=True
        )

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=False)


class Sweeper(Periodic):
    """Calls `callback()` every `interval` seconds, with up to 10% jitter."""

    def __init__(self, interval: float, callback: Callable[[], None]):
        super().__init__()
        self.every("sweep", interval, callback)
