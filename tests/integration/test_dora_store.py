"""The lead time of each change, recorded by the store when a deploy first brings it to an environment.

Real: the store in a temp folder, on SQLite and on a real PostgreSQL (store_factory). Rows are written through its own methods, as the daemon does.
"""

from __future__ import annotations

import time

import pytest

from gitopsd.adapters.store import Store
from gitopsd.services import dora

H = 3600.0


def deploy(store: Store, env: str, commit: str, started: float, took: float = 60.0):
    dep = store.begin(
        repo="shop",
        env=env,
        commit=commit,
        tree="t" + commit,
        previous_commit=None,
        kind="deploy",
        trigger="push",
        actor="alice",
        now=started,
    )
    store.finish(dep, "succeeded", now=started + took)
    return store.get(dep)


def test_lead_runs_from_first_seen_to_the_deploys_end_and_commits_gitopsd_made_have_none(tmp_path, store_factory):
    with store_factory(tmp_path / "state.db") as store:
        store.record_seen("shop", [("a" * 40, "branch-push"), ("m" * 40, "promote")], 1000.0, ["a" * 40])
        d = deploy(store, "production", "m" * 40, 1000.0 + 2 * H)
        store.record_deployed_commits(d, ["a" * 40, "m" * 40, "o" * 40], tuple(sorted(dora.SERVER_MADE)))
        leads = store.dora_lead_times("shop", "production", 0.0)
    # a: pushed at 1000, deployed at its end; m: a promotion merge (no change); o: seen before recording began
    assert sorted(leads) == pytest.approx([60.0, 2 * H + 60.0])


def test_a_commit_seen_before_recording_falls_back_to_its_first_deployment_anywhere(tmp_path, store_factory):
    with store_factory(tmp_path / "state.db") as store:
        qa = deploy(store, "qa", "o" * 40, 5000.0)
        store.record_deployed_commits(qa, ["o" * 40], tuple(dora.SERVER_MADE))
        prod = deploy(store, "production", "o" * 40, 5000.0 + 3 * H)
        store.record_deployed_commits(prod, ["o" * 40], tuple(dora.SERVER_MADE))
        store.record_deployed_commits(prod, ["o" * 40], tuple(dora.SERVER_MADE))  # once per environment
        assert store.dora_lead_times(None, "production", 0.0) == pytest.approx([3 * H + 60.0])
        assert store.dora_lead_times(None, "production", 5000.0 + 4 * H) == []  # before the window


def test_the_dora_figures_are_kept_while_production_stays_and_computed_again_when_a_deployment_ends(tmp_path, store_factory):
    from gitopsd.services.metrics import dora_source
    from tests.integration.test_metrics import config

    cfg = config(tmp_path)
    with store_factory(tmp_path / "state.db") as store:
        figures = dora_source(lambda: cfg, store)
        assert figures is not None
        now = time.time()
        deploy(store, "production", "a" * 40, now - 2 * H)
        first = figures()
        assert figures() is first  # nothing moved: the figures of a moment ago
        deploy(store, "production", "b" * 40, now - H)
        second = figures()
        assert second is not first
        assert second[0][2]["deployments"] == first[0][2]["deployments"] + 1
