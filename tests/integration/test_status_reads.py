"""`gitopsd status` reads branch heads cheaply: ref files plus the trees the daemon recorded, git only for the rest.

What is real: bare repositories, their ref files (loose and packed), the state store.
"""

from __future__ import annotations

import json
import time

import yaml

from gitopsd.adapters.store import Store
from gitopsd.base import gitcli
from gitopsd.config import load
from gitopsd.core.types import EMPTY_TREE
from gitopsd.services.status import all_status
from tests.support import Sandbox, git, run


def heads(sandbox: Sandbox) -> dict[str, tuple[str | None, str]]:
    """env -> (desired commit, state) as status shows them."""
    config = load(sandbox.config)
    store = Store(config.database)
    try:
        return {row.env: (row.desired, row.state) for row in all_status(config, store)}
    finally:
        store.close()


def test_ref_files_are_read_loose_and_packed_like_git_reads_them(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    expected = {b: sandbox.head(b) for b in ("main", "qa", "staging")}
    assert gitcli.read_branches(sandbox.repo, ["main", "qa", "staging", "nope"]) == expected
    git(sandbox.root, "--git-dir", str(sandbox.repo), "pack-refs", "--all")
    assert gitcli.read_branches(sandbox.repo, ["main", "qa", "staging", "nope"]) == expected
    assert gitcli.branch_heads(sandbox.repo, ["qa", "nope"]) == {"qa": (expected["qa"], sandbox.tree("qa"))}


def test_status_uses_recorded_trees_only_for_the_commit_they_belong_to(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    sandbox.state.mkdir(exist_ok=True)
    store = Store(sandbox.state / "state.db")
    old = sandbox.head("qa")
    # A tree recorded for qa's commit is what status goes by (the empty tree: waiting for a promotion)...
    store.record_head("shop", "qa", old, EMPTY_TREE)
    store.record_head("shop", "staging", sandbox.head("staging"), sandbox.tree("staging"))
    store.close()
    assert heads(sandbox) == {"qa": (old, "waiting-for-promotion"), "staging": (sandbox.head("staging"), "out-of-sync")}
    sandbox.write("app.txt", "v2")
    new = sandbox.commit("v2")
    sandbox.push("main", "main:qa")
    # ...only while it is the head: the ref file says qa moved, so status asks git for the new tree.
    assert heads(sandbox)["qa"] == (new, "out-of-sync")


def test_history_and_status_before_any_daemon_ran_say_nothing_is_recorded(short_tmp):
    """Only `install-hooks` has written state.db (its snapshot for the hook): the read commands show an empty history."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    assert (sandbox.state / "state.db").exists()
    assert sandbox.history("qa") == []
    row = sandbox.status()["qa"]
    assert row["deployed"] is None and row["desired"] == sandbox.head("qa")


def test_status_of_four_repositories_reads_the_store_in_as_many_queries_as_status_of_one(short_tmp):
    """Issue 28: at 1,000 repositories x 3 environments, ten queries per environment made `status --json` take 672 ms."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for i in range(3):
        path = short_tmp / f"r{i}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": f"r{i}", "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load(sandbox.config)
    store = Store(config.database)
    try:
        for repo in config.repositories:
            for env in repo.environments:
                commit, tree = sandbox.head(env.branch), sandbox.tree(env.branch)
                store.record_head(repo.name, env.name, commit, tree)
                dep = store.begin(
                    repo=repo.name,
                    env=env.name,
                    commit=commit,
                    tree=tree,
                    previous_commit=None,
                    kind="deploy",
                    trigger="startup",
                    actor="test",
                    now=time.time(),
                )
                store.finish(dep, "succeeded", now=time.time())
        store.add_lock(repo="r1", env="*", source="person", actor="alice", reason="audit", now=time.time())

        def queries(repo: str | None) -> tuple[int, list]:
            seen: list[str] = []
            store._db.connection.set_trace_callback(seen.append)  # every statement the store runs
            rows = all_status(config, store, repo)
            store._db.connection.set_trace_callback(None)
            return len(seen), rows

        one, _ = queries("shop")
        every, rows = queries(None)
    finally:
        store.close()
    assert [(r.repo, r.env, r.state, r.deployed == r.desired) for r in rows] == [
        (repo, env, "in-sync", True) for repo in ("shop", "r0", "r1", "r2") for env in ("qa", "staging")
    ]
    assert [len(r.locks) for r in rows] == [0, 0, 0, 0, 1, 1, 0, 0]
    assert every == one


def test_status_json_prints_one_environment_per_line(short_tmp):
    """json's C encoder does not indent: at 3,000 environments `indent=2` cost a third of `status --json` (issue 28)."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    lines = sandbox.command("status", "--json").stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    assert [json.loads(line.rstrip(","))["env"] for line in lines[1:-1]] == ["qa", "staging"]
