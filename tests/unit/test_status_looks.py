"""Stored CI statuses make the daemon look at their repository once per burst, not once each (issue 28, item 3).

Real: the daemon's own `status_reported` (daemon/events.py) and the loop's `_handle` (daemon/loop.py) on a
daemon object holding only the queue and timers they use; the loop's stop flag keeps `_handle` from reaching
the reconciler, which this test does not build.
"""

from __future__ import annotations

import queue
import threading
import time

from gitopsd.core.reconcile import Look
from gitopsd.daemon.events import STATUS_LOOK_DELAY
from gitopsd.daemon.main import Daemon


def bare_daemon() -> Daemon:
    daemon = Daemon.__new__(Daemon)
    daemon.requests = queue.SimpleQueue()
    daemon.timers = []
    daemon._timer_seq = 0
    daemon._timer_lock = threading.Lock()
    daemon._status_looks = set()
    daemon.stopping = threading.Event()
    return daemon


def scheduled(daemon: Daemon) -> list[Look]:
    return [look for _at, _seq, look in sorted(daemon.timers)]


def test_a_hundred_statuses_for_one_repository_schedule_one_look_shortly_after_the_first():
    daemon = bare_daemon()
    before = time.time()
    for _ in range(100):
        daemon.status_reported("shop")
    daemon.status_reported("cart")
    assert scheduled(daemon) == [Look("shop", None, "ci-status"), Look("cart", None, "ci-status")]
    assert all(before + STATUS_LOOK_DELAY <= at <= time.time() + STATUS_LOOK_DELAY for at, _seq, _look in daemon.timers)


def test_a_status_stored_once_its_look_has_started_schedules_the_next_look():
    daemon = bare_daemon()
    daemon.status_reported("shop")
    ((_at, _seq, look),) = daemon.timers
    daemon.timers.clear()
    daemon.stopping.set()  # _handle takes the look off the pending ones, then goes no further
    daemon._handle(look)
    daemon.status_reported("shop")
    assert scheduled(daemon) == [Look("shop", None, "ci-status")]
