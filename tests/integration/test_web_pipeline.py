"""The dashboard's Pipeline page as web/pages.py builds it from a real repository and a real store (no server)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitopsd.adapters.store import Store
from gitopsd.base import gitcli
from gitopsd.config import load
from gitopsd.core.types import FailureStatus
from gitopsd.services.status import all_status
from gitopsd.web import pages
from tests.support import Sandbox, run


def test_a_tree_rejected_for_the_next_environment_gets_the_reason_instead_of_a_promote_button(short_tmp: Path) -> None:
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    sandbox.write("a.txt", "2")
    sandbox.commit("two")
    sandbox.push("main")
    sandbox.push("main:qa")
    config = load(sandbox.config)
    tree = sandbox.tree("qa")
    with Store.of(config) as store:
        before = pages.pipeline(config, store)
        store.add_rejection(
            repo="shop",
            tree=tree,
            env="staging",
            kind="reject",
            deployment_id=None,
            commit=sandbox.head("qa"),
            actor="ops",
            reason="corrupts invoices",
            now=time.time(),
        )
        after = pages.pipeline(config, store)

    def staging(rows: list) -> pages.Cell:
        return next(c for c in rows[0]["cells"] if c.env == "staging")

    assert staging(before).promote_refused is None
    assert staging(after).promote_refused == (
        f"qa's tree {tree[:7]} is rejected for staging: ops rejected it for staging: corrupts invoices"
    )
    template = (Path(pages.__file__).parent / "templates" / "pipeline.html").read_text()
    assert "{% if c.promote_refused %}" in template.split("m.action('/actions/promote'")[0]


def test_the_pipeline_page_shows_a_page_of_repositories_filtered_by_name_and_by_an_environments_state(short_tmp: Path) -> None:
    """Issue 28: nobody reads 3,000 cards, and building them all took seconds at 1,000 repositories."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for name in ("web", "worker"):
        path = short_tmp / f"{name}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": name, "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load(sandbox.config)
    with Store.of(config) as store:
        dep = store.begin(
            repo="web",
            env="qa",
            commit=sandbox.head("qa"),
            tree=sandbox.tree("qa"),
            previous_commit=None,
            kind="deploy",
            trigger="push",
            actor="test",
            now=time.time(),
        )
        store.finish(dep, "succeeded", now=time.time())

        def shown(**query: Any) -> tuple[list[str], int, int]:
            view = pages.pipeline_view(config, store, per_page=2, **query)
            return [row["repo"] for row in view["rows"]], view["page"], view["pages"]

        assert shown() == (["shop", "web"], 1, 2)
        assert shown(page=2) == (["worker"], 2, 2)
        assert shown(page=9) == (["worker"], 2, 2)
        assert shown(repo="w") == (["web", "worker"], 1, 1)
        assert shown(state="in-sync") == (["web"], 1, 1)
        assert shown(repo="shop", state="in-sync") == ([], 1, 1)


def test_a_pipeline_page_shows_each_branchs_commit_and_state_as_status_does_starting_git_only_for_commits_not_seen_before(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28: a git process per repository and ten queries per environment made a page of 50 take most of a second."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for name in ("web", "worker"):
        path = short_tmp / f"{name}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": name, "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load(sandbox.config)
    started: list[tuple[str, ...]] = []
    git = gitcli.git
    monkeypatch.setattr(gitcli, "git", lambda repo, *args, **kw: started.append(args) or git(repo, *args, **kw))
    with Store.of(config) as store:
        for repo, result in (("web", "succeeded"), ("worker", "failed")):
            dep = store.begin(
                repo=repo,
                env="qa",
                commit=sandbox.head("qa"),
                tree=sandbox.tree("qa"),
                previous_commit=None,
                kind="deploy",
                trigger="push",
                actor="test",
                now=time.time(),
            )
            store.finish(dep, result, now=time.time())
        store.record_failure("worker", "qa", FailureStatus(sandbox.head("qa"), 3, None, True, "the playbook failed"))

        def cards() -> dict[tuple[str, str], tuple[str | None, str | None, str, str | None, str | None]]:
            rows = pages.pipeline_view(config, store, per_page=2, page=2)["rows"]
            rows += pages.pipeline_view(config, store, per_page=2)["rows"]
            return {(r["repo"], c.env): (c.commit, c.tree, c.subject, c.state, c.reason) for r in rows for c in r["cells"]}

        first = cards()
        looked = len(started)
        assert cards() == first and len(started) == looked  # nothing new: the ref files and the commits seen before
        statuses = {(s.repo, s.env): (s.desired, s.state, s.reason) for s in all_status(config, store)}
        assert {k: (v[0], v[3], v[4]) for k, v in first.items() if k[1] != "main"} == statuses
        assert statuses[("worker", "qa")][1:] == ("stalled", "the playbook failed")
        assert first[("shop", "main")] == (sandbox.head("main"), sandbox.tree("main"), "initial content", None, None)
        sandbox.write("a.txt", "moved")
        moved = sandbox.commit("moved on")
        sandbox.push("main")
        assert cards()[("shop", "main")] == (moved, sandbox.tree("main"), "moved on", None, None)
        assert len(started) == looked + 1  # the one repository whose branch moved to a commit not seen before


def test_an_environments_page_says_the_locks_and_freezes_in_force_as_status_does(short_tmp: Path) -> None:
    """The page a deployer opens to break glass says what holds promotions, with status's words."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["p-1"]})
    config = load(sandbox.config)
    repo = config.repository("shop")
    assert repo is not None
    with Store.of(config) as store:
        assert pages.environment_page(config, store, repo, repo.environments[1], None)["locks"] == []
        store.add_lock(
            repo="shop", env="production", source="person", actor="alice", reason="db migration", now=time.time(), expires_at=None
        )
        page = pages.environment_page(config, store, repo, repo.environments[1], None)
        [production] = [s for s in all_status(config, store) if s.env == "production"]
    assert (
        page["locks"] == list(production.locks) and "locked by alice" in page["locks"][0] and "db migration" in page["locks"][0]
    )
    template = (Path(pages.__file__).parent / "templates" / "environment.html").read_text()
    assert "{% for line in locks %}" in template.split('id="live"')[1]  # inside the live part: it goes when lifted
