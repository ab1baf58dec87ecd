"""A newer head supersedes a rollout in flight (issue 25, item 2): the real daemon, real ansible-playbook runs on
local hosts in batches; the record says which deployment superseded which."""

from __future__ import annotations

from tests.rollout_support import HOSTS, batches_of, rollout_sandbox
from tests.support import Daemon


def test_a_head_pushed_during_batch_2_cancels_the_rest_of_the_rollout_and_rolls_out_from_batch_1(short_tmp):
    sandbox = rollout_sandbox(short_tmp)  # batches: p-1, then p-2, then p-3 and p-4
    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync", sandbox.head("production"), timeout=120)
        sandbox.write("app.txt", "v2")
        sandbox.write("SLEEP", "4")
        old = sandbox.commit("v2, slow to roll out")
        sandbox.push("main", "main:production")
        daemon.wait_for(lambda: "batch 2 of 3" in (sandbox.status()["production"]["reason"] or ""), 120, "batch 2")
        sandbox.remove("SLEEP")
        sandbox.write("app.txt", "v3")
        new = sandbox.commit("v3, the fix")
        sandbox.push("main", "main:production")
        daemon.wait_state("production", "in-sync", new, timeout=180)
    history = sandbox.history("production")
    superseded = next(d for d in history if d["commit"] == old)
    successor = next(d for d in history if d["commit"] == new)
    assert superseded["result"] == "canceled"
    assert superseded["outcome"].startswith(f"superseded by the newer head {new[:7]}: batch 2/3")
    assert successor["result"] == "succeeded" and successor["id"] > superseded["id"]
    assert f"supersedes deployment #{superseded['id']} (canceled at batch 2/3)" in successor["reason"]
    # The old rollout never reached batch 3; the new one went through every batch, from the first.
    assert {r.split(".")[0] for r in sandbox.runs() if f".{superseded['id']}:" in r} <= {"p-1", "p-2"}
    assert [b["hosts"] for b in batches_of(successor, sandbox)] == [["p-1"], ["p-2"], ["p-3", "p-4"]]
    assert {r.split(".")[0] for r in sandbox.runs() if f".{successor['id']}:" in r} == set(HOSTS)
