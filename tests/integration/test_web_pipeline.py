"""The dashboard's Pipeline page as web/pages.py builds it from a real repository and a real store (no server)."""
from __future__ import annotations

import time
from pathlib import Path

from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.web import pages
from tests.support import Sandbox


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
        store.add_rejection(repo="shop", tree=tree, env="staging", kind="reject", deployment_id=None,
                            commit=sandbox.head("qa"), actor="ops", reason="corrupts invoices", now=time.time())
        after = pages.pipeline(config, store)
    def staging(rows: list) -> pages.Cell:
        return next(c for c in rows[0]["cells"] if c.env == "staging")
    assert staging(before).promote_refused is None
    assert staging(after).promote_refused == (f"qa's tree {tree[:7]} is rejected for staging: "
                                              "ops rejected it for staging: corrupts invoices")
    template = (Path(pages.__file__).parent / "templates" / "pipeline.html").read_text()
    assert "{% if c.promote_refused %}" in template.split("m.action('/actions/promote'")[0]
