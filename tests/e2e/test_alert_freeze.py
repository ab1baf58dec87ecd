"""Freezes raised by alerts: a real Prometheus evaluates a rule, Debian's real Alertmanager routes the alert to the
daemon's API (webhook_configs, a token with scope alerts:write), and `freeze_on` freezes production while it fires.

Real: `gitopsd run` with its API on loopback, pushes through the installed hook, ansible-playbook, prometheus and
prometheus-alertmanager (the Makefile's DEBIAN_PACKAGES). The incident ends by rewriting the rule so it no longer
matches and reloading Prometheus (SIGHUP), which then sends the resolve.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from gitopsd.adapters.store import Store
from gitopsd.config import load
from tests.prometheus_fixture import prometheus
from tests.support import Daemon, Sandbox, free_port, git, serving

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
FIRING = "vector(1)"
QUIET = "vector(1) == 2"  # never true: the alert resolves

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and Path(ALERTMANAGER).exists()),
    reason="needs Debian's prometheus and prometheus-alertmanager (make deps)",
)


def rule_file(path: Path, expr: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "incidents",
                        "rules": [
                            {
                                "alert": "CheckoutErrors",
                                "expr": expr,
                                "labels": {"severity": "page"},
                                "annotations": {"summary": "checkout errors above 5%"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    return path


@contextmanager
def alertmanager(root: Path, webhook: str, token: str, repeat_interval: str = "1h") -> Iterator[str]:
    """Alertmanager routing every alert to `webhook` at once (group_wait 1s), resolves too, sending a firing alert
    again every `repeat_interval`; yields its address."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "gitopsd",
                    "group_by": ["alertname"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": repeat_interval,
                },
                "receivers": [
                    {
                        "name": "gitopsd",
                        "webhook_configs": [
                            {
                                "url": webhook,
                                "send_resolved": True,
                                "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                            }
                        ],
                    }
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    with serving(
        "Alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address={address}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
        f"http://{address}/-/ready",
        root / "alertmanager.log",
    ):
        yield address


def notifications(address: str) -> tuple[float, float]:
    """(sent, failed) webhook notifications, from Alertmanager's own metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()

    def value(name: str) -> float:
        found = re.search(rf'^{name}{{[^}}]*integration="webhook"[^}}]*}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    return value("alertmanager_notifications_total"), value("alertmanager_notifications_failed_total")


def post(url: str, token: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_firing_alert_freezes_production_a_push_is_refused_naming_it_a_rollback_passes_and_the_resolve_lifts_it(short_tmp):
    port = free_port()
    sandbox = Sandbox(
        short_tmp / "box",
        {"qa": ["qa-1"], "production": ["prod-1"]},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "freeze_on": [{"alert": "CheckoutErrors", "labels": {"severity": "page"}, "envs": ["production"]}],
        },
    )
    webhook = f"http://127.0.0.1:{port}/api/v1/alerts"
    token = sandbox.command("token", "create", "alertmanager", "--scope", "alerts:write").stdout.strip()
    reader = sandbox.command("token", "create", "reader", "--scope", "read").stdout.strip()
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync")
        daemon.wait_state("production", "in-sync")
        for text in ("v2", "v3"):  # production runs v2 (v1 before it: a rollback target); qa runs v3
            sandbox.write("app.txt", text)
            sandbox.commit(text)
            sandbox.push("main", "main:qa")
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            if text == "v2":
                sandbox.command("promote", "qa", "production")
                daemon.wait_state("production", "in-sync", sandbox.head("production"))

        # What is not Alertmanager's payload is refused and locks nothing; a token without the scope may not post.
        code, body = post(webhook, token, {"receiver": "x", "alerts": "CheckoutErrors"})
        assert code == 422 and "not an Alertmanager webhook payload" in body["message"], body
        assert post(webhook, reader, {"version": "4"})[0] == 403
        assert sandbox.status()["production"]["locks"] == []

        rules = rule_file(short_tmp / "rules.yml", FIRING)
        with (
            alertmanager(short_tmp / "am", webhook, token) as am,
            prometheus(short_tmp / "prom", f"127.0.0.1:{port}", [rules], alertmanager=am) as prom,
        ):
            # The daemon freezes while it answers the notification: once Alertmanager counts it sent, the freeze is in.
            daemon.wait_for(lambda: notifications(am)[0] >= 1, 120, "Alertmanager's first notification")
            locks = sandbox.status()["production"]["locks"]
            assert len(locks) == 1 and "shop/production frozen by alert CheckoutErrors" in locks[0], locks
            assert "checkout errors above 5%" in locks[0]
            assert sandbox.status()["qa"]["locks"] == []

            # A promotion made by hand (qa's exact tree on top of production) and pushed.
            git(sandbox.work, "fetch", "-q", "origin")
            promotion = git(
                sandbox.work,
                "commit-tree",
                "origin/qa^{tree}",
                "-p",
                "origin/production",
                "-p",
                "origin/qa",
                "-m",
                "promote qa to production",
            ).stdout.strip()
            refused = sandbox.push(f"{promotion}:refs/heads/production", check=False)
            assert refused.returncode != 0 and "it is frozen by a firing alert" in refused.stderr, refused.stderr
            assert "frozen by alert CheckoutErrors" in refused.stderr
            assert "wait for the alert to resolve (CheckoutErrors)" in refused.stderr

            sandbox.command("rollback", "production")
            daemon.wait_for(
                lambda: any(d["kind"] == "rollback" and d["result"] == "succeeded" for d in sandbox.history("production")),
                120,
                "the rollback during the freeze",
            )

            # A person's lock stays when the alert resolves.
            sandbox.command("lock", "production", "--reason", "post-incident review", "--for", "1h")
            rule_file(rules, QUIET)
            prom.proc.send_signal(signal.SIGHUP)
            daemon.wait_for(
                lambda: not any("CheckoutErrors" in line for line in sandbox.status()["production"]["locks"]),
                120,
                "the resolve lifting the freeze",
            )
            assert notifications(am)[1] == 0
            left = sandbox.status()["production"]["locks"]
            assert len(left) == 1 and "post-incident review" in left[0], left
        sandbox.command("unlock", "production")
        sandbox.command("promote", "qa", "production")
        daemon.wait_state("production", "in-sync", sandbox.head("production"))
    notes = sandbox.command("locks").stdout
    assert notes.strip() == "nothing is locked"


def test_a_freeze_holds_while_alertmanager_sends_it_again_a_person_in_override_by_lifts_it_and_it_expires_when_alertmanager_is_gone(
    short_tmp,
):
    """The resolve that never comes: Alertmanager stops (restarted without its data, or gone) while the alert fires."""
    import os
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    port = free_port()
    sandbox = Sandbox(
        short_tmp / "box",
        {"qa": ["qa-1"], "production": ["prod-1"]},
        env_options={"production": {"override_by": [me]}},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "freeze_on": [{"alert": "CheckoutErrors", "envs": ["production"]}],
            "alert_freezes": {"repeat_interval": "5s", "grace": "20s"},
        },
    )
    webhook = f"http://127.0.0.1:{port}/api/v1/alerts"
    token = sandbox.command("token", "create", "alertmanager", "--scope", "alerts:write").stdout.strip()

    def freezes() -> list[dict]:  # read in this process: no new Python every tenth of a second
        with Store.of(load(sandbox.config), readonly=True) as store:
            return [lock.as_json() for lock in store.all_locks(time.time()) if lock.source == "alert"]

    def expired() -> bool:
        with Store.of(load(sandbox.config), readonly=True) as store:
            return any(row.lifted_by == "expired" for row in store.lock_history(5))

    with Daemon(sandbox) as daemon:
        daemon.wait_state("production", "in-sync")
        rules = rule_file(short_tmp / "rules.yml", FIRING)
        with ExitStack() as running:
            am = running.enter_context(alertmanager(short_tmp / "am", webhook, token, repeat_interval="2s"))
            with prometheus(short_tmp / "prom", f"127.0.0.1:{port}", [rules], alertmanager=am):
                first = daemon.wait_for(freezes, 120, "the freeze")[0]
                assert "unless sent again" in first["line"], first
                # Each notification Alertmanager sends again moves the freeze's end: it holds while the alert fires.
                daemon.wait_for(
                    lambda: any(f["until"] > first["until"] for f in freezes()), 120, "Alertmanager sending the alert again"
                )

                lifted = sandbox.command("unlock", "production", "--reason", "the rule is being rewritten").stdout
                assert "freeze by alert CheckoutErrors lifted by" in lifted, lifted
                daemon.wait_for(freezes, 120, "the next firing notification freezing again")
                running.close()  # Alertmanager gone, and with it the resolve
                daemon.wait_for(lambda: not freezes(), 180, "the freeze expiring")
        daemon.wait_for(expired, 120, "the expiry recorded")
        past = sandbox.command("locks", "--history", "5").stdout
        assert "frozen by alert CheckoutErrors" in past and "; expired at " in past, past
        assert f"lifted by {me} at " in past and "the rule is being rewritten" in past, past
        notes = git(sandbox.repo, "log", "--notes=gitopsd", "--format=%N", "production").stdout
        assert "freeze by alert CheckoutErrors expired at" in notes, notes
        assert f"freeze by alert CheckoutErrors lifted by {me}" in notes, notes
