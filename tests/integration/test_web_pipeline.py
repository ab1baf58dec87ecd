"""The dashboard's Pipeline page as web/pages.py builds it from a real repository and a real store (no server)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from gitopsd.adapters.store import Store
from gitopsd.config import load
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
