"""Post-deploy watch and drift detection end to end: the real daemon as a process, real ansible-playbook runs on
`ansible_connection=local` hosts writing files under the test's out folder, a real HTTP server standing in for
Prometheus, a real notify command. Intervals are seconds."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.rollout_support import Server
from tests.support import Daemon, Sandbox

SECRET = "s3cr3t-value-never-shown"

# Writes a config file and a secret per host, runs a command that reports changed on every run (the baseline),
# and breaks in check mode when the out folder has BREAK_CHECK. The command is `raw` (a shell, no Python module to
# send and start: 0.3 s of CPU less per host and run, and the drift checks run every 2 s); `copy` stays the module
# whose diffs drift is about.
DRIFT_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  vars:
    out: "{{ lookup('ansible.builtin.env', 'GITOPSD_TEST_OUT') }}"
  tasks:
    - name: write the config
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}.conf"
        content: "port = 8080\\nrelease = {{ gitopsd_tree[:7] }}\\n"
    - name: write the secret
      ansible.builtin.copy:
        dest: "{{ out }}/{{ inventory_hostname }}.secret"
        content: "SECRET_VALUE\\n"
      no_log: true
    - name: restart the app every time
      ansible.builtin.raw: "true"
      check_mode: false
    - name: break the check-mode run when asked to
      ansible.builtin.fail:
        msg: broken on purpose
      when: ansible_check_mode and (out + '/BREAK_CHECK') is exists
""".replace("SECRET_VALUE", SECRET)


def notify_command(root: Path) -> tuple[str, Path]:
    """A notify command appending each event (JSON on stdin) as one line to events.jsonl."""
    events = root / "events.jsonl"
    script = root / "notify.sh"
    script.write_text(f"#!/bin/sh\ncat >> {events}\necho >> {events}\n")
    script.chmod(0o755)
    return str(script), events


def events_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_breach_during_the_watch_rolls_back_even_after_a_restart_and_status_shows_the_minutes_left(short_tmp):
    answer = {
        "now": (200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0"]}]}})
    }
    prometheus = Server(lambda path: answer["now"])
    command, events = notify_command(short_tmp)
    watch = {
        "for": "2m",
        "interval": 1,
        "inconclusive": "fail",
        "prometheus": [
            {
                "url": f"http://127.0.0.1:{prometheus.port}",
                "query": 'errors{env="{env}"}',
                "max": 1,
                "name": "errors",
                "retries": 1,
            }
        ],
    }
    sandbox = Sandbox(
        short_tmp, {"qa": ["q-1"]}, env_options={"qa": {"auto_rollback": True, "watch": watch, "notify": {"command": [command]}}}
    )
    try:
        with Daemon(sandbox) as daemon:
            first = sandbox.head("qa")
            row = daemon.wait_state("qa", "watching", first)
            assert re.fullmatch(r"watching, 2 min left", row["reason"]), row
            sandbox.write("app.txt", "v2")
            v2 = sandbox.commit("v2")
            sandbox.push("main", "main:qa")
            daemon.wait_state("qa", "watching", v2)  # the new deployment ended the old watch and began its own
        # A restart resumes the watch from the store.
        with Daemon(sandbox) as daemon:
            row = daemon.wait_state("qa", "watching", v2)
            assert row["reason"].startswith("watching, ")
            daemon.wait_for(lambda: "resuming the watch of deployment" in daemon.log(), 30, "the watch resumed")
            answer["now"] = (200, "this is not what Prometheus says")  # garbage: inconclusive, and `fail` says breach
            rollback = daemon.wait_for(
                lambda: next((d for d in sandbox.history("qa") if d["kind"] == "rollback" and d["result"] == "succeeded"), None),
                60,
                "the rollback",
            )
            assert rollback["trigger"] == "auto-rollback" and rollback["tree"] == sandbox.tree(first)
            assert rollback["reason"].startswith("automatic rollback: watch of deployment #")
            assert "prometheus errors" in rollback["reason"] and "inconclusive after 2 attempts" in rollback["reason"]
            failed = daemon.wait_for(
                lambda: [e for e in events_of(events) if e["event"] == "watch-failed"], 30, "the watch-failed notification"
            )
            assert failed[0]["commit"] == v2 and failed[0]["inconclusive"] is True
            assert failed[0]["rollback_commit"] == rollback["commit"]
    finally:
        prometheus.close()


def drift_sandbox(root: Path, heal: bool, hosts: tuple[str, ...] = ("d-1", "d-2")) -> tuple[Sandbox, Path]:
    command, events = notify_command(root)
    sandbox = Sandbox(
        root,
        {"qa": list(hosts)},
        env_options={"qa": {"drift": {"interval": 2, "heal": heal}, "notify": {"command": [command]}}},
    )
    sandbox.write("playbooks/deploy.yml", DRIFT_PLAYBOOK)
    sandbox.commit("a playbook that writes a config and a secret")
    sandbox.push("main", "main:qa")
    return sandbox, events


def drift(sandbox: Sandbox) -> dict | None:
    return json.loads(sandbox.command("drift", "qa", "--json").stdout)  # polled: in this process


def test_a_file_changed_behind_ansibles_back_is_drift_with_its_diff_and_no_log_values_are_never_shown(short_tmp):
    sandbox, events = drift_sandbox(short_tmp, heal=False)
    with Daemon(sandbox) as daemon:
        head = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", head)
        baseline = daemon.wait_for(
            lambda: (r := drift(sandbox)) and r["state"] in ("baseline", "clean") and r, 60, "the baseline check"
        )
        # The command that reports changed on every run is the baseline, never drift.
        assert daemon.wait_for(lambda: (r := drift(sandbox)) and r["state"] == "clean" and r, 60, "a clean check")
        assert baseline["drifted_hosts"] == 0
        (sandbox.out / "d-2.conf").write_text("port = 9999\n")  # behind Ansible's back
        (sandbox.out / "d-2.secret").write_text("someone else's\n")
        # A check may run between the two writes: wait for the one that sees both.
        row = daemon.wait_for(
            lambda: (r := sandbox.status()["qa"])["state"] == "drifted" and "2 tasks" in r["reason"] and r, 60, "drifted"
        )
        assert row["reason"] == "1 host drifted (d-2): 2 tasks would change (`gitopsd drift qa` shows them)"
        report = drift(sandbox)
        assert report["drifted_hosts"] == 1 and list(report["hosts"]) == ["d-2"]
        tasks = {t["task"]: t for t in report["hosts"]["d-2"]}
        assert set(tasks) == {"write the config", "write the secret"}
        assert "-port = 9999" in tasks["write the config"]["diff"] and "+port = 8080" in tasks["write the config"]["diff"]
        assert tasks["write the secret"] == {**tasks["write the secret"], "no_log": True, "diff": ""}
        text = sandbox.command("drift", "qa").stdout
        assert "d-2:" in text and "write the config" in text and "+port = 8080" in text and "(no_log: values hidden)" in text
        for output in (text, json.dumps(report), "\n".join(json.dumps(e) for e in events_of(events))):
            assert SECRET not in output and "someone else's" not in output
        detected = daemon.wait_for(
            lambda: [e for e in events_of(events) if e["event"] == "drift-detected"], 30, "the drift-detected notification"
        )
        assert detected[0]["hosts"] == ["d-2"]
        time.sleep(5)  # more checks find the same drift: said once
        assert len([e for e in events_of(events) if e["event"] == "drift-detected"]) == 1
        assert [d["kind"] for d in sandbox.history("qa")] == ["deploy"]  # heal is off: nothing re-applied
        # A check-mode run that itself fails is `drift unknown`, never drift.
        (sandbox.out / "BREAK_CHECK").write_text("")
        row = daemon.wait_for(lambda: (r := sandbox.status()["qa"])["state"] == "in-sync" and r, 60, "drift unknown")
        assert row["reason"].startswith("drift unknown: the check-mode run failed: failed on d-1 (failed), d-2 (failed)")


def test_heal_reapplies_the_deployed_tree_as_a_deployment_of_kind_heal(short_tmp):
    # One host: each run of the drift playbook is about a second of CPU per host, and this test makes seven.
    sandbox, events = drift_sandbox(short_tmp, heal=True, hosts=("d-1",))
    with Daemon(sandbox) as daemon:
        head = sandbox.head("qa")
        daemon.wait_state("qa", "in-sync", head)
        daemon.wait_for(lambda: (r := drift(sandbox)) and r["state"] == "clean", 60, "a clean check")
        (sandbox.out / "d-1.conf").write_text("port = 1\n")
        heal = daemon.wait_for(
            lambda: next((d for d in sandbox.history("qa") if d["kind"] == "heal" and d["result"] == "succeeded"), None),
            60,
            "the heal",
        )
        assert (heal["commit"], heal["trigger"], heal["actor"]) == (head, "heal", "gitopsd")
        assert heal["reason"].startswith("heal: 1 host drifted (d-1)")
        assert (sandbox.out / "d-1.conf").read_text().startswith("port = 8080\n")
        daemon.wait_for(
            lambda: (r := drift(sandbox)) and r["deployment"] == heal["id"] and r["state"] == "clean",
            60,
            "a clean check after the heal",
        )
