"""/metrics' figures from a real store, SQLite and PostgreSQL (gitopsd/services/metrics.py), and the hook's refusal reports.

Real: the store in a temp folder, prometheus_client's text output, promtool; for the refusals, bare Git
repositories, the hook's code called in-process and the daemon's end of the nudge socket. Faked: only the
deployment records policy.judge reads (Records). No daemon: the e2e test (tests/e2e/test_monitoring.py) has
one, scraped by a real Prometheus.
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.core.constants import EMPTY_TREE, ZERO
from gitopsd.core.settings import Config, Environment, Repository
from gitopsd.core.windows import Cron, Window
from gitopsd.gate import messages, policy, promotion_request, push, receive, snapshot
from gitopsd.gate.approvals import Policy, SignoffNeed
from gitopsd.gate.locks import Lock
from gitopsd.gate.nudge import REFUSAL_RULES, REFUSED, Nudge
from gitopsd.gate.snapshot import GateEnvironment, GateRepository
from gitopsd.services.metrics import Metrics
from tests.support import run


def config(tmp: Path) -> Config:
    envs = [
        Environment(
            name=name, branch=name, promote_from=src, inventory=f"environments/{name}/hosts.yml", playbook="playbooks/deploy.yml"
        )
        for name, src in (("qa", "main"), ("production", "qa"))
    ]
    return Config(
        source=tmp / "gitopsd.yml",
        state_dir=tmp,
        repositories=[Repository(name="shop", path=tmp / "shop.git", environments=envs)],
    )


def deploy(
    store: Store,
    env: str,
    n: int,
    result: str,
    kind: str = "deploy",
    trigger: str = "push",
    seconds: float = 3.0,
    checks: list[tuple[str, bool]] = (),
) -> int:
    dep = store.begin(
        repo="shop",
        env=env,
        commit=f"{n:040x}",
        tree=f"{n:040x}",
        previous_commit=None,
        kind=kind,
        trigger=trigger,
        actor="test",
        now=1000.0 + n * 10,
        queued=result == "queued",
    )
    if result not in ("running", "queued"):
        store.finish(
            dep,
            result,
            now=1000.0 + n * 10 + seconds,
            detail={"batches": [{"checks": [{"ok": ok, "name": name, "detail": ""} for name, ok in checks]}]},
        )
    return dep


def samples(metrics: Metrics) -> dict[str, float]:
    text = metrics.exposition()[0].decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gitopsd_") and not line.startswith("gitopsd_process")
    }


def test_totals_kept_between_scrapes_equal_a_fresh_read_after_a_restart(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    store.record_seen("shop", [(f"{1:040x}", "branch-push")], 900.0, [f"{1:040x}"])
    first_id = deploy(store, "qa", 1, "succeeded", checks=[("http qa-1", True), ("playbook playbooks/verify.yml", True)])
    first = store.get(first_id)
    assert first is not None
    store.record_deployed_commits(first, [first.commit], ("promote",))
    running = deploy(store, "production", 2, "running")
    deploy(store, "qa", 3, "failed", seconds=400, checks=[("prometheus error-rate", False)])
    kept = Metrics(lambda: cfg, store_factory(cfg.database, readonly=True))
    first = samples(kept)
    assert first['gitopsd_deployments_running{env="production",repo="shop"}'] == 1
    assert first['gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="failed"}'] == 1
    store.finish(running, "failed", now=1100.0)
    deploy(store, "production", 4, "succeeded", kind="rollback", trigger="auto-rollback")
    deploy(store, "qa", 5, "queued")
    after = samples(kept)
    restarted = samples(Metrics(lambda: cfg, store_factory(cfg.database, readonly=True)))
    assert after == restarted
    assert after['gitopsd_deployments_total{env="production",kind="deploy",repo="shop",result="failed"}'] == 1
    assert after['gitopsd_rollbacks_total{cause="automatic",env="production",repo="shop"}'] == 1
    assert after['gitopsd_deployments_running{env="production",repo="shop"}'] == 0
    assert after['gitopsd_deployments_queued{env="qa",repo="shop"}'] == 1
    assert after['gitopsd_checks_total{env="qa",repo="shop",result="passed",type="playbook"}'] == 1
    assert after['gitopsd_checks_total{env="qa",repo="shop",result="failed",type="prometheus"}'] == 1
    assert after['gitopsd_deployment_duration_seconds_bucket{env="qa",le="5.0",repo="shop"}'] == 1
    assert after['gitopsd_deployment_duration_seconds_bucket{env="qa",le="600.0",repo="shop"}'] == 2
    # Lead time from when the commit first reached the server (900) to the end of its first deployment (1013),
    # as `gitopsd dora` counts it.
    assert after['gitopsd_lead_time_seconds_sum{env="qa",repo="shop"}'] == 113
    assert after['gitopsd_last_successful_deployment_timestamp_seconds{env="production",repo="shop"}'] == 1043


def test_locks_in_force_are_counted_per_environment_by_who_set_them_and_expired_ones_are_not(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    now = time.time()
    store.add_lock(
        repo="shop",
        env="production",
        source="alert",
        actor="CheckoutErrors",
        reason="5xx",
        now=now,
        alert='CheckoutErrors{severity="page"}',
    )
    store.add_lock(repo="*", env="*", source="person", actor="alice", reason="release freeze", now=now)
    store.add_lock(repo="shop", env="qa", source="person", actor="bob", reason="over", now=now - 60, expires_at=now - 1)
    got = samples(Metrics(lambda: cfg, store_factory(cfg.database, readonly=True)))
    assert got['gitopsd_environment_locked{env="production",repo="shop",source="alert"}'] == 1
    assert got['gitopsd_environment_locked{env="production",repo="shop",source="person"}'] == 1
    assert got['gitopsd_environment_locked{env="qa",repo="shop",source="person"}'] == 1
    assert got['gitopsd_environment_locked{env="qa",repo="shop",source="alert"}'] == 0


def test_an_environment_that_never_deployed_has_no_histogram_series_and_its_counters_stay_zero(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    deploy(store, "qa", 1, "succeeded")
    got = samples(Metrics(lambda: cfg, store_factory(cfg.database, readonly=True)))
    assert got['gitopsd_deployment_duration_seconds_count{env="qa",repo="shop"}'] == 1
    assert not [name for name in got if "_seconds_" in name and 'env="production"' in name]
    assert got['gitopsd_deployments_total{env="production",kind="deploy",repo="shop",result="succeeded"}'] == 0


def test_a_scrape_passes_promtool_check_metrics(tmp_path, store_factory):
    cfg = config(tmp_path)
    store = store_factory(cfg.database)
    deploy(store, "qa", 1, "succeeded")
    metrics = Metrics(lambda: cfg, store_factory(cfg.database, readonly=True))
    metrics.refused("shop", "qa", "deploy-window")
    metrics.refused("shop", "nonsense", "free text here")  # never a label: '' and other
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert b'gitopsd_pushes_refused_total{env="",repo="shop",rule="other"} 1.0' in body


class Records:
    """The deployment records policy.judge reads, as plain values: each case sets what it needs."""

    def __init__(
        self, rcs: list[tuple[str, float]] | None = None, locks: list | None = None, rejections: list[tuple] | None = None
    ):
        self.rcs, self.held, self.rejection_rows = rcs or [], locks or [], rejections or []

    def tree_succeeded(self, repo: str, env: str, tree: str) -> bool:
        return False

    def successes(self, repo: str, env: str) -> list[tuple[str, str]]:
        return []

    def statuses(self, repo: str, tree: str) -> list:
        return []

    def signoffs(self, repo: str, env: str, tree: str) -> list:
        return []

    def rcs_for_tree(self, repo: str, tree: str, target_env: str) -> list[tuple[str, float]]:
        return self.rcs

    def approval_rows(self, repo: str, rc: str) -> list:
        return []

    def locks(self, repo: str, env: str, now: float) -> list:
        return self.held

    def break_glass(self, repo: str, env: str, now: float) -> None:
        return None

    def rejections(self, repo: str, tree: str) -> list[tuple]:
        return self.rejection_rows

    def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list, int, None]:
        return [], 0, None


def commit(repo: Path, files: dict[str, str], *parents: str, tree: str | None = None) -> str:
    """A commit of exactly `files` (or `tree`) on `parents`, written with git's plumbing: no work tree needed."""
    if tree is None:
        blobs = {
            name: run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=text).stdout.strip()
            for name, text in files.items()
        }
        tree = run(
            ["git", "-C", str(repo), "mktree"], input="".join(f"100644 blob {blob}\t{name}\n" for name, blob in blobs.items())
        ).stdout.strip()
    parent_args = [arg for parent in parents for arg in ("-p", parent)]
    return run(["git", "-C", str(repo), "commit-tree", *parent_args, "-m", "a commit", tree]).stdout.strip()


def shop(path: Path) -> tuple[Path, dict[str, str]]:
    """A bare repository: main and qa at `base`; `change` on top of it (on no branch), `stray` unrelated to both,
    and `placeholder`, what `gitopsd init` leaves on a new environment branch."""
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(path)])
    base = commit(path, {"app.txt": "1"})
    commits = {
        "base": base,
        "change": commit(path, {"app.txt": "2"}, base),
        "stray": commit(path, {"app.txt": "3"}),
        "placeholder": commit(path, {}, tree=EMPTY_TREE),
    }
    for branch in ("main", "qa"):
        run(["git", "-C", str(path), "update-ref", f"refs/heads/{branch}", base])
    return path, commits


@contextmanager
def daemon_socket(runtime: Path) -> Iterator[Callable[[], Nudge]]:
    """The daemon's end of the nudge socket: yields a function that returns the next datagram the hook sent."""
    runtime.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(runtime / "nudge.sock"))
    sock.settimeout(5)

    def receive() -> Nudge:
        got = Nudge.decode(sock.recv(65_536), None)
        assert got is not None
        return got

    try:
        yield receive
    finally:
        sock.close()


def test_every_refusal_the_policy_makes_carries_its_rule_id(short_tmp):
    path, c = shop(short_tmp / "shop.git")
    never = (Window("never", True, Cron.parse("0 0 1 1 *"), timedelta(minutes=1), "UTC"),)
    envs = [
        GateEnvironment("qa", "qa", "main"),
        GateEnvironment("staging", "staging", "qa"),
        GateEnvironment("ci", "ci", "main", require_checks=("ci/test",)),
        GateEnvironment("uat", "uat", "main", signoff=SignoffNeed("qa", 1, ("alice",))),
        GateEnvironment("production", "production", "main", approvals=Policy(1, ("bob",))),
        GateEnvironment("late", "late", "main", windows=never),
    ]
    repo = GateRepository("shop", str(path), envs)
    env = {e.name: e for e in envs}
    now = datetime(2024, 6, 3, 12, tzinfo=UTC)

    def judge(name: str, old: str | None, new: str, records: Records | None = None, **kwargs: Any) -> policy.Verdict:
        return policy.judge(repo, str(path), records or Records(), env[name], old, new, identity="alice", now=now, **kwargs)

    verdicts = {  # each case is named by the rule id its refusal must carry, then what the case is
        "delete": judge("qa", c["base"], ZERO),
        "create": judge("qa", ZERO, c["base"]),
        "first-promotion": judge("qa", c["placeholder"], c["base"]),
        "non-fast-forward": judge("qa", c["change"], c["base"]),
        "not-verified-upstream": judge("staging", c["base"], c["change"]),
        "not-on-source": judge("qa", c["base"], c["change"]),
        "required-checks": judge("ci", None, c["base"]),
        "signoff": judge("uat", None, c["base"]),
        "approvals (no release candidate)": judge("production", None, c["base"]),
        "approvals (not approved)": judge("production", None, c["base"], Records(rcs=[("1", 0.0)])),
        "locked": judge(
            "qa", None, c["base"], Records(locks=[Lock(1, "shop", "qa", "person", "", "bob", "migration", 0.0, None)])
        ),
        "rejected": judge("qa", c["base"], c["change"], Records(rejections=[("qa", "reject", 7, "gitopsd", "broke", 0.0, "")])),
        "deploy-window (closed)": judge("late", None, c["base"]),
        "deploy-window (no right to override)": judge("late", None, c["base"], override_reason="hotfix"),
        **{
            f"reserved-ref ({ref})": messages.reserved_refusal(push.RefUpdate(c["stray"], c["base"], ref), "shop")
            for ref in ("refs/replace/" + c["stray"], "refs/notes/gitopsd", "refs/tags/rc/1")
        },
    }
    assert not any(v.accepted for v in verdicts.values())
    assert {case: v.rule_id for case, v in verdicts.items()} == {case: case.split(" ")[0] for case in verdicts}
    # Every id the hook reports has its case here, but promotion-request (the next test), store-unreadable (no
    # rule was judged), other (no rule at all), signature and signed-push (they need signed commits and pushes:
    # tests/integration/test_signed_commits.py and test_signed_pushes.py), and provenance (test_provenance_gate.py).
    assert {v.rule_id for v in verdicts.values()} | {
        "promotion-request",
        "store-unreadable",
        "other",
        "signature",
        "signed-push",
        "provenance",
    } == REFUSAL_RULES


def test_refused_promotion_requests_are_reported_with_their_rule_id(short_tmp):
    path, c = shop(short_tmp / "shop.git")
    repo = GateRepository("shop", str(path), [GateEnvironment("qa", "qa", "main")])
    config = snapshot.GateConfig(str(short_tmp / "gitopsd.yml"), "", str(short_tmp / "run"), (), [repo])
    alone = [push.RefUpdate(ZERO, c["base"], "refs/promote/qa"), push.RefUpdate(c["base"], c["change"], "refs/heads/main")]
    nowhere = [push.RefUpdate(ZERO, c["base"], "refs/promote/prod")]
    with daemon_socket(short_tmp / "run") as received:
        for updates, env in ((alone, "qa"), (nowhere, "")):
            out = io.StringIO()
            assert promotion_request.promotion_request(config, config.source, "", repo, str(path), updates, updates[0], out) == 1
            assert f"push to {updates[0].ref} refused" in out.getvalue()
            report = received()
            assert (report.trigger, report.refusals) == (REFUSED, ((env, "promotion-request"),))


def test_a_reworded_refusal_is_still_counted_by_its_rule(short_tmp, monkeypatch):
    path, c = shop(short_tmp / "shop.git")
    (short_tmp / "gitopsd.yml").write_text(
        f"state_dir: state\nruntime_dir: run\nrepositories:\n  - name: shop\n"
        f"    path: {path}\n    environments:\n      - name: qa\n"
    )
    config = load(short_tmp / "gitopsd.yml")
    store = Store(config.database)
    store.save_gate(snapshot.from_config(config))
    store.close()
    real_refuse = policy.refuse
    monkeypatch.setattr(
        policy,
        "refuse",
        lambda rule_id, rule, detail, instead: real_refuse(rule_id, f"qa says no: {rule[::-1]}", detail, instead),
    )
    monkeypatch.chdir(path)  # git runs the hook in the bare repository
    out = io.StringIO()
    with daemon_socket(config.runtime_dir) as received:
        assert (
            receive.pre_receive(
                str(short_tmp / "gitopsd.yml"),
                str(config.database),
                f"{c['base']} {c['change']} refs/heads/qa\n",
                out,
                load_config=load,
                ssh_crypto=None,
            )
            == 1
        )
        report = received()
    assert "rule: qa says no: niam morf seert sekat ylno aq" in out.getvalue()
    assert report.refusals == (("qa", "not-on-source"),)


def test_a_refusal_report_carries_only_environments_and_rule_ids():
    sent = Nudge(repo="/srv/git/shop.git", trigger=REFUSED, refusals=(("qa", "not-on-source"), ("production", "x y")))
    got = Nudge.decode(sent.encode(), 1000)
    assert got is not None and got.trigger == REFUSED
    assert got.refusals == (("qa", "not-on-source"), ("production", "other"))
