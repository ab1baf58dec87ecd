"""The leader's lease and the fence on deployment rows, on a real PostgreSQL (tests/postgres_fixture.py)."""

from __future__ import annotations

import time

import psycopg
import pytest

from gitopsd.adapters.store import FailureStatus, Store
from gitopsd.adapters.store.postgresql import Lease, LeaseLost
from gitopsd.base.storeerrors import StoreFenced

pytestmark = pytest.mark.usefixtures("postgres_server")


def take_once_let_go(lease: Lease) -> int | None:
    """`lease.take()` once the server has let go of the lock a dropped connection held: it ends that session a moment
    after the client closes it (a busy machine: seconds), so the first try may still find the lock held."""
    deadline = time.monotonic() + 30
    while (epoch := lease.take()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return epoch


def store(tmp_path, url: str, epoch: int | None = None, name: str = "a") -> Store:
    return Store(tmp_path / f"hook-{name}.db", url=url, epoch=epoch, retry_for=0.0)


@pytest.fixture
def leases(tmp_path, postgres_url):
    """Two daemons' leases on a database with the store's schema, as the daemon's start makes it; dropped after."""
    store(tmp_path, postgres_url).close()
    a, b = Lease(postgres_url, "host-a:/s"), Lease(postgres_url, "host-b:/s")
    yield a, b
    a.drop()
    b.drop()


def begin(s: Store, env: str = "qa") -> int:
    return s.begin(
        repo="shop",
        env=env,
        commit="c" * 40,
        tree="t" * 40,
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="ann",
        now=1.0,
    )


def test_one_daemon_holds_the_lease_and_each_takeover_raises_the_epoch(leases):
    a, b = leases
    assert a.take() == 1
    assert b.take() is None and b.take() is None  # asked again and again while a holds it
    assert b.leader()[:2] == (1, "host-a:/s")
    a.confirm()
    a.drop()  # a's session ends (its process died): the lock goes with it
    assert take_once_let_go(b) == 2
    assert b.leader()[:2] == (2, "host-b:/s")
    with pytest.raises(LeaseLost, match="another gitopsd holds the lease"):
        a.confirm()  # a's connection was gone: it asks again and finds b leading


def test_a_leader_whose_connection_dropped_keeps_its_epoch_when_nobody_led_meanwhile(leases):
    a, b = leases
    assert a.take() == 1
    a.drop()  # a database restart, say: the session and the lock went away
    a.confirm()  # taken again: the same epoch, deployments in flight go on recording
    assert a.epoch == 1 and b.take() is None


def test_a_row_from_an_older_epoch_is_refused_and_the_store_says_it_was_fenced(tmp_path, postgres_url, leases):
    a, b = leases
    old = new = None
    try:
        assert a.take() == 1
        old = store(tmp_path, postgres_url, epoch=1, name="old")
        running = begin(old)
        old.started(running, 2.0)
        a.drop()  # a was cut off; b takes over
        assert take_once_let_go(b) == 2
        new = store(tmp_path, postgres_url, epoch=2, name="new")
        assert [d.id for d in new.mark_interrupted(3.0)] == [running]
        # a wakes up: it can neither record the end of its run, nor start another
        with pytest.raises(StoreFenced, match="gitopsd fenced: this daemon led epoch 1, the leader now leads epoch 2"):
            begin(old, "staging")
        assert old.fenced.is_set() and not new.fenced.is_set()
        with pytest.raises(StoreFenced):  # nor the retry state its failed run would leave for the new leader
            old.record_failure("shop", "qa", FailureStatus("c" * 40, 1, 10.0, False, "the run was killed"))
        assert new.failure("shop", "qa") is None
        old.finish(running, "succeeded", now=4.0)  # matches no row any more: the interrupted record stays
        assert new.get(running).result == "interrupted"
        mine = begin(new, "staging")
        with psycopg.connect(postgres_url) as db:
            epochs = dict(db.execute("SELECT id, epoch FROM deployments").fetchall())
        assert epochs == {running: 2, mine: 2}  # the interrupted mark was written by the new leader
        # a command (db copy, an operator's tool) carries no epoch: not a daemon, not fenced
        with store(tmp_path, postgres_url, name="tool") as tool:
            begin(tool, "prod")
    finally:
        for s in (old, new):
            if s is not None:
                s.close()


def test_the_daemons_say_who_they_are_and_a_stopping_one_is_forgotten(tmp_path, postgres_url, leases):
    a, b = leases
    a.take()
    a.heartbeat("host-a:/s", "leader", 10, "http://10.0.0.1:8470")
    seen = b.heartbeat("host-b:/s", "standby", 20, "")
    assert [(d[0], d[1], d[2], d[3]) for d in seen] == [("host-a:/s", "leader", 1, 10), ("host-b:/s", "standby", 0, 20)]
    with store(tmp_path, postgres_url, name="reader") as reader:
        assert [(d.name, d.role, d.epoch, d.pid, d.api) for d in reader.daemons()] == [
            ("host-a:/s", "leader", 1, 10, "http://10.0.0.1:8470"),
            ("host-b:/s", "standby", 0, 20, ""),
        ]
        assert all(d.seen_ago >= 0.0 for d in reader.daemons())
    b.forget("host-b:/s")
    with store(tmp_path, postgres_url, name="reader2") as reader:
        assert [d.name for d in reader.daemons()] == ["host-a:/s"]
    a.drop()  # a dies without a word; b takes the lead: a's row says leader no more
    assert take_once_let_go(b) == 2
    assert [(d[0], d[1]) for d in b.heartbeat("host-b:/s", "leader", 20, "")] == [("host-b:/s", "leader")]
