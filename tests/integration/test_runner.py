"""Real ansible-runner and ansible-playbook runs with `ansible_connection=local` hosts.

Success is judged from the final stats, not the exit code; cancel and timeout reap every process;
extra vars are data that Jinja never evaluates.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gitopsd.adapters.runner import PlaybookRun, processes_of, run_playbook
from gitopsd.core.errors import StalledError
from gitopsd.core.tree import resolve_inside
from tests.support import inventory

LOCAL = "ansible_connection=local ansible_python_interpreter={{ ansible_playbook_python }}"


def make_run(
    tmp: Path, playbook: str, inv: str, *, timeout: int = 60, extravars: dict | None = None, marker: str = "test"
) -> PlaybookRun:
    """A run with its own marker: the reaper of one test must not kill the runs of another running alongside."""
    work = tmp / "tree"
    (work / "playbooks").mkdir(parents=True, exist_ok=True)
    (work / "playbooks" / "deploy.yml").write_text(playbook)
    (work / "hosts.yml").write_text(inv)
    values = {"gitopsd_env": "qa", "gitopsd_commit": "a" * 40, "gitopsd_workdir": str(work), **(extravars or {})}
    return PlaybookRun(
        marker=f"{marker}-{time.monotonic_ns()}",
        workdir=work,
        playbook=work / "playbooks" / "deploy.yml",
        inventory=work / "hosts.yml",
        data_dir=tmp / f"runner-{time.monotonic_ns()}",
        extravars=values,
        timeout=timeout,
    )


OK_PLAY = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: msg=hello\n"


def test_a_good_run_succeeds_on_every_host(tmp_path):
    outcome = run_playbook(make_run(tmp_path, OK_PLAY, inventory("h1", "h2")), threading.Event())
    assert outcome.ok and outcome.hosts == {"h1": "ok", "h2": "ok"}
    assert outcome.stdout is not None and "PLAY RECAP" in outcome.stdout.read_text()


def test_no_hosts_matched_fails_although_ansible_exits_0(tmp_path):
    play = "- hosts: webservers\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: msg=hi\n"
    outcome = run_playbook(make_run(tmp_path, play, inventory("h1")), threading.Event())
    assert outcome.rc == 0 and not outcome.ok
    assert "no hosts matched" in outcome.reason


def test_an_unreachable_host_fails_the_run(tmp_path):
    inv = "all:\n  hosts:\n    ghost:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n      ansible_connection: ssh\n"
    play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
    outcome = run_playbook(make_run(tmp_path, play, inv), threading.Event())
    assert outcome.rc == 4 and not outcome.ok and outcome.hosts == {"ghost": "unreachable"}
    assert "ghost (unreachable)" in outcome.reason


def test_a_failed_task_fails_the_run_naming_the_host(tmp_path):
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail: msg=no\n"
        "      when: inventory_hostname == 'h2'\n"
    )
    outcome = run_playbook(make_run(tmp_path, play, inventory("h1", "h2")), threading.Event())
    assert not outcome.ok and outcome.rc == 2
    assert outcome.hosts == {"h1": "ok", "h2": "failed"}


def test_a_syntax_error_fails_without_stats(tmp_path):
    outcome = run_playbook(make_run(tmp_path, "- hosts: all\n  tasks: [\n", inventory("h1")), threading.Event())
    assert not outcome.ok and outcome.permanent and outcome.reason.startswith("invalid content: YAML parsing failed")


def test_a_timeout_reaps_every_process_including_orphaned_module_children(tmp_path):
    play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 47\n"
    started = time.monotonic()
    run = make_run(tmp_path, play, inventory("h1"), timeout=3, marker="test-timeout")
    outcome = run_playbook(run, threading.Event())
    assert outcome.status == "timeout" and not outcome.ok
    assert time.monotonic() - started < 15
    assert processes_of(run.marker) == []


def test_cancel_stops_the_run_and_reaps(tmp_path):
    play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 48\n"
    cancel = threading.Event()
    threading.Timer(2.0, cancel.set).start()
    run = make_run(tmp_path, play, inventory("h1"), marker="test-cancel")
    outcome = run_playbook(run, cancel)
    assert outcome.status == "canceled"
    assert processes_of(run.marker) == []


def test_extra_vars_with_jinja_or_shell_syntax_are_never_evaluated(tmp_path):
    canary = tmp_path / "pwned"
    evil = "{{ lookup('pipe', 'touch " + str(canary) + "') }}$(touch " + str(canary) + ")"
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy: {dest: '" + str(tmp_path / "seen") + "', content: '{{ gitopsd_env }}'}\n"
    )
    outcome = run_playbook(make_run(tmp_path, play, inventory("h1"), extravars={"gitopsd_env": evil}), threading.Event())
    assert outcome.ok
    assert not canary.exists()
    assert (tmp_path / "seen").read_text() == evil


def test_extra_vars_stay_strings_whatever_they_look_like(tmp_path):
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy: {dest: '" + str(tmp_path / "types") + "', "
        "content: \"{{ [gitopsd_env, gitopsd_deploy_id, gitopsd_previous_commit] | map('type_debug') | join(',') }}"
        '|{{ gitopsd_env }}|{{ gitopsd_previous_commit }}"}\n'
    )
    values = {"gitopsd_env": "0123", "gitopsd_deploy_id": "7", "gitopsd_previous_commit": ""}
    assert run_playbook(make_run(tmp_path, play, inventory("h1"), extravars=values), threading.Event()).ok
    assert (tmp_path / "types").read_text() == "str,str,str|0123|"


def test_the_playbook_child_sees_no_notify_socket(tmp_path, monkeypatch):
    from gitopsd.adapters.runner import scrub_environment

    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    scrub_environment()
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy: {dest: '" + str(tmp_path / "env") + "', "
        "content: \"{{ lookup('ansible.builtin.env', 'NOTIFY_SOCKET', default='absent') }}\"}\n"
    )
    assert run_playbook(make_run(tmp_path, play, inventory("h1")), threading.Event()).ok
    assert (tmp_path / "env").read_text() == "absent"


def test_paths_leading_out_of_the_tree_through_a_symlink_are_refused(tmp_path):
    root = tmp_path / "tree"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "qa").symlink_to("/etc")
    with pytest.raises(StalledError, match="outside the exported tree"):
        resolve_inside(root, "environments/qa/hosts")
    with pytest.raises(StalledError, match="does not exist in this commit"):
        resolve_inside(root, "playbooks/deploy.yml")


def test_a_timed_out_run_says_after_how_long_in_which_task_on_which_host_and_what_to_change(tmp_path):
    # "run timed out" alone left a team guessing which task hung and which setting ended it.
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: msg=hello\n"
        "    - name: wait for the database\n      ansible.builtin.command: sleep 600\n"
    )
    run = make_run(tmp_path, play, inventory("h1"), timeout=30, marker="test-timeout-says")
    outcome = run_playbook(run, threading.Event())
    assert outcome.status == "timeout" and processes_of(run.marker) == []
    assert outcome.reason == (
        "run timed out after 30s in task 'wait for the database' on h1 (every process of the run was stopped); "
        "if it needs longer, raise the environment's timeout: in the config"
    ), outcome.reason
