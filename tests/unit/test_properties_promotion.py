"""Properties of the promotion rule (gate/policy.judge) over any history of deployments and rollbacks (Hypothesis).

Real: git (a repository whose commits Hypothesis's steps make), the state store (SQLite, one per example) the
rule reads, `judge` itself. Drawn: which environment a push goes to, with which tree, whether it is a rollback,
whether its deployment succeeds, and CI's word on each tree over time (every environment requires `ci/test`, so a
tree that turned red after it ran shows that a rollback needs no gate). Nothing is faked.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitopsd.adapters.store import Store
from gitopsd.gate.policy import judge, rollback_trees
from gitopsd.gate.snapshot import GateEnvironment, GateRepository

ENVS = ("qa", "staging", "production")
TREES = 3  # a small pool, so that histories meet the same trees again


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A bare repository with TREES trees, all of them on main's history; every environment at main's first commit."""
    path = tmp_path_factory.mktemp("promotion") / "shop.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True)
    trees = [
        git(path, "mktree", stdin=f"100644 blob {git(path, 'hash-object', '-w', '--stdin', stdin=f'v{i}')}\trelease\n")
        for i in range(TREES)
    ]
    parent: list[str] = []
    first = ""
    for tree in trees:
        commit = git(path, "commit-tree", tree, *parent, "-m", "release", stdin="")
        first, parent = first or commit, ["-p", commit]
    git(path, "update-ref", "refs/heads/main", commit)
    gate = GateRepository(
        "shop",
        str(path),
        [GateEnvironment(env, env, (("main",) + ENVS)[i], require_checks=("ci/test",)) for i, env in enumerate(ENVS)],
    )
    return path, trees, first, gate


steps = st.lists(
    st.tuples(
        st.sampled_from(range(len(ENVS))),
        st.sampled_from(("push", "rollback", "ci")),
        st.sampled_from(range(TREES)),
        st.booleans(),
    ),
    max_size=16,
)


@settings(max_examples=40, deadline=None)
@given(history=steps)
def test_no_tree_reaches_an_environment_the_previous_one_did_not_run_and_a_rollback_is_always_accepted(repo, history):
    path, trees, first, gate = repo
    second = git(path, "commit-tree", trees[1], "-p", first, "-m", "release", stdin="")
    heads = dict.fromkeys(ENVS, second)
    ran: dict[str, list[tuple[int, str, str]]] = {env: [(0, "deploy", trees[0]), (0, "deploy", trees[1])] for env in ENVS}
    with tempfile.TemporaryDirectory(prefix="gt-prop-") as folder, Store(Path(folder) / "state.db") as store:
        for env in ENVS:  # two releases ran everywhere already, so a rollback has somewhere to go from the start
            for commit, tree in ((first, trees[0]), (second, trees[1])):
                store.finish(
                    store.begin(
                        repo="shop",
                        env=env,
                        commit=commit,
                        tree=tree,
                        previous_commit=None,
                        kind="deploy",
                        trigger="push",
                        actor="init",
                        now=0,
                    ),
                    "succeeded",
                    now=0,
                )
        for step, (i, action, pick, succeeds) in enumerate(history, 1):
            if action == "ci":  # CI's newest word on a tree: success or failure (a flaky test, a rerun)
                store.add_status(
                    repo="shop",
                    commit=first,
                    tree=trees[pick],
                    context="ci/test",
                    reporter="ci",
                    now=step,
                    state="success" if succeeds else "failure",
                )
                continue
            env = gate.environments[i]
            current, target = rollback_trees([(kind, tree) for _s, kind, tree in ran[env.name]])
            head_tree = git(path, "rev-parse", f"{heads[env.name]}^{{tree}}")
            if action == "rollback":  # `git revert` of the head: back to what runs (the head failed), or what ran before
                tree = current if head_tree != current else target
                if tree is None:
                    continue
            else:
                tree = trees[pick]
            new = git(path, "commit-tree", tree, "-p", heads[env.name], "-m", action, stdin="")
            verdict = judge(gate, str(path), store, env, heads[env.name], new, identity="alice", check_windows=False)
            if action == "rollback":
                assert verdict.accepted, f"a rollback of {env.name} to {tree[:7]} was refused: {verdict.rule}"
            if not verdict.accepted or verdict.kind == "unchanged":
                continue
            if verdict.kind == "promotion" and i > 0:
                upstream = ENVS[i - 1]
                assert any(t == tree for _s, _k, t in ran[upstream]), f"{tree[:7]} reached {env.name} unrun in {upstream}"
            heads[env.name] = new
            kind = "rollback" if verdict.kind == "rollback" else "deploy"
            deployment = store.begin(
                repo="shop",
                env=env.name,
                commit=new,
                tree=tree,
                previous_commit=None,
                kind=kind,
                trigger="push",
                actor="alice",
                now=step,
            )
            store.finish(deployment, "succeeded" if succeeds else "failed", now=step)
            if succeeds:
                ran[env.name].append((step, kind, tree))
    for i, env in enumerate(ENVS[1:], 1):  # the history as a whole: every tree ran upstream before it ran here
        for step, _kind, tree in ran[env]:
            assert any(t == tree and s <= step for s, _k, t in ran[ENVS[i - 1]]), (env, tree[:7], ran)


@given(
    st.lists(st.tuples(st.sampled_from(("deploy", "reapply", "rollback")), st.sampled_from("ABCDE")), max_size=30),
    st.sampled_from("ABCDE"),
)
def test_the_rollback_stack_runs_what_was_deployed_last_and_a_rollback_returns_to_the_tree_before(history, tree):
    current, target = rollback_trees(history + [("deploy", tree)])
    assert current == tree
    if target is not None:
        assert target != tree
        assert rollback_trees(history + [("deploy", tree), ("rollback", target)])[0] == target
