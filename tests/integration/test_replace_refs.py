"""Replace refs and grafts cannot make the gate judge other commits than the ones deployed.

The git CLI shows a replacement (refs/replace/<id>) or a graft in place of a real commit; pygit2,
which exports what the daemon deploys, does not. Real bare repositories, real pushes through the
real hook, and the real `gitopsd promote` and `gitopsd rollback`. Deployment records are written
into the real state store directly: these tests are about what git shows, not about Ansible.
"""

from __future__ import annotations

import time

import pytest

from gitopsd.adapters.store import Store
from tests.support import Sandbox, git

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]}


pytestmark = pytest.mark.sandbox(CHAIN)


def deployed(sandbox: Sandbox, env: str, commit: str) -> None:
    """Record a successful deployment of `commit` in `env`, as the daemon would."""
    store = Store(sandbox.state / "state.db")
    try:
        now = time.time()
        dep = store.begin(
            repo="shop",
            env=env,
            commit=commit,
            tree=sandbox.tree(commit),
            previous_commit=None,
            kind="deploy",
            trigger="test",
            actor="test",
            now=now,
        )
        store.finish(dep, "succeeded", now=now)
    finally:
        store.close()


def bare(sandbox: Sandbox, *args: str) -> str:
    """git in the bare repository, as the git user on the server could run it."""
    return git(sandbox.root, "--git-dir", str(sandbox.repo), *args).stdout.strip()


def real_tree(sandbox: Sandbox, rev: str) -> str:
    """The tree of `rev` in the bare repository, replace refs ignored (what pygit2 and the daemon see)."""
    return bare(sandbox, "--no-replace-objects", "rev-parse", f"{rev}^{{tree}}")


def commit_tree(sandbox: Sandbox, tree: str, *parents: str, message: str) -> str:
    """A commit made in the clone with any tree and parents (what an attacker can make)."""
    args = [a for p in parents for a in ("-p", p)]
    return git(sandbox.work, "commit-tree", *args, "-m", message, tree).stdout.strip()


def remote_text(proc) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


@pytest.fixture
def attack(sandbox):
    """Staging verified a good tree; the attacker has an evil commit on production and a decoy for it."""
    production = sandbox.head("production")
    sandbox.write("app.txt", "good")
    good = sandbox.commit("good")
    sandbox.push("main")
    deployed(sandbox, "staging", good)
    sandbox.write("app.txt", "evil: never deployed anywhere")
    git(sandbox.work, "add", "-A")
    evil_tree = git(sandbox.work, "write-tree").stdout.strip()
    evil = commit_tree(sandbox, evil_tree, production, message="evil")
    decoy = commit_tree(sandbox, sandbox.tree(good), production, message="looks promoted")
    # Unrelated history whose tree staging did verify: a rewrite of production's history.
    orphan = commit_tree(sandbox, sandbox.tree(good), message="history rewritten")
    orphan_decoy = commit_tree(sandbox, sandbox.tree(good), production, message="looks like a fast-forward")
    return {"production": production, "good": good, "evil": evil, "decoy": decoy, "orphan": orphan, "orphan_decoy": orphan_decoy}


def test_a_push_of_a_replace_ref_is_refused_and_the_evil_commit_after_it_too(sandbox, attack):
    evil, decoy = attack["evil"], attack["decoy"]
    proc = sandbox.push(f"{decoy}:refs/replace/{evil}", check=False)
    assert proc.returncode == 1
    text = remote_text(proc)
    assert f"remote: gitopsd: push to refs/replace/{evil} refused" in text
    assert "remote:   rule: replace refs (refs/replace/*) are not accepted in a deployment repository" in text
    assert f"remote:   this push would create refs/replace/{evil}." in text
    assert "remote:   what to do instead:" in text
    assert "remote:     keep replace refs in your clone (git replace works locally) and leave them out of the push" in text
    assert bare(sandbox, "for-each-ref", "refs/replace/") == ""
    proc = sandbox.push(f"{evil}:refs/heads/production", check=False)
    assert proc.returncode == 1
    assert "rule: production only takes trees that were deployed and verified in staging" in remote_text(proc)
    assert sandbox.head("production") == attack["production"]


def test_a_replace_ref_that_makes_unrelated_history_look_like_a_fast_forward_is_refused(sandbox, attack):
    orphan, orphan_decoy = attack["orphan"], attack["orphan_decoy"]
    proc = sandbox.push(f"{orphan_decoy}:refs/replace/{orphan}", check=False)
    assert proc.returncode == 1
    assert f"remote: gitopsd: push to refs/replace/{orphan} refused" in remote_text(proc)
    proc = sandbox.push(f"+{orphan}:refs/heads/production", check=False)
    assert proc.returncode == 1
    assert "rule: environment branches only move forward" in remote_text(proc)
    assert sandbox.head("production") == attack["production"]


def test_updating_or_deleting_replace_refs_and_gitopsds_notes_is_refused_but_other_notes_pass(sandbox, attack):
    # Written on the server by the git user (not by a push): a push may neither move nor delete it.
    sandbox.push(f"{attack['orphan_decoy']}:refs/heads/feature/orphan-decoy")
    bare(sandbox, "update-ref", f"refs/replace/{attack['orphan']}", attack["orphan_decoy"])
    proc = sandbox.push(f"{attack['evil']}:refs/replace/{attack['orphan']}", "--force", check=False)
    assert proc.returncode == 1 and f"this push would update refs/replace/{attack['orphan']}." in remote_text(proc)
    proc = sandbox.push(f":refs/replace/{attack['orphan']}", check=False)
    assert proc.returncode == 1 and f"this push would delete refs/replace/{attack['orphan']}." in remote_text(proc)
    git(sandbox.work, "notes", "--ref", "gitopsd", "add", "-m", "forged audit entry", attack["good"])
    proc = sandbox.push("refs/notes/gitopsd", check=False)
    assert proc.returncode == 1
    assert "remote:   rule: refs/notes/gitopsd is gitopsd's own record; pushes may not change it" in remote_text(proc)
    git(sandbox.work, "notes", "add", "-m", "a developer's note", attack["good"])
    assert sandbox.push("refs/notes/commits").returncode == 0


@pytest.mark.parametrize("how", ["git replace", "update-ref", "grafts", "core.useReplaceRefs"])
def test_replacements_written_on_the_server_do_not_fool_the_hook(sandbox, attack, how):
    """The git user can write refs/replace (or info/grafts) in the bare repository; the hook judges the real commits."""
    production, evil, decoy, orphan = attack["production"], attack["evil"], attack["decoy"], attack["orphan"]
    sandbox.push(
        f"{evil}:refs/heads/feature/evil",
        f"{decoy}:refs/heads/feature/decoy",
        f"{orphan}:refs/heads/feature/orphan",
        f"{attack['orphan_decoy']}:refs/heads/feature/orphan-decoy",
    )
    if how == "git replace":
        bare(sandbox, "replace", evil, decoy)
        bare(sandbox, "replace", orphan, attack["orphan_decoy"])
    elif how == "update-ref":
        bare(sandbox, "update-ref", f"refs/replace/{evil}", decoy)
        bare(sandbox, "update-ref", f"refs/replace/{orphan}", attack["orphan_decoy"])
    elif how == "grafts":  # git 2.39 still honours the deprecated graft file
        (sandbox.repo / "info").mkdir(exist_ok=True)
        (sandbox.repo / "info" / "grafts").write_text(f"{orphan} {production}\n")
    else:  # a repository setting that would switch replacement back on
        bare(sandbox, "replace", evil, decoy)
        bare(sandbox, "replace", orphan, attack["orphan_decoy"])
        bare(sandbox, "config", "core.useReplaceRefs", "true")
    if how != "grafts":
        assert bare(sandbox, "rev-parse", f"{evil}^{{tree}}") == sandbox.tree(attack["good"]), "the decoy is in place"
        proc = sandbox.push(f"{evil}:refs/heads/production", check=False)
        assert proc.returncode == 1
        assert "rule: production only takes trees that were deployed and verified in staging" in remote_text(proc)
    proc = sandbox.push(f"+{orphan}:refs/heads/production", check=False)
    assert proc.returncode == 1
    assert "rule: environment branches only move forward" in remote_text(proc)
    assert sandbox.head("production") == production


def test_promote_copies_the_real_tree_of_the_source_not_a_replacement(sandbox):
    sandbox.write("app.txt", "v1")
    v1 = sandbox.commit("v1")
    sandbox.write("app.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    bare(sandbox, "update-ref", "refs/heads/staging", v2)
    deployed(sandbox, "staging", v1)
    deployed(sandbox, "staging", v2)
    # staging's head made to look like v1 (verified in staging too, but not what staging runs now).
    decoy = commit_tree(sandbox, sandbox.tree(v1), v1, message="v2, honest")
    sandbox.push(f"{decoy}:refs/heads/feature/decoy")
    bare(sandbox, "replace", v2, decoy)
    out = sandbox.command("promote", "staging", "production").stdout
    assert f"its tree {real_tree(sandbox, v2)[:7]} is what staging runs" in out
    assert real_tree(sandbox, "refs/heads/production") == real_tree(sandbox, v2) != real_tree(sandbox, v1)


def test_rollback_reads_the_real_head_not_a_replacement(sandbox):
    sandbox.write("app.txt", "v1")
    v1 = sandbox.commit("v1")
    sandbox.write("app.txt", "v2")
    v2 = sandbox.commit("v2")
    sandbox.push("main")
    bare(sandbox, "update-ref", "refs/heads/production", v2)
    deployed(sandbox, "production", v1)
    deployed(sandbox, "production", v2)
    # production's head made to look as if it already ran v1: a rollback would then do nothing.
    decoy = commit_tree(sandbox, sandbox.tree(v1), v1, message="v2, honest")
    sandbox.push(f"{decoy}:refs/heads/feature/decoy")
    bare(sandbox, "replace", v2, decoy)
    out = sandbox.command("rollback", "production").stdout
    assert "whose tree is the one deployment #1" in out, out
    head = sandbox.head("production")
    assert real_tree(sandbox, head) == real_tree(sandbox, v1) != real_tree(sandbox, v2)
    assert bare(sandbox, "--no-replace-objects", "rev-parse", f"{head}^") == v2
