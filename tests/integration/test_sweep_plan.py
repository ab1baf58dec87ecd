"""Which repositories a periodic sweep looks at (gitopsd/services/sweepplan.py, issue 28): a repository is passed over
only while its ref files, the store and its last look say nothing can be due. Real: a bare repository pushed to through
gitopsd's hooks, git's own pack-refs, the SQLite store written by another connection, the loaded configuration.
"""

from __future__ import annotations

from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.core.types import FailureStatus
from gitopsd.services.sweepplan import SweepPlan
from tests.support import Sandbox, git


def names(repos) -> list[str]:
    return [r.name for r in repos]


def test_a_sweep_passes_over_only_a_settled_repository_whose_refs_and_store_did_not_move(tmp_path):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"], "staging": ["staging-1"]})
    config = load(sandbox.config)
    with Store(sandbox.state / "state.db") as store:
        plan = SweepPlan(lambda: Store(sandbox.state / "state.db", readonly=True))
        assert names(plan.choose(config, set())) == ["shop"], "the first sweep looks at everything"
        assert names(plan.choose(config, {"shop"})) == [], "settled, nothing moved: passed over"
        assert names(plan.choose(config, set())) == ["shop"], "not settled (a retry due, a watch): looked at"

        sandbox.write("app.txt", "v2")
        sandbox.commit("v2")
        sandbox.push("main")  # a branch file the inotify watcher might have missed
        assert names(plan.choose(config, {"shop"})) == ["shop"]
        assert names(plan.choose(config, {"shop"})) == []

        git(sandbox.repo, "pack-refs", "--all")  # the branch files vanish into packed-refs
        assert names(plan.choose(config, {"shop"})) == ["shop"]
        assert names(plan.choose(config, {"shop"})) == []

        store.record_failure("shop", "qa", FailureStatus("a" * 40, 1, 0.0, False, "failed"))  # any record at all
        assert names(plan.choose(config, {"shop"})) == ["shop"]
        assert names(plan.choose(config, {"shop"})) == []

        assert names(plan.choose(load(sandbox.config), {"shop"})) == ["shop"], "a reloaded configuration"


def test_every_tenth_sweep_looks_at_every_repository_whatever_the_stamps_say(tmp_path):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    config = load(sandbox.config)
    Store(sandbox.state / "state.db").close()
    plan = SweepPlan(lambda: Store(sandbox.state / "state.db", readonly=True))
    chosen = [names(plan.choose(config, {"shop"})) for _ in range(21)]
    assert [i for i, repos in enumerate(chosen) if repos] == [0, 10, 20]


def test_the_first_periodic_sweep_passes_over_what_the_starts_sweep_found_settled(tmp_path):
    sandbox = Sandbox(tmp_path, {"qa": ["qa-1"]})
    config = load(sandbox.config)
    with Store(sandbox.state / "state.db"):
        plan = SweepPlan(lambda: Store(sandbox.state / "state.db", readonly=True))
        assert names(plan.choose(config, set(), everything=True)) == ["shop"], "the start's sweep looks at all"
        assert names(plan.choose(config, {"shop"})) == [], "a full second sweep a minute after READY cost a second of CPU"
        assert names(plan.choose(config, {"shop"}, everything=True)) == ["shop"], "a reload's sweep looks at all"
