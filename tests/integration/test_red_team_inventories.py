"""What a push to qa can make a run touch: production's hosts, named in qa's inventory.

Real: a bare repository with its branches, each environment's inventory exported from its branch head and read by
Ansible in the sandbox (bubblewrap), as `gitopsd hosts trust` and a deployment read it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid

import pytest

from gitopsd.adapters import runner
from gitopsd.config import load
from gitopsd.core.deployment import guarded_by
from gitopsd.core.types import PlaybookRun
from gitopsd.installers import doctor_inventories
from tests.integration.test_sandbox import Server
from tests.support import Sandbox, git
from tests.unit.test_config import problems

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

SSH_INVENTORY = """\
all:
  hosts:
{hosts}
"""


def set_inventories(box: Sandbox, inventories: dict[str, str]) -> None:
    """Put each environment's inventory on its branch directly (as `git update-ref` on the server would)."""
    for env, hosts in inventories.items():
        box.write(f"environments/{env}/hosts.yml", SSH_INVENTORY.format(hosts=hosts))
        commit = box.commit(f"{env}'s inventory")
        box.push("main")
        git(box.root, "--git-dir", str(box.repo), "update-ref", f"refs/heads/{env}", commit)


def test_doctor_names_a_production_host_in_qas_inventory_in_one_line_and_one_shared_on_purpose_as_ok(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    db = "127.0.0.9:2222"
    set_inventories(
        box,
        {
            "qa": "    qa-web: {ansible_host: 127.0.0.2}\n",
            "production": "    web-1: {ansible_host: 127.0.0.3}\n    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
        },
    )
    set_inventories(box, {"qa": "    db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222}\n"})  # a push to qa
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [(f.ok, f.what) for f in findings] == [
        (
            False,
            f"shop: qa's inventory names {db}, a host of production's (qa: db-copy; production: db-1): qa's runs are refused it",
        )
    ]
    assert (
        findings[0].fix is not None and "name it in sandbox.shared_hosts; else take it out of qa's inventory" in findings[0].fix
    )
    # Promoted: production's own tree now gives the host to qa too.
    set_inventories(box, {"production": "    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n"})
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [(f.ok, f.what) for f in findings] == [
        (
            True,
            f"shop: {db} serves qa, production (qa: db-copy; production: db-1) on purpose (production's own tree gives "
            "it to qa): a push to qa deploys to it",
        )
    ]


def test_doctor_says_no_host_is_shared_when_the_inventories_are_apart(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    set_inventories(
        box,
        {"qa": "    qa-web: {ansible_host: 127.0.0.2}\n", "production": "    web-1: {ansible_host: 127.0.0.3}\n"},
    )
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [(f.ok, f.what) for f in findings] == [(True, "no SSH host is in two environments' inventories")]


SSH_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.raw: "true"
"""


def qa_run_reaching(box: Sandbox, server: Server, host: str, caplog, **policy: object) -> list[str]:
    """Run qa's playbook over an inventory naming `host` (SSH), guarded as the daemon guards it; the forwarder's refusals."""
    repo = load(box.config).repositories[0]
    tree = server.export({"site.yml": SSH_PLAY, "hosts.yml": SSH_INVENTORY.format(hosts=f"    {host}\n")})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gitopsd.sshgate"):
        outcome = runner.run_playbook(
            PlaybookRun(
                marker=f"test-{uuid.uuid4().hex[:8]}",
                workdir=tree,
                playbook=tree / "site.yml",
                inventory=tree / "hosts.yml",
                data_dir=tree.parent / "run-1",
                extravars={"gitopsd_env": "qa"},
                timeout=60,
                guarded=guarded_by(repo, repo.environments[0]),
            ),
            threading.Event(),
            server.policy(**policy),
        )
    assert not outcome.ok  # no SSH server listens there: unreachable either way
    return [r.getMessage() for r in caplog.records if r.name == "gitopsd.sshgate"]


def test_a_qa_run_reaches_none_of_productions_ssh_hosts_unless_productions_own_tree_shares_them(short_tmp, caplog):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    server = Server(short_tmp / "server")  # short: ssh's ControlPath in the run's folder must fit 108 bytes
    set_inventories(
        box,
        {
            "qa": "    qa-web: {ansible_host: 127.0.0.2}\n",
            "production": "    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
        },
    )
    said = "127.0.0.9:2222 is a host of production's inventory, which production's own tree does not share"
    refused = qa_run_reaching(box, server, "db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222}", caplog)
    assert any(said in r for r in refused), refused
    # Shared on purpose: production's own tree (promoted like any change) puts the host in qa's inventory too.
    set_inventories(
        box,
        {
            "qa": "    bastion: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
            "production": "    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
        },
    )
    refused = qa_run_reaching(box, server, "db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222}", caplog)
    assert not any("production's inventory" in r for r in refused), refused
    server.store.close()


def test_a_host_the_administrator_names_in_shared_hosts_is_reached_by_qa_though_only_production_names_it(short_tmp, caplog):
    box = Sandbox(
        short_tmp, {"qa": ["qa-1"], "production": ["production-1"]}, sandbox_options={"shared_hosts": ["127.0.0.9:2222"]}
    )
    server = Server(short_tmp / "server")  # short: ssh's ControlPath in the run's folder must fit 108 bytes
    set_inventories(box, {"production": "    bastion: {ansible_host: 127.0.0.9, ansible_port: 2222}\n"})
    shared = load(box.config).sandbox.shared_hosts
    assert shared == (("127.0.0.9", 2222),)
    refused = qa_run_reaching(box, server, "bastion: {ansible_host: 127.0.0.9, ansible_port: 2222}", caplog, shared_hosts=shared)
    assert not any("production's inventory" in r for r in refused), refused
    server.store.close()


def test_shared_hosts_that_are_not_hosts_are_named_in_one_line_each(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, sandbox_options={"shared_hosts": ["bastion:22", "a b", "h:99999"]})
    said = [p.split(": ", 1)[1] for p in problems(box.config)]
    assert said == [
        "sandbox.shared_hosts[1]: must be HOST or HOST:PORT (e.g. bastion.example.com:22), not 'a b'",
        "sandbox.shared_hosts[2]: must be HOST or HOST:PORT (e.g. bastion.example.com:22), not 'h:99999'",
    ]


def test_doctor_reads_no_inventory_when_the_sandbox_is_off_and_says_so(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, sandbox_options={"enabled": False})
    (box.work / "environments" / "qa" / "hosts.yml").write_text("#!/bin/sh\ntouch " + str(box.out / "ran") + "\n")
    (box.work / "environments" / "qa" / "hosts.yml").chmod(0o755)  # an inventory script: code, as root here
    set_inventories_raw = box.commit("an inventory script")
    box.push("main")
    git(box.root, "--git-dir", str(box.repo), "update-ref", "refs/heads/qa", set_inventories_raw)
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [(f.ok, f.what) for f in findings] == [
        (True, "hosts shared by environments' inventories: not read, the sandbox is off (sandbox.enabled)")
    ]
    assert not (box.out / "ran").exists()
