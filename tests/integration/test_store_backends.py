"""Every Store method, on SQLite and on a real PostgreSQL (tests/postgres_fixture.py): the same answers from both."""

from __future__ import annotations

import sqlite3

import pytest

from gitopsd.adapters.store import Store
from gitopsd.adapters.store import schema as migrations
from gitopsd.core.errors import StoreError
from gitopsd.core.types import Block, DriftReport, FailureStatus, HostInfo, TaskChange, WatchWindow
from gitopsd.gate import snapshot

T1, T2, T3 = "a" * 40, "b" * 40, "c" * 40


def deploy(store, env="qa", commit="c1", tree=T1, kind="deploy", result="succeeded", now=100.0, detail=None):
    dep = store.begin(
        repo="shop", env=env, commit=commit, tree=tree, previous_commit=None, kind=kind, trigger="push", actor="alice", now=now
    )
    if result not in ("running",):
        store.finish(dep, result, now=now + 5, outcome="done", detail=detail or {})
    return dep


def test_deployments_are_recorded_read_and_finished_alike(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    first = deploy(store, tree=T1)
    second = deploy(store, commit="c2", tree=T2, result="failed", now=200.0)
    queued = store.begin(
        repo="shop",
        env="qa",
        commit="c3",
        tree=T3,
        previous_commit="c2",
        kind="rollback",
        trigger="cli",
        actor="unknown",
        now=300.0,
        queued=True,
        reason="why",
    )
    assert (first, second) == (1, 2) and queued == 3
    assert store.get(queued).result == "queued"
    store.started(queued, 301.0)
    assert store.get(queued).result == "running" and store.get(queued).started_at == 301.0
    assert store.attribute("shop", "c3", "bob", "push", "pushed", 0) == 1
    assert store.get(queued).actor == "bob"
    store.set_progress(queued, {"batch": 2, "batches": 3})
    store.set_progress(queued, {"batch": 3, "batches": 3})
    assert store.get(queued).detail == {"progress": {"batch": 3, "batches": 3}}
    store.set_workdir(queued, tmp_path / "w")
    assert store.get(queued).workdir == str(tmp_path / "w")
    assert [d.id for d in store.history(repo="shop", env="qa")] == [3, 2, 1]
    assert [d.id for d in store.history(limit=1)] == [3]
    assert store.last("shop", "qa").id == 3
    assert store.deployed("shop", "qa").id == 1
    assert store.tree_succeeded("shop", "qa", T1) and not store.tree_succeeded("shop", "qa", T2)
    assert store.tree_tried("shop", "qa", T2) and not store.tree_tried("shop", "staging", T1)
    assert store.successes("shop", "qa") == [("deploy", T1)]
    interrupted = store.mark_interrupted(400.0)
    assert [d.id for d in interrupted] == [3] and store.get(3).result == "interrupted"
    assert store.get(99) is None


def test_a_push_whose_nudge_came_after_the_daemons_start_began_its_deployment_names_the_pusher(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    started = store.begin(
        repo="shop",
        env="qa",
        commit="c1",
        tree=T1,
        previous_commit=None,
        kind="deploy",
        trigger="startup",
        actor="gitopsd",
        now=100.0,
    )
    rolled_back = store.begin(
        repo="shop",
        env="qa",
        commit="c1",
        tree=T1,
        previous_commit=None,
        kind="deploy",
        trigger="auto-rollback",
        actor="gitopsd",
        now=100.0,
    )
    assert store.attribute("shop", "c1", "alice", "push", None, 0) == 1
    assert (store.get(started).actor, store.get(started).trigger) == ("alice", "push")
    assert store.get(rolled_back).actor == "gitopsd"  # what gitopsd did itself stays its own


def test_ids_continue_above_deployment_folders_and_old_workdirs_are_found(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    assert store.continue_ids_after(41) == 42
    assert store.continue_ids_after(10) is None
    assert deploy(store) == 42
    for i in range(3):
        dep = deploy(store, commit=f"c{i}")
        store.set_workdir(dep, tmp_path / f"w{i}")
    assert [i for i, _w in store.old_workdirs(keep=1)] == [44, 43]
    store.clear_workdir(43)
    assert [i for i, _w in store.old_workdirs(keep=1)] == [44]


def test_retries_stalls_bad_trees_blocks_and_heads(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    store.record_failure("shop", "qa", FailureStatus("c1", 2, 50.0, False, "boom"))
    store.record_failure("shop", "qa", FailureStatus("c1", 3, None, True, "stalled", failed=True))
    assert store.failure("shop", "qa") == FailureStatus("c1", 3, None, True, "stalled", failed=True)
    assert store.clear_failure("shop", "qa") and store.failure("shop", "qa") is None
    store.mark_bad_tree("shop", "qa", T1, "broke", 1.0)
    store.mark_bad_tree("shop", "qa", T1, "broke again", 2.0)
    assert store.bad_tree("shop", "qa", T1) == "broke again" and store.clear_bad_trees("shop", "qa") == 1
    store.block("shop", "qa", Block("c9", "c1", "not promoted", 5.0))
    assert store.blocked("shop", "qa") == Block("c9", "c1", "not promoted", 5.0)
    assert store.clear_block("shop", "qa") and store.blocked("shop", "qa") is None
    store.record_head("shop", "qa", "c1", T1)
    store.record_head("shop", "qa", "c2", T2)
    assert store.recorded_heads() == {("shop", "qa"): ("c2", T2)}
    store.set_unwatched({"shop": "inotify limit"})
    store.set_unwatched({"web": "gone"})
    assert store.unwatched() == {"web": "gone"}


def test_admissions_suspensions_and_syncs(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    assert store.admit(repo="shop", env="qa", commit="c1", kind="override", actor="root", reason="hotfix", now=1.0) == 1
    store.admit(repo="shop", env="qa", commit="c1", kind="rollback", actor="root", reason="again", now=2.0)
    assert store.admission("shop", "qa", "c1").reason == "again"
    assert [a.id for a in store.admissions(repo="shop")] == [2, 1] and store.admissions(env="prod") == []
    store.suspend("shop", "qa", actor="root", reason="freeze", now=3.0)
    assert store.suspension("shop", "qa").reason == "freeze"
    assert store.resume("shop", "qa") and store.suspension("shop", "qa") is None
    store.request_sync("shop", "qa", commit="c1", actor="root", reason=None, now=4.0)
    assert store.sync_request("shop", "qa").commit == "c1"
    assert store.clear_sync("shop", "qa") and store.sync_request("shop", "qa") is None


def test_statuses_ci_heads_and_human_gates(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    store.add_status(repo="shop", commit="c1", tree=T1, context="ci/test", state="pending", reporter="ci", now=1.0)
    store.add_status(
        repo="shop",
        commit="c2",
        tree=T1,
        context="ci/test",
        state="success",
        reporter="ci",
        now=2.0,
        target_url="http://ci/1",
        description="ok",
    )
    assert [(s.context, s.state, s.commit) for s in store.statuses("shop", T1)] == [("ci/test", "success", "c2")]
    assert [s.state for s in store.status_history("shop", "c1")] == ["pending"]
    store.set_ci_heads("shop", {"main": "c1", "feature": "c2"})
    store.set_ci_heads("shop", {"main": "c3"})
    assert store.ci_heads("shop") == {"main": "c3"}
    store.add_signoff(repo="shop", env="staging", commit="c1", tree=T1, actor="tess", verdict="signoff", note="ok", now=3.0)
    assert store.signoffs("shop", "staging", T1) == [("tess", "signoff", "ok", 3.0)]
    assert store.add_rc(
        repo="shop",
        name="r1",
        commit="c1",
        tree=T1,
        source_env="staging",
        target_env="production",
        created_by="alice",
        self_identities=["alice", "bob"],
        now=4.0,
    )
    assert not store.add_rc(
        repo="shop",
        name="r1",
        commit="c1",
        tree=T1,
        source_env="staging",
        target_env="production",
        created_by="alice",
        self_identities=[],
        now=5.0,
    )
    assert store.rc("shop", "r1").self_identities == ("alice", "bob") and store.rc("shop", "nope") is None
    assert [(r.name, r.commit_id, r.tree, r.source_env, r.target_env, r.created_by, r.created_at) for r in store.rcs("shop")] == [
        ("r1", "c1", T1, "staging", "production", "alice", 4.0)
    ]
    assert store.rcs_for_tree("shop", T1, "production") == [("r1", 4.0)]
    store.add_approval(repo="shop", rc="r1", tree=T1, actor="carol", kind="approve", note="", now=6.0)
    assert store.approval_rows("shop", "r1") == [("carol", "approve", "", 6.0)]
    store.record_push("shop", "feature", "c1", "bob", 7.0)
    store.record_push("shop", "feature", "c1", "bob", 8.0)
    assert store.pushers("shop", ["c1", "c2"]) == {"bob"}
    keys = [("shop", "production", T1), ("shop", "production", T2)]
    assert store.rcs_with_approvals(keys) == [("shop", "production", T1, "r1", 4.0, "carol", "approve", 6.0)]
    assert store.signoffs_of([("shop", "staging", T1)]) == [("shop", "staging", T1, "tess", "signoff", "ok", 3.0)]


def test_previews_read_back_as_records_newest_first_by_candidate_target_or_id(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    ask = dict(repo="shop", source_env="staging", target_env="production", commit="c1", tree=T1, target_deployment=0)
    first = store.add_preview(**ask, rc="r1", requested_by="alice", now=10.0)
    second = store.add_preview(**ask, rc="", requested_by="bob", now=11.0)
    store.update_preview(first, state="running", target_deployment=7)
    store.update_preview(first, state="done", now=12.0, reason="web-1: 1 file", digest="d1", result='{"hosts": {}}')
    (done,) = store.previews("shop", rc="r1")
    assert (done.id, done.repo, done.source_env, done.target_env, done.commit_id, done.tree, done.rc) == (
        first,
        "shop",
        "staging",
        "production",
        "c1",
        T1,
        "r1",
    )
    assert (done.target_deployment, done.requested_by, done.requested_at, done.finished_at, done.state) == (
        7,
        "alice",
        10.0,
        12.0,
        "done",
    )
    assert (done.reason, done.digest, done.result) == ("web-1: 1 file", "d1", '{"hosts": {}}')
    assert [(p.id, p.state, p.finished_at, p.reason) for p in store.previews("shop", target_env="production")] == [
        (second, "queued", None, None),
        (first, "done", 12.0, "web-1: 1 file"),
    ]
    assert [p.requested_by for p in store.previews("shop", preview_id=second, limit=1)] == ["bob"]


def test_break_glass_requests_read_back_as_records_whose_json_names_every_column(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    ask = dict(repo="shop", env="production", reason="hotfix", confirm_within=600.0, lasts=3600.0)
    first = store.ask_break_glass(**ask, asked_by="alice", now=10.0)
    second = store.ask_break_glass(**ask, asked_by="bob", now=11.0)
    assert store.confirm_break_glass(first, by="carol", reason="seen", now=20.0)
    asked = store.break_glass_request(first)
    assert (asked.id, asked.repo, asked.env, asked.asked_by, asked.reason, asked.asked_at) == (
        first,
        "shop",
        "production",
        "alice",
        "hotfix",
        10.0,
    )
    assert (
        asked.confirm_before,
        asked.lasts,
        asked.confirmed_by,
        asked.confirm_reason,
        asked.confirmed_at,
        asked.expires_at,
    ) == (610.0, 3600.0, "carol", "seen", 20.0, 3620.0)
    assert store.break_glass_request(second + 1) is None
    assert [r.as_json() for r in store.break_glass_requests(30.0)] == [
        {
            "id": first,
            "repo": "shop",
            "env": "production",
            "asked_by": "alice",
            "reason": "hotfix",
            "asked_at": 10.0,
            "confirm_before": 610.0,
            "lasts": 3600.0,
            "confirmed_by": "carol",
            "confirm_reason": "seen",
            "confirmed_at": 20.0,
            "expires_at": 3620.0,
        },
        {
            "id": second,
            "repo": "shop",
            "env": "production",
            "asked_by": "bob",
            "reason": "hotfix",
            "asked_at": 11.0,
            "confirm_before": 611.0,
            "lasts": 3600.0,
            "confirmed_by": None,
            "confirm_reason": None,
            "confirmed_at": None,
            "expires_at": None,
        },
    ]


def test_the_lock_history_and_expired_freezes_read_back_as_records_whose_json_names_every_column(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    person = store.add_lock(repo="shop", env="production", source="person", actor="alice", reason="release", now=10.0)
    alert = store.add_lock(
        repo="shop", env="*", source="alert", alert="Errors{a=1}", actor="Errors", reason="firing", now=11.0, expires_at=50.0
    )
    assert store.lift_locks(repo="shop", env="production", by="bob", now=20.0, reason="done") == 1
    (expired,) = store.expire_alert_locks(60.0)
    assert (expired.id, expired.repo, expired.env, expired.source, expired.alert, expired.actor, expired.reason) == (
        alert,
        "shop",
        "*",
        "alert",
        "Errors{a=1}",
        "Errors",
        "firing",
    )
    assert expired.lock().describe() == store.lock_history(1)[0].lock().describe()
    assert store.expire_alert_locks(61.0) == []
    assert [r.as_json() for r in store.lock_history(10)] == [
        {
            "id": alert,
            "repo": "shop",
            "env": "*",
            "source": "alert",
            "alert": "Errors{a=1}",
            "actor": "Errors",
            "reason": "firing",
            "created_at": 11.0,
            "expires_at": 50.0,
            "lifted_at": 50.0,
            "lifted_by": "expired",
            "lift_reason": "Alertmanager did not send the alert again before the freeze's end",
        },
        {
            "id": person,
            "repo": "shop",
            "env": "production",
            "source": "person",
            "alert": "",
            "actor": "alice",
            "reason": "release",
            "created_at": 10.0,
            "expires_at": None,
            "lifted_at": 20.0,
            "lifted_by": "bob",
            "lift_reason": "done",
        },
    ]


def test_every_environments_records_for_status_read_back_as_one_record_with_a_field_per_table(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    assert store.environment_records(200.0).covered == set()
    ok = deploy(store, env="qa", commit="c1", now=100.0)
    failed = deploy(store, env="qa", commit="c2", tree=T2, result="failed", now=110.0)
    store.record_head("shop", "qa", "c2", T2)
    store.record_failure("shop", "qa", FailureStatus("c2", 1, 150.0, False, "it broke"))
    store.block("shop", "qa", Block("c2", "c1", "not judged", 120.0))
    store.suspend("shop", "qa", actor="alice", reason="maintenance", now=130.0)
    store.mark_bad_tree("shop", "qa", T2, "it broke", 140.0)
    lock = store.add_lock(repo="shop", env="*", source="person", actor="bob", reason="release", now=145.0)
    records = store.environment_records(200.0)
    assert records.covered == {("shop", "qa")}
    assert records.last[("shop", "qa")].id == failed and records.deployed[("shop", "qa")].id == ok
    assert records.drift == {} and records.watch == {}
    assert records.failure[("shop", "qa")].reason == "it broke" and records.blocked[("shop", "qa")].deployed_commit == "c1"
    assert records.suspension[("shop", "qa")].actor == "alice" and records.bad_trees == {("shop", "qa", T2): "it broke"}
    assert [lock_.id for lock_ in records.locks] == [lock]


def test_the_records_of_some_repositories_are_theirs_only_and_equal_to_what_every_environments_records_hold(
    store_factory, tmp_path
):
    """A dashboard page reads its 50 repositories' records, not 3,000 environments' (issue 28)."""
    store = store_factory(tmp_path / "state.db")
    for repo in ("shop", "web", "worker"):
        for commit, tree, result, now in (("c1", T1, "succeeded", 100.0), ("c2", T2, "failed", 110.0)):
            dep = store.begin(
                repo=repo,
                env="qa",
                commit=commit,
                tree=tree,
                previous_commit=None,
                kind="deploy",
                trigger="push",
                actor="t",
                now=now,
            )
            store.finish(dep, result, now=now + 1)
        store.record_head(repo, "qa", "c2", T2)
        store.record_failure(repo, "qa", FailureStatus("c2", 1, 150.0, False, f"{repo} broke"))
        store.block(repo, "qa", Block("c2", "c1", f"{repo} not judged", 120.0))
        store.suspend(repo, "qa", actor="alice", reason=f"{repo} maintenance", now=130.0)
        store.mark_bad_tree(repo, "qa", T2, f"{repo} broke", 140.0)
    every, some = store.environment_records(200.0), store.environment_records(200.0, ["web", "worker"])
    pairs = {("web", "qa"), ("worker", "qa")}
    assert some.covered == pairs
    for table in ("last", "deployed", "failure", "blocked", "suspension"):
        assert getattr(some, table) == {pair: getattr(every, table)[pair] for pair in pairs}, table
    assert some.bad_trees == {k: v for k, v in every.bad_trees.items() if k[0] != "shop"} and len(some.bad_trees) == 2
    assert some.locks == every.locks


def test_dora_and_metrics_reads(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    assert store.seen_tips("shop") is None
    store.record_seen("shop", [("c1", "push"), ("m1", "promote")], 10.0, ["c1"])
    store.record_seen("shop", [("c1", "push")], 20.0, ["c1", "c2"])
    assert store.seen_tips("shop") == ["c1", "c2"]
    checks = {"batches": [{"checks": [{"name": "http http://x", "ok": True}, {"name": "playbook verify.yml", "ok": False}]}]}
    dep = deploy(store, env="production", commit="c1", now=100.0, detail=checks)
    store.record_deployed_commits(store.get(dep), ["c1", "m1"], ("promote",))
    store.record_deployed_commits(store.get(dep), ["c1"], ("promote",))  # the first record stays
    assert store.dora_lead_times(None, "production", 0.0) == [95.0]
    assert store.dora_lead_times("shop", "production", 200.0) == []
    rollback = deploy(store, env="production", commit="c2", kind="rollback", result="failed", now=200.0)
    assert [tuple(r[:3]) for r in store.dora_deployments(None, "production", 0.0)] == [
        ("shop", False, True),
        ("shop", True, False),
    ]
    assert store.dora_first_deployment("shop", "production") == 100.0
    running = store.begin(
        repo="shop", env="qa", commit="c3", tree=T3, previous_commit=None, kind="deploy", trigger="push", actor="a", now=300.0
    )
    assert store.deployment_ids(0) == (running, [(running, "shop", "qa", "running")])
    totals = store.deployment_totals(0, rollback, (1.0, 10.0))
    assert sorted((r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in totals) == [
        ("deploy", "succeeded", False, 1, 1, 5.0),
        ("rollback", "failed", False, 1, 1, 5.0),
    ]
    assert [tuple(r) for r in store.lead_times(0, rollback, (60.0, 100.0))] == [("shop", "production", 1, 1, 95.0)]
    assert sorted((r[2], bool(r[3]), r[4]) for r in store.check_totals(0, rollback)) == [
        ("http", True, 1),
        ("playbook", False, 1),
    ]


def test_the_totals_for_metrics_and_the_rows_history_shows_of_releases_name_their_fields(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    checks = {"batches": [{"checks": [{"name": "http http://x", "ok": True}]}]}
    dep = deploy(store, env="production", commit="c1", now=100.0, detail=checks)
    store.record_seen("shop", [("c1", "push")], 10.0, ["c1"])
    store.record_deployed_commits(store.get(dep), ["c1"], ())
    [total] = store.deployment_totals(0, dep, (1.0, 10.0))
    assert (total.kind, total.result, total.bucket, total.deployments, total.seconds, total.last_success) == (
        "deploy",
        "succeeded",
        1,
        1,
        5.0,
        105.0,
    )
    [lead] = store.lead_times(0, dep, (60.0, 100.0))
    assert (lead.env, lead.bucket, lead.changes, lead.seconds) == ("production", 1, 1, 95.0)
    [check] = store.check_totals(0, dep)
    assert (check.type, bool(check.passed), check.checks) == ("http", True, 1)
    store.add_signoff(repo="shop", env="staging", commit="c1", tree=T1, actor="tess", verdict="signoff", note="ok", now=3.0)
    store.add_rc(
        repo="shop",
        name="r1",
        commit="c1",
        tree=T1,
        source_env="staging",
        target_env="production",
        created_by="alice",
        self_identities=[],
        now=4.0,
    )
    [word] = store.rcs_with_approvals([("shop", "production", T1)])
    assert (word.name, word.created_at, word.actor) == ("r1", 4.0, None)  # no approval yet
    [signoff] = store.signoffs_of([("shop", "staging", T1)])
    assert (signoff.actor, signoff.verdict, signoff.at) == ("tess", "signoff", 3.0)


def test_watches_and_drift_reports(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    dep = deploy(store)
    hosts = (HostInfo("web1", {"ansible_host": "127.0.0.1"}),)
    store.start_watch(WatchWindow("shop", "qa", dep, "c1", T1, None, 10.0, 70.0, "watching", None, hosts))
    assert store.watch("shop", "qa").hosts == hosts and [w.env for w in store.active_watches()] == ["qa"]
    store.watch_checked("shop", "qa", dep, 20.0)
    assert store.watch("shop", "qa").checked_at == 20.0
    assert store.end_watch("shop", "qa", dep, "passed", "quiet", 70.0)
    assert not store.end_watch("shop", "qa", dep, "passed", "quiet", 71.0) and store.active_watches() == []
    change = TaskChange("web1", "config", "changed", "-a\n+b")
    base = store.add_drift_report(DriftReport("shop", "qa", dep, 1.0, "baseline", None, ()))
    store.add_drift_report(DriftReport("shop", "qa", dep, 2.0, "drifted", "1 host", (change,)))
    assert store.drift_baseline("shop", "qa", dep).id == base
    assert store.drift_report("shop", "qa").changes == (change,) and store.drift_report("shop", "qa", 99) is None
    assert store.drifted_hosts() == {("shop", "qa"): 1}  # one host drifted under what qa runs now
    for i in range(55):
        store.add_drift_report(DriftReport("shop", "qa", dep, 3.0 + i, "clean", None, ()))
    assert store.drift_baseline("shop", "qa", dep).id == base  # baselines are kept, older reports go


def test_the_gate_snapshot_is_saved_where_the_hook_reads_it(store_factory, tmp_path):
    """With PostgreSQL too, the hook's SQLite file has the snapshot and the ledger rows, and no PostgreSQL in sight."""
    config = tmp_path / "gitopsd.yml"
    config.write_text("x")
    store = store_factory(tmp_path / "state.db")
    gate = snapshot.GateConfig(
        str(config),
        snapshot.file_stamp(str(config)),
        "/run/gitopsd",
        ("GL_USER",),
        [snapshot.GateRepository("shop", str(tmp_path), [snapshot.GateEnvironment("qa", "qa", "main")])],
    )
    store.save_gate(gate)
    deploy(store, tree=T1)
    deploy(store, commit="c2", tree=T2, result="failed")
    store.add_status(repo="shop", commit="c1", tree=T1, context="ci", state="success", reporter="ci", now=1.0)
    db = snapshot.connect_readonly(str(tmp_path / "state.db"))
    assert db is not None
    try:
        loaded = snapshot.load(db, str(config), str(tmp_path))
        ledger = snapshot.Ledger(db)
        assert loaded is not None and [e.name for e in loaded.repositories[0].environments] == ["qa"]
        assert ledger.tree_succeeded("shop", "qa", T1) and not ledger.tree_succeeded("shop", "qa", T2)
        assert ledger.successes("shop", "qa") == [("deploy", T1)]
        assert [s.state for s in ledger.statuses("shop", T1)] == ["success"]
    finally:
        db.close()


def test_a_readonly_store_reads_what_the_daemon_wrote(store_factory, tmp_path):
    writer = store_factory(tmp_path / "state.db")
    deploy(writer)
    reader = store_factory(tmp_path / "state.db", readonly=True)
    assert reader.deployed("shop", "qa").id == 1


def test_the_schema_is_versioned_and_opening_again_changes_nothing(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    assert store.versions == (0, migrations.LATEST)
    store.close()
    again = store_factory(tmp_path / "state.db")
    assert again.versions == (migrations.LATEST, migrations.LATEST)


def test_an_old_sqlite_store_is_upgraded_in_place(tmp_path):
    """A store written before schema versions, without the hook snapshot's newer columns, keeps its rows."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL, env TEXT NOT NULL,"  # noqa: S608 (test data)
        " commit_id TEXT NOT NULL, tree TEXT NOT NULL, previous_commit TEXT, kind TEXT NOT NULL,"
        " result TEXT NOT NULL, trigger TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT, outcome TEXT,"
        " started_at REAL NOT NULL, finished_at REAL, attempt INTEGER NOT NULL DEFAULT 1, workdir TEXT,"
        " detail TEXT);"
        "CREATE TABLE gate_environments (config TEXT NOT NULL, repo TEXT NOT NULL, repo_path TEXT NOT NULL,"
        " position INTEGER NOT NULL, name TEXT NOT NULL, branch TEXT NOT NULL, promote_from TEXT NOT NULL,"
        " override_by TEXT NOT NULL, PRIMARY KEY (config, repo, name));"
        f"INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, started_at)"
        f" VALUES ('shop', 'qa', 'c1', '{T1}', 'deploy', 'succeeded', 'push', 'a', 1.0);"
    )
    db.close()
    with Store(path) as store:
        assert store.versions == (0, migrations.LATEST)
        assert store.deployed("shop", "qa").commit == "c1"
        store.add_status(repo="shop", commit="c1", tree=T1, context="ci", state="success", reporter="ci", now=1.0)
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(gate_environments)")}
    assert {"require_checks", "signoff", "approvals"} <= columns


def test_a_version_1_store_gets_the_epoch_the_lease_row_and_on_postgresql_the_fence(store_factory, tmp_path):
    """The step from the last release's schema (version 1) to the leader's lease (version 2), on both backends."""
    store = store_factory(tmp_path / "state.db")
    store._write(
        "INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, started_at)"
        " VALUES ('shop', 'qa', 'c1', ?, 'deploy', 'succeeded', 'push', 'a', 1.0)",
        (T1,),
    )
    for sql in (["DROP TRIGGER IF EXISTS gitopsd_fence ON deployments"] if store_factory.backend == "postgresql" else []) + [
        "ALTER TABLE deployments DROP COLUMN epoch",
        "DELETE FROM leadership",
        "DELETE FROM schema_version WHERE version >= 2",
    ]:
        store._write(sql)  # as version 1 left it
    store.close()
    again = store_factory(tmp_path / "state.db")
    assert again.versions == (1, migrations.LATEST)
    assert again.deployed("shop", "qa").commit == "c1"
    rows = again._rows("SELECT epoch FROM deployments")
    assert [r["epoch"] for r in rows] == [0]
    assert [tuple(r) for r in again._rows("SELECT id, epoch FROM leadership")] == [(1, 0)]
    if store_factory.backend == "postgresql":  # the fence is in place: a daemon of an epoch that does not lead
        again.close()
        stale = Store(tmp_path / "stale.db", url=store_factory.url, epoch=5, retry_for=0.0)
        try:
            with pytest.raises(StoreError, match="gitopsd fenced"):
                stale.record_head("shop", "qa", "c2", T1)
        finally:
            stale.close()


def test_a_store_from_a_newer_gitopsd_is_refused_in_one_line(store_factory, tmp_path):
    store = store_factory(tmp_path / "state.db")
    store._write(
        "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
        (migrations.LATEST + 1, 0.0, "from the future"),
    )
    store.close()
    with pytest.raises(StoreError, match=f"version {migrations.LATEST + 1}, newer than"):
        store_factory(tmp_path / "state.db")


def test_an_unreachable_postgresql_is_one_line_naming_it_without_its_password(tmp_path):
    from tests.support import free_port

    url = f"postgresql://gitopsd:s3cret@127.0.0.1:{free_port()}/gitopsd"
    with pytest.raises(StoreError) as raised:
        Store(tmp_path / "state.db", url=url)
    text = str(raised.value)
    assert "cannot reach the PostgreSQL state database postgresql://gitopsd:***@127.0.0.1" in text
    assert "s3cret" not in text and "\n" not in text
    assert type(raised.value).__name__ == "StoreUnreachable"


def test_a_role_postgresql_refuses_is_a_permission_problem(postgres_url, tmp_path):
    url = postgres_url.replace("postgres@", "nosuchrole@")
    with pytest.raises(StoreError, match="refused gitopsd") as raised:
        Store(tmp_path / "state.db", url=url)
    assert type(raised.value).__name__ == "StoreUnusable"


def test_the_snapshot_install_hooks_wrote_survives_the_daemon_opening_postgresql(postgres_url, tmp_path):
    """install-hooks writes the hook's snapshot into the hook's SQLite file itself; the daemon's store, copying the
    ledger from PostgreSQL at start, must not wipe it (the hook would read the YAML on every push: 2x slower)."""
    config = tmp_path / "gitopsd.yml"
    config.write_text("x")
    gate = snapshot.GateConfig(
        str(config),
        snapshot.file_stamp(str(config)),
        "/run/gitopsd",
        (),
        [snapshot.GateRepository("shop", str(tmp_path), [snapshot.GateEnvironment("qa", "qa", "main")])],
    )
    with Store(tmp_path / "hook-ledger.db") as installer:
        installer.save_gate(gate)
    with Store(tmp_path / "hook-ledger.db", url=postgres_url) as daemon_store:
        deploy(daemon_store)
    db = snapshot.connect_readonly(str(tmp_path / "hook-ledger.db"))
    try:
        assert snapshot.load(db, str(config), str(tmp_path)) is not None
        assert snapshot.Ledger(db).tree_succeeded("shop", "qa", T1)
    finally:
        db.close()


def test_signature_rules_the_daemon_saves_in_postgresql_reach_the_hooks_sqlite_file(postgres_url, tmp_path):
    """main's rule (gate_branches) and an environment's (gate_environments.signatures) are mirrored for the hook."""
    from gitopsd.gate.signatures import Rule

    config = tmp_path / "gitopsd.yml"
    config.write_text("x")
    rule = Rule("/etc/gitopsd/allowed_signers", "", (("environments/production/**", ("ops",)),), True)
    gate = snapshot.GateConfig(
        str(config),
        snapshot.file_stamp(str(config)),
        "/run/gitopsd",
        (),
        [
            snapshot.GateRepository(
                "shop",
                str(tmp_path),
                [snapshot.GateEnvironment("qa", "qa", "main", signatures=rule)],
                {"main": Rule("/etc/gitopsd/allowed_signers")},
            )
        ],
    )
    with Store(tmp_path / "hook-ledger.db", url=postgres_url) as daemon_store:
        daemon_store.save_gate(gate)
    db = snapshot.connect_readonly(str(tmp_path / "hook-ledger.db"))
    try:
        loaded = snapshot.load(db, str(config), str(tmp_path))
    finally:
        db.close()
    assert loaded is not None
    [repo] = loaded.repositories
    assert repo.branch_rules["main"].allowed_signers == "/etc/gitopsd/allowed_signers"
    qa = repo.environment("qa")
    assert qa is not None and qa.signatures is not None and qa.signatures.encode() == rule.encode()


def test_each_backend_answers_with_the_stores_result_and_fails_with_the_stores_own_errors(store_factory, tmp_path):
    """Above the backends nothing sees sqlite3 or psycopg: one Result type, rows by name, failures of the store's classes."""
    from gitopsd.adapters.store.backend import Result
    from gitopsd.base.storeerrors import DatabaseFailure, IntegrityFailure, StatementFailure

    store = store_factory(tmp_path / "state.db")
    deploy(store)
    found = store._db.execute("SELECT id, repo FROM deployments")
    assert isinstance(found, Result) and [(r["id"], r[1]) for r in found] == [(1, "shop")]
    assert list(found.rows[0].keys()) == ["id", "repo"] and dict(found.rows[0]) == {"id": 1, "repo": "shop"}
    head = "INSERT INTO env_heads (repo, env, commit_id, tree) VALUES ('shop', 'qa', 'c1', 't1')"
    store._db.execute(head)
    with pytest.raises(IntegrityFailure) as twice:
        store._db.execute(head)
    with pytest.raises(StatementFailure) as missing:
        store._db.execute("SELECT * FROM no_such_table")
    classes = [type(twice.value), type(missing.value)]
    if store_factory.backend == "postgresql":
        from gitopsd.adapters.store import postgresql

        classes += [postgresql.Unreachable, postgresql.Refused, postgresql.Fenced, postgresql.LeaseLost]
    for cls in classes:
        assert issubclass(cls, DatabaseFailure)
        assert not [c for c in cls.__mro__ if c.__module__.startswith(("sqlite3", "psycopg"))], cls


def test_postgresql_runs_each_statement_as_the_store_wrote_it_with_only_its_placeholders_changed(
    postgres_url, tmp_path, monkeypatch
):
    """Statements are written once in SQL both backends run: none is rewritten for PostgreSQL (no OR REPLACE, ?N...)."""
    import psycopg

    from gitopsd.adapters.store import postgresql
    from gitopsd.adapters.store.dialect import PostgreSQL

    pairs: list[tuple[str, str]] = []
    asked: list[str] = []  # the statement the store gave its backend, while the backend runs it

    def given(method):
        def wrapper(self, sql, *args):
            asked.append(sql)
            try:
                return method(self, sql, *args)
            finally:
                asked.pop()

        return wrapper

    def sent(method):
        def wrapper(self, query, *args, **kwargs):
            if asked and str(query):  # "": the pool checking a connection
                pairs.append((asked[-1], str(query)))
            return method(self, query, *args, **kwargs)

        return wrapper

    for name in ("execute", "executemany"):
        monkeypatch.setattr(postgresql.PostgreSQLBackend, name, given(getattr(postgresql.PostgreSQLBackend, name)))
        monkeypatch.setattr(psycopg.Cursor, name, sent(getattr(psycopg.Cursor, name)))
    with Store(tmp_path / "hook-ledger.db", url=postgres_url) as store:
        pairs.clear()
        dep = deploy(store, env="production")
        store.record_failure("shop", "qa", FailureStatus("c1", 2, 50.0, False, "boom"))
        store.mark_bad_tree("shop", "qa", T1, "broke", 1.0)
        store.record_head("shop", "qa", "c1", T1)
        store.suspend("shop", "qa", actor="root", reason="freeze", now=3.0)
        store.request_sync("shop", "qa", commit="c1", actor="root", reason=None, now=4.0)
        store.record_seen("shop", [("c1", "push")], 10.0, ["c1"])
        store.record_deployed_commits(store.get(dep), ["c1"], ("promote",))
        assert store.dora_lead_times(None, "production", 0.0) == [95.0]
    statements = {sql for sql, _text in pairs}
    assert any("commits_deployed" in sql and sql.startswith("INSERT") for sql in statements), statements
    assert len(statements) > 10
    for sql, text in pairs:
        assert text.split(" RETURNING ")[0] == PostgreSQL.placeholders(sql), sql
