"""Promotion previews with real hosts: the daemon runs the candidate tree in check mode with diff against the
target's SSH hosts (real sshd on loopback) and its vault, records per host what would change, and binds approvals
to it: a deployment to the target afterwards makes it stale, and production refuses the candidate until a fresh
one. Never a no_log value or a vault secret in what it shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshhosts import inventory_yaml, skip_without_sshd
from tests.support import Daemon, Sandbox, free_port, inventory
from tests.webclient import Browser, token, web_up

pytestmark = [pytest.mark.slow]
NAMES = ["web-1", "web-2"]
SECRET = "vault-s3cret-9f2c"  # in production's vault only
NO_LOG_VALUE = "nolog-value-77ab"  # written by a no_log task

# A config file from the tree, whose change notifies the handler that restarts the app's service.
PLAYBOOK = (
    """\
- hosts: all
  gather_facts: false
  vars:
    greeting: "{{ lookup('ansible.builtin.file', gitopsd_workdir + '/GREETING') }}"
  tasks:
    - name: write the app config
      ansible.builtin.copy:
        dest: "{{ app_dir }}/app.conf"
        content: "greeting={{ greeting }}\\ntoken={{ api_token | default('none') }}\\n"
        mode: "0644"
      notify: restart the app
    - name: write a secret no_log hides
      ansible.builtin.copy:
        dest: "{{ app_dir }}/nolog.txt"
        content: "{{ greeting }} """
    + NO_LOG_VALUE
    + """\\n"
        mode: "0600"
      no_log: true
    - name: migrate the database
      ansible.builtin.command: "echo migrating for {{ greeting }}"
      changed_when: true
    - name: only on request
      ansible.builtin.command: "echo never"
      when: false
  handlers:
    - name: restart the app
      ansible.builtin.command: "touch {{ app_dir }}/restarted"
"""
)


def vault_string(password_file: Path, value: str) -> str:
    """An inline `!vault` value, encrypted by ansible-vault."""
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(password_file),
            value,
            "--name",
            "api_token",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out


@skip_without_sshd
def test_a_preview_lists_the_changed_file_and_the_restarted_service_per_host_and_goes_stale_after_a_deployment(
    short_tmp, ssh_hosts
):
    hosts = ssh_hosts(NAMES)
    if os.geteuid() == 0:  # playbooks run sandboxed as nobody: the SSH key is that user's, as it would be the service's
        for path in (hosts[0].key, Path(f"{hosts[0].key}.pub")):
            os.chown(path, 65534, 65534)
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    password = short_tmp / "vault-pass"
    password.write_text("correct horse\n")
    sandbox = Sandbox(
        short_tmp / "s",
        {"staging": ["stg-1"], "production": NAMES},
        env_options={
            "production": {
                "vault_password_file": str(password),
                "approvals": {"required": 1, "approvers": [me], "forbid_self_approval": False},
            }
        },
        sandbox_options={"read_only": [str(hosts[0].key.parent)]},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"]}}},
        },
    )
    apps = {name: sandbox.out / name for name in ["stg-1", *NAMES]}
    for folder in apps.values():
        folder.mkdir()
        folder.chmod(0o777)
    sandbox.write("playbooks/deploy.yml", PLAYBOOK)
    sandbox.write("GREETING", "hello")
    sandbox.write("environments/staging/hosts.yml", inventory("stg-1"))
    sandbox.write("environments/staging/host_vars/stg-1.yml", f"app_dir: {apps['stg-1']}\n")
    sandbox.write(
        "environments/production/hosts.yml",
        inventory_yaml(hosts, {name: {"app_dir": str(apps[name])} for name in NAMES}, group_vars={"ansible_pipelining": True}),
    )
    sandbox.write("environments/production/group_vars/all/vault.yml", vault_string(password, SECRET))
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:staging")
    sandbox.command("hosts", "trust", "production", "--yes", "--ref", "staging")
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        viewer = Browser(port)
        assert viewer.login(token(sandbox, "vera-laptop", "read", owner="vera")).status == 303
        daemon.wait_result("staging", v1, "succeeded", timeout=120)
        sandbox.command("rc", "create", "--name", "one")
        first = daemon.wait_for(lambda: _done(sandbox, "one"), 300, "the first candidate's preview")
        assert first["state"] == "done", first
        sandbox.command("approve", "one", "--note", "first release")
        sandbox.command("promote", "rc/one", "production")
        daemon.wait_result("production", sandbox.head("production"), "succeeded", timeout=180)

        # v2 changes the config: each production host would get a new app.conf and restart the app.
        sandbox.write("GREETING", "hi there")
        v2 = sandbox.commit("v2")
        sandbox.push("main", "main:staging")
        daemon.wait_result("staging", v2, "succeeded", timeout=120)
        deployments = len(sandbox.history("production"))
        sandbox.command("rc", "create", "--name", "two")
        preview = daemon.wait_for(lambda: _done(sandbox, "two"), 300, "the second candidate's preview")
        assert preview["state"] == "done" and not preview["stale"], preview
        for name in NAMES:
            host = preview["hosts"][name]
            assert host["state"] == "ok", host
            by_task = {c["task"]: c for c in host["changes"]}
            conf = by_task["write the app config"]
            assert conf["kind"] == "file" and conf["path"] == str(apps[name] / "app.conf")
            assert "-greeting=hello" in conf["diff"] and "+greeting=hi there" in conf["diff"]
            assert by_task["restart the app"]["handler"] and by_task["restart the app"]["kind"] == "handler"
            assert by_task["migrate the database"]["kind"] == "cannot predict"
            assert "only on request" not in by_task  # its `when` was false: nothing to predict
            assert by_task["write a secret no_log hides"]["no_log"] and by_task["write a secret no_log hides"]["diff"] == ""
        shown = (
            sandbox.command("rc", "show", "two").stdout
            + sandbox.command("rc", "show", "two", "--json").stdout
            + sandbox.command("preview", "--show", str(preview["id"])).stdout
        )
        assert SECRET not in shown and NO_LOG_VALUE not in shown
        assert "[hidden: vault secret]" in json.dumps(preview)
        assert "web-1:" in shown and "restart (handler): restart the app" in shown and "+greeting=hi there" in shown
        text = sandbox.command("rc", "show", "two").stdout  # the preview per host, then the audit notes
        assert f"Preview #{preview['id']} of rc/two" in text and "+greeting=hi there" in text
        assert "restart (handler): restart the app" in text and "cannot predict: migrate the database" in text
        assert f"preview #{preview['id']} of rc/two against production" in text
        assert (apps["web-1"] / "app.conf").read_text().startswith("greeting=hello")  # check mode changed nothing
        assert len(sandbox.history("production")) == deployments  # and is no deployment

        # Approved on that preview; then production is re-applied: the preview is stale and production refuses.
        sandbox.command("approve", "two", "--note", "looks right")
        sandbox.command("sync", "production")
        daemon.wait_for(
            lambda: len([d for d in sandbox.history("production") if d["result"] == "succeeded"]) >= 2, 180, "the re-apply"
        )
        view = json.loads(sandbox.command("rc", "show", "two", "--json").stdout)
        assert view["state"] == "waiting" and view["preview"]["stale"], view
        assert "its preview is stale" in view["problems"][0]
        page = viewer.get("/repos/shop/rcs/two")
        assert page.status == 200 and "Stale:" in page.text and str(apps["web-2"] / "app.conf") in page.text
        assert "restart (handler)" in page.text and SECRET not in page.text and NO_LOG_VALUE not in page.text
        refused = sandbox.command("promote", "rc/two", "production", check=False)
        assert refused.returncode == 1 and "preview is stale" in refused.stdout + refused.stderr, refused

        # The refused promotion asked for a fresh preview for the approvers (one check-mode run on both hosts; asking
        # for another with `preview --rc`, test_rejected_trees.py, ran a second beside it): it shows the same
        # changes, so the approval carries over and production takes the candidate.
        fresh = daemon.wait_for(
            lambda: (view := _done(sandbox, "two")) and view["id"] != preview["id"] and view, 300, "the fresh preview"
        )
        assert fresh["state"] == "done" and fresh["stale"] is None, fresh
        view = json.loads(sandbox.command("rc", "show", "two", "--json").stdout)
        assert view["state"] == "approved", view
        sandbox.command("promote", "rc/two", "production")
        daemon.wait_result("production", sandbox.head("production"), "succeeded", timeout=180)
        assert json.loads(sandbox.command("rc", "show", "two", "--json").stdout)["state"] == "approved"  # taking it: fresh

        # Where is it running? Both production hosts run rc/two's tree since that deployment; staging-1 too.
        where = json.loads(sandbox.command("where", "rc/two", "--json").stdout)
        assert sorted((h["env"], h["host"]) for h in where["hosts"]) == [
            ("production", "web-1"),
            ("production", "web-2"),
            ("staging", "stg-1"),
        ]
        listed = json.loads(sandbox.command("hosts", "production", "--json").stdout)
        assert [(h["host"], h["tree"], h["last_result"]) for h in listed] == [
            ("web-1", sandbox.tree(v2), "changed"),
            ("web-2", sandbox.tree(v2), "changed"),
        ]

        # A host down: the preview shows it unreachable, and the command says so in one line, exit code 1.
        hosts[1].stop()
        down = sandbox.command("preview", "staging", "production", check=False)
        assert down.returncode == 1, down
        assert down.stderr.strip().splitlines() == [down.stderr.strip()]
        assert "unreachable: web-2" in down.stderr and "web-2: UNREACHABLE" in down.stdout


def _done(sandbox: Sandbox, rc: str) -> dict | None:
    view = json.loads(sandbox.command("rc", "show", rc, "--json").stdout)["preview"]  # polled: in this process
    return view if view is not None and view["state"] in ("done", "failed") else None


def test_a_preview_of_an_unknown_environment_or_a_tree_the_source_never_ran_says_so_in_one_line(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["stg-1"]})
    sandbox.write("VERSION", "1")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        daemon.wait_result("qa", v1, "succeeded", timeout=120)
        sandbox.write("VERSION", "2")
        never = sandbox.commit("never deployed")
        sandbox.push("main")
        for args, said in (
            (("qa", "prod"), "has no environment 'prod' (it has: qa, staging)"),
            (("nowhere", "staging"), "has no environment 'nowhere'"),
            (("qa", "staging", "--tree", sandbox.tree(never)), "never ran successfully in qa"),
            (("staging", "qa"), "staging runs nothing deployed and verified yet"),
            (("qa", "staging", "--tree", "feedbeef"), "no commit or tree 'feedbeef'"),
        ):
            proc = sandbox.command("preview", *args, check=False)
            assert proc.returncode == 1, proc
            assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "Traceback" not in proc.stderr


PAUSING_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: wait, in check mode only (a preview)
      ansible.builtin.pause:
        seconds: 120
      when: ansible_check_mode
"""


def test_a_daemon_killed_during_a_preview_leaves_no_process_of_it_and_the_next_one_marks_it_failed(short_tmp):
    import signal

    import psutil

    def preview_processes() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if "-preview-" in proc.environ().get("GITOPSD_DEPLOYMENT", ""):
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["stg-1"]})
    sandbox.write("playbooks/deploy.yml", PAUSING_PLAYBOOK)
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:qa")
    daemon = Daemon(sandbox)
    daemon.wait_result("qa", v1, "succeeded", timeout=120)
    assert "queued" in sandbox.command("preview", "qa", "staging", "--no-wait").stdout
    daemon.wait_for(preview_processes, 120, "the preview's ansible-playbook")
    daemon.stop(signal.SIGKILL)
    with Daemon(sandbox) as again:
        shown = again.wait_for(
            lambda: (
                json.loads(sandbox.command("preview", "--show", "1", "--json", check=False).stdout or "{}").get("state")
                == "failed"
            ),
            60,
            "the preview marked failed",
        )
        assert shown
        assert "interrupted" in json.loads(sandbox.command("preview", "--show", "1", "--json", check=False).stdout)["summary"]
        again.wait_for(lambda: not preview_processes(), 60, "no process of the preview left")
