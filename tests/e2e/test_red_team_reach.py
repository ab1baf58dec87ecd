"""What a push to qa can make the daemon run against production's hosts outside a qa deployment: previews.

Real: a bare repository with hooks, the daemon as a process, previews asked with `gitopsd preview`, runs in the
sandbox (bubblewrap) with the SSH forwarder of `sandbox.playbook_network: ssh-only`.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support import Daemon, Sandbox, git

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

ENVS = {"qa": ["qa-1"], "staging": ["stg-1"], "production": ["prod-1"]}


def test_a_preview_against_production_of_a_tree_only_qa_ran_is_refused_in_one_line(short_tmp):
    sandbox = Sandbox(short_tmp, ENVS)
    sandbox.write("VERSION", "qa only")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        daemon.wait_result("qa", v1, "succeeded", timeout=120)
        # A check-mode run still runs `check_mode: false` tasks, and the tree names production's inventory itself.
        proc = sandbox.command("preview", "qa", "production", "--no-wait", check=False)
        assert proc.returncode == 1, proc
        said = proc.stderr.strip().splitlines()
        assert len(said) == 1 and "never ran successfully in staging, which production is promoted from" in said[0], said
        assert "gitopsd preview staging production" in said[0] and "Traceback" not in proc.stderr
        # What may be promoted there is previewed as before.
        assert "queued" in sandbox.command("preview", "qa", "staging", "--no-wait").stdout


SSH_HOSTS = """\
all:
  hosts:
    {host}
"""


REACHING_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.raw: "true"
      check_mode: false
"""


def test_a_preview_against_staging_reaches_none_of_productions_ssh_hosts(short_tmp):
    sandbox = Sandbox(short_tmp, ENVS)
    # production's own inventory, on its branch (as `git update-ref` on the server would put it).
    sandbox.write(
        "environments/production/hosts.yml", SSH_HOSTS.format(host="db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}")
    )
    production = sandbox.commit("production's inventory")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", production)
    # A push to qa whose staging inventory names production's database, and a task that runs in check mode too.
    sandbox.write("playbooks/deploy.yml", REACHING_PLAYBOOK)
    sandbox.write(
        "environments/staging/hosts.yml", SSH_HOSTS.format(host="db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222}")
    )
    v1 = sandbox.commit("staging reaches the database")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        daemon.wait_result("qa", v1, "succeeded", timeout=120)
        sandbox.command("preview", "qa", "staging", check=False)
        said = "127.0.0.9:2222 is a host of production's inventory, which production's own tree does not share"
        daemon.wait_for(lambda: said in daemon.log(), 120, "the forwarder's refusal")
