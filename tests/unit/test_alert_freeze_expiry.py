"""Alert freezes that cannot get stuck (docs/change-control.md): each firing notification moves the freeze's end, one
whose alert is not sent again expires (recorded as expired), a person in override_by lifts one with a reason.

Real: the config loader, the SQLite state store, a bare repository whose production branch has a commit (the git
notes), the rule the hook applies (gate/policy.py's `locked`). Faked: the clock (injected) and the notifications.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitopsd.adapters.store import Store
from gitopsd.config import ConfigError, load
from gitopsd.core.settings import AlertFreezes
from gitopsd.services.changecontrol import ChangeControl, parse_alerts
from tests.support import git

ZERO = "0001-01-01T00:00:00Z"  # what Alertmanager's webhook sends as endsAt while an alert fires (checked on 0.25)


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_file(tmp_path: Path, extra: str = "") -> Path:
    repo = tmp_path / "shop.git"
    if not repo.exists():
        git(tmp_path, "init", "-q", "--bare", str(repo))
        work = tmp_path / "work"
        git(tmp_path, "init", "-q", str(work))
        (work / "app.txt").write_text("v1\n")
        git(work, "add", "app.txt")
        git(work, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "v1")
        git(work, "push", "-q", str(repo), "HEAD:refs/heads/qa", "HEAD:refs/heads/production")
    path = tmp_path / "gitopsd.yml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\nrepositories:\n  - name: shop\n    path: {repo}\n"
        "    environments:\n      - name: qa\n      - name: production\n        override_by: [carol, dave]\n"
        "freeze_on:\n  - alert: CheckoutErrors\n    envs: [production]\n" + extra
    )
    return path


def notification(status: str, ends: str = ZERO) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "gitopsd",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "CheckoutErrors", "severity": "page"},
                "annotations": {"summary": "checkout errors above 5%"},
                "startsAt": "2026-12-07T10:00:00Z",
                "endsAt": ends,
            }
        ],
    }


@pytest.fixture
def control(tmp_path):
    config = load(config_file(tmp_path, "alert_freezes: {repeat_interval: 1h, grace: 10m}\n"))
    store = Store(tmp_path / "state" / "state.db")
    clock = Clock(1_796_637_600.0)  # 2026-12-07 10:00 UTC
    looks: list[tuple[str, float]] = []
    cc = ChangeControl(
        lambda: config, store, lambda _notify, _event: None, look_at=lambda repo, at: looks.append((repo, at)), clock=clock
    )
    yield cc, store, clock, looks, tmp_path / "shop.git"
    store.close()


def frozen(store: Store, now: float) -> list[str]:
    return [lock.describe() for lock in store.locks("shop", "production", now) if lock.source == "alert"]


def notes(repo: Path) -> str:
    return git(repo, "log", "--notes=gitopsd", "--format=%N", "production").stdout


def test_alert_freezes_default_to_alertmanagers_repeat_interval_and_a_grace_and_say_a_bad_duration_with_its_key(tmp_path):
    assert load(config_file(tmp_path)).alert_freezes == AlertFreezes(repeat_interval=4 * 3600.0, grace=900.0)
    assert load(config_file(tmp_path, "alert_freezes: {repeat_interval: 30m, grace: 5m}\n")).alert_freezes == AlertFreezes(
        repeat_interval=1800.0, grace=300.0
    )
    with pytest.raises(ConfigError) as info:
        load(config_file(tmp_path, "alert_freezes: {repeat_interval: often, grace: 5m, every: 1h}\n"))
    said = "\n".join(str(p) for p in info.value.problems)
    assert "alert_freezes.repeat_interval" in said and "alert_freezes.every" in said, said


def test_a_firing_alerts_zero_ends_at_is_read_as_no_end():
    ((_status, _labels, _notes, since, ends),) = parse_alerts(notification("firing"))
    assert since == 1_796_637_600.0 and ends is not None and ends < 0


def test_a_freeze_whose_alert_is_not_sent_again_expires_after_repeat_interval_and_grace_recorded_as_expired(control):
    cc, store, clock, looks, repo = control
    answer = cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    assert answer["ok"] and "shop/production frozen by alert CheckoutErrors" in answer["message"], answer
    end = clock.now + 3600 + 600
    assert ("shop", end + 0.5) in looks  # the daemon looks again then: the record, and the heads that waited
    (line,) = frozen(store, clock.now)
    assert "expires 2026-12-07 11:10 UTC unless sent again" in line, line

    clock.now = end - 1
    assert cc.expire() == [] and frozen(store, clock.now)
    clock.now = end + 1
    assert frozen(store, clock.now) == []  # the rule (hook and daemon) stops at its end, recorded or not
    (said,) = cc.expire()
    assert "shop/production freeze by alert CheckoutErrors expired at 2026-12-07 11:10 UTC" in said, said
    assert cc.expire() == []  # recorded once
    (row,) = store.lock_history(1)
    assert row.lifted_by == "expired" and row.lifted_at == end
    assert "freeze by alert CheckoutErrors expired at 2026-12-07 11:10 UTC" in notes(repo)


def test_each_firing_notification_moves_the_freezes_end_and_a_given_ends_at_is_kept_with_the_grace(control):
    cc, store, clock, _looks, _repo = control
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    clock.now += 3000  # Alertmanager's repeat: the same freeze, held for another repeat_interval
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    (lock,) = store.locks("shop", "production", clock.now)
    assert lock.expires_at == clock.now + 3600 + 600
    assert len(store.lock_history(10)) == 1

    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing", "2026-12-07T13:00:00Z")})
    (lock,) = store.locks("shop", "production", clock.now)
    assert lock.expires_at == 1_796_637_600.0 + 3 * 3600 + 600


def test_a_notification_after_the_freeze_expired_freezes_again_and_the_resolve_still_lifts_it(control):
    cc, store, clock, _looks, _repo = control
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    clock.now += 5 * 3600  # the notifications stopped (Alertmanager restarted without its data), then came back
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    assert len(frozen(store, clock.now)) == 1
    history = store.lock_history(10)
    assert [r.lifted_by for r in history] == [None, "expired"], history
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("resolved", "2026-12-07T15:01:00Z")})
    assert frozen(store, clock.now) == []


def test_a_person_in_override_by_lifts_an_alerts_freeze_with_a_reason_and_the_next_firing_freezes_again(control):
    cc, store, clock, _looks, repo = control
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})

    refused = cc.handle("bob", {"op": "unlock", "env": "production", "reason": "the rule was deleted"})
    assert not refused["ok"] and "no lock set by a person on shop/production" in refused["error"]
    assert "by a person in override_by" in refused["error"], refused
    without = cc.handle("carol", {"op": "unlock", "env": "production"})
    assert not without["ok"] and "say why with --reason" in without["error"], without
    assert frozen(store, clock.now)

    lifted = cc.handle("carol", {"op": "unlock", "env": "production", "reason": "the rule was deleted"})
    assert lifted["ok"] and lifted["message"] == (
        "shop/production freeze by alert CheckoutErrors lifted by carol: the rule was deleted "
        "(the alert's next firing notification freezes again)"
    ), lifted
    assert frozen(store, clock.now) == []
    (row,) = store.lock_history(1)
    assert (row.lifted_by, row.lift_reason) == ("carol", "the rule was deleted")
    assert "freeze by alert CheckoutErrors lifted by carol at 2026-12-07 10:00 UTC: the rule was deleted" in notes(repo)
    assert "unlocked by carol" not in notes(repo)  # no lock of a person was lifted: the notes say only what was

    clock.now += 60
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    assert len(frozen(store, clock.now)) == 1


def test_the_refusal_of_a_frozen_environment_names_who_may_lift_the_freeze(control):
    from gitopsd.gate.policy import locked

    cc, store, clock, _looks, _repo = control
    cc.handle("alertmanager", {"op": "alerts", "payload": notification("firing")})
    env = cc.config().repository("shop").environment("production")
    verdict = locked(env, store.locks("shop", "production", clock.now), "gitopsd rollback production", [])
    text = "\n".join(verdict.refusal_lines("refs/heads/production"))
    assert "wait for the alert to resolve (CheckoutErrors)" in text
    assert "or one of carol, dave lifts the freeze: gitopsd unlock production --reason '<why>'" in text, text
