"""`require_provenance` at the door: the pre-receive hook refuses a tree with no recorded provenance statement.

Real: a bare repository with gitopsd's hook, real pushes, the state store CI records its statements in."""

from __future__ import annotations

import time

from gitopsd.adapters.store import Store
from gitopsd.config import load
from tests.support import Sandbox


def test_a_tree_without_recorded_provenance_is_refused_by_the_hook_and_one_with_it_passes(short_tmp):
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"require_provenance": True}})
    sandbox.write("app.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    tree = sandbox.tree(v2)
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    text = "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))
    assert (
        "remote:   rule: qa only takes trees whose built artifacts have signed provenance (require_provenance)\n"
        f"remote:   commit {v2[:7]} has tree {tree[:7]}, for which no provenance statement is recorded."
    ) in text
    assert sandbox.head("qa") != v2
    with Store(load(sandbox.config).database) as store:  # as CI records it when it signs what it built
        store.record_attestation(
            repo="shop",
            tree=tree,
            name="dist/app.tar.gz",
            sha256="a" * 64,
            signed_sha256="b" * 64,
            statement="/nowhere",
            now=time.time(),
        )
    text = "\n".join(line for line in sandbox.push("main:qa", check=False).stderr.splitlines() if "remote:" in line)
    assert "remote:   artifact dist/app.tar.gz: kept sha256 aaaaaaaaaaaa, but its statement signs sha256 bbbbbbbbbbbb" in text
    with Store(load(sandbox.config).database) as store:
        store.record_attestation(
            repo="shop",
            tree=tree,
            name="dist/app.tar.gz",
            sha256="a" * 64,
            signed_sha256="a" * 64,
            statement="/nowhere",
            now=time.time(),
        )
    assert sandbox.push("main:qa").returncode == 0
    assert sandbox.head("qa") == v2
