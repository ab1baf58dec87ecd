"""The release candidate read model (services/readmodels.py): found by name, and shown as `rc show --json` shows it.

Real: a sandbox's bare repository and config, its SQLite store, and the `gitopsd rc` command. The release candidate
is written into the store as the daemon records one (Store.add_rc), without a daemon.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.core.errors import MISSING, Refused
from gitopsd.services.readmodels import rc_named, rc_shown
from tests.support import Sandbox


@pytest.fixture
def r1(tmp_path) -> Iterator[tuple[Sandbox, Any, Store]]:
    """A sandbox whose store holds release candidate r1 (main's commit, qa to production, by alice)."""
    sandbox = Sandbox(tmp_path / "box", {"qa": ["qa-1"], "production": ["prod-1"]})
    config = load(sandbox.config)
    repo = config.repositories[0]
    with Store(config.database) as store:
        store.add_rc(
            repo=repo.name,
            name="r1",
            commit=sandbox.head("main"),
            tree=sandbox.tree("main"),
            source_env="qa",
            target_env="production",
            created_by="alice",
            self_identities=[],
            now=time.time(),
        )
        yield sandbox, repo, store


def test_a_release_candidate_is_found_as_rc_slash_name_or_name_and_a_missing_one_is_refused_naming_rc_list(r1):
    _sandbox, repo, store = r1
    assert rc_named(store, repo, "rc/r1").name == rc_named(store, repo, "r1").name == "r1"
    with pytest.raises(Refused) as refused:
        rc_named(store, repo, "rc/nope")
    assert str(refused.value) == f"no release candidate rc/nope in {repo.name} (see gitopsd rc list)"
    assert (refused.value.kind, refused.value.reason) == (MISSING, "rc_not_found")


def test_a_release_candidate_is_shown_as_rc_show_json_prints_it(r1):
    sandbox, repo, store = r1
    shown = rc_shown(repo, store, rc_named(store, repo, "r1"))
    assert shown == json.loads(sandbox.command("rc", "show", "rc/r1", "--json").stdout)
    assert (shown["name"], shown["created_by"], shown["history"]) == ("r1", "alice", [])
