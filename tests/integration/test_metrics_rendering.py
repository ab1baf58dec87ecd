"""/metrics answered from the last rendering (gitopsd/services/exposition.py): a scrape at 1,000 repositories must not
render 81,000 samples (issue 28), and what a scrape shows still follows the store.

Real: the SQLite store in a temp folder, written through a second connection as the daemon writes it, and
prometheus_client's text. Faked: the clock and the renderer's work where a rendering must be slow (Rendering's
own tests), and StoreCollector.totals held back where the history must be still being added up.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gitopsd.adapters.store import Store
from gitopsd.services import exposition
from gitopsd.services.exposition import Rendering
from gitopsd.services.metrics import Metrics, StoreCollector
from tests.integration.test_metrics import config, deploy


def wait_until(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def added_up(metrics: Metrics) -> bytes | None:
    """A scrape once the store's figures are in it (the history added up after the start), else None."""
    body = metrics.scrape()[0]
    return body if b"gitopsd_deployments_total{" in body else None


def without_process(text: bytes) -> bytes:
    """The exposition without the process figures' samples, which move between two renderings."""
    return b"\n".join(line for line in text.split(b"\n") if not line.startswith(b"gitopsd_process_"))


def test_a_scrape_while_nothing_changed_reads_nothing_from_the_store(tmp_path):
    cfg = config(tmp_path)
    with Store(cfg.database) as store:
        deploy(store, "qa", 1, "succeeded")
        metrics = Metrics(lambda: cfg, Store(cfg.database, readonly=True))
        first = wait_until(lambda: added_up(metrics))  # the start's first rendering, on its own thread
        collected = []
        real = metrics.collector.collect
        metrics.collector.collect = lambda: collected.append(1) or real()  # type: ignore[method-assign]
        for _ in range(5):
            assert b'gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="succeeded"} 1.0' in metrics.scrape()[0]
        assert collected == [], "no scrape read the store again"
        assert first.startswith(b"# HELP gitopsd_environment_info")  # the families in the order they always had


def test_a_deployment_another_connection_records_shows_in_the_next_scrape(tmp_path):
    cfg = config(tmp_path)
    with Store(cfg.database) as store:
        deploy(store, "qa", 1, "succeeded")
        metrics = Metrics(lambda: cfg, Store(cfg.database, readonly=True))
        assert b'result="failed"} 0.0' in wait_until(lambda: added_up(metrics))
        deploy(store, "qa", 2, "failed")  # as the daemon records it: its own connection, no word to Metrics
        wait_until(
            lambda: b'gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="failed"} 1.0' in metrics.scrape()[0]
        )
        metrics.refused("shop", "qa", "not-on-source")
        assert b'gitopsd_pushes_refused_total{env="qa",repo="shop",rule="not-on-source"} 1.0' in metrics.scrape()[0]
        metrics.store_replaced = True
        assert b"gitopsd_store_replaced 1.0" in metrics.scrape()[0]
        assert without_process(metrics.scrape()[0]) == without_process(metrics.exposition()[0]), (
            "the same text, family for family, as a scrape that renders everything"
        )


def test_while_the_history_is_added_up_a_scrape_gets_the_daemons_own_figures_and_never_zero_counters(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    added_up = threading.Event()
    real = StoreCollector.totals
    monkeypatch.setattr(StoreCollector, "totals", lambda self: added_up.wait(60) and real(self))
    with Store(cfg.database) as store:
        deploy(store, "qa", 1, "succeeded")
        metrics = Metrics(lambda: cfg, Store(cfg.database, readonly=True))
        early = metrics.scrape()[0].decode()
        assert "gitopsd_leader 1.0" in early and "gitopsd_process_resident_memory_bytes" in early
        assert "gitopsd_store_replaced 0.0" in early
        assert "gitopsd_deployments_total" not in early and "gitopsd_environment_info" not in early
        added_up.set()
        wait_until(lambda: b'result="succeeded"} 1.0' in metrics.scrape()[0])


class Clock:
    """A monotonic clock the test moves; sleeping moves it too."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def slow_rendering(clock: Clock, version: list[int]) -> tuple[Rendering, list[int]]:
    """A Rendering whose renderings of the store's figures take 5 s on `clock` (as at 1,000 repositories) and show
    the store's version; the daemon's own figures say `own`."""
    made: list[int] = []

    def render() -> bytes:
        clock.now += 5
        made.append(version[0])
        return f"version {version[0]}\n".encode()

    return Rendering(render, lambda: b"own\n", lambda: version[0], clock=clock, sleep=clock.sleep), made


def test_a_slow_rendering_is_never_made_in_a_scrape_and_the_rendering_thread_brings_the_change():
    clock, version = Clock(), [1]
    rendering, made = slow_rendering(clock, version)
    rendering.prime()
    version[0] = 2  # another connection committed
    assert rendering.scrape() == b"version 1\nown\n", "the last rendering, at once"
    wait_until(lambda: rendering.scrape() == b"version 2\nown\n")
    assert made == [1, 2]
    clock.now += exposition.MAX_AGE + 1  # nothing changed, but locks may have expired: one rendering more
    assert rendering.scrape() == b"version 2\nown\n"
    wait_until(lambda: len(made) == 3)


def test_a_burst_of_changes_makes_one_rendering_after_a_pause_as_long_as_nine_renderings():
    clock, version = Clock(), [1]
    rendering, made = slow_rendering(clock, version)
    rendering.prime()
    rendered_at = clock.now
    for n in range(2, 6):
        version[0] = n
        rendering.scrape()
    wait_until(lambda: made[-1] == 5)
    assert made == [1, 5] and clock.now >= rendered_at + 9 * 5
