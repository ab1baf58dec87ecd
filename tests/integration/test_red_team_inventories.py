"""What a push to qa can make a run touch: production's hosts, named in qa's inventory.

Real: a bare repository with its branches, each environment's inventory exported from its branch head and read by
Ansible in the sandbox (bubblewrap), as `gitopsd hosts trust` and a deployment read it.
"""

from __future__ import annotations

import shutil

import pytest

from gitopsd.config import load
from gitopsd.installers import doctor_inventories
from tests.support import Sandbox, git

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


def test_doctor_names_a_host_that_qa_and_production_both_name_in_one_line_and_no_other(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    set_inventories(
        box,
        {
            "qa": "    qa-web: {ansible_host: 127.0.0.2}\n    db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
            "production": "    web-1: {ansible_host: 127.0.0.3}\n    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n",
        },
    )
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [f.ok for f in findings] == [False]
    assert findings[0].what == (
        "shop: 127.0.0.9:2222 is in the inventories of qa, production (qa: db-copy; production: db-1): a push to qa "
        "deploys to it, whatever the promotion rule says of production"
    )
    assert findings[0].fix is not None and "take it out of qa's inventory" in findings[0].fix


def test_doctor_says_no_host_is_shared_when_the_inventories_are_apart(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    set_inventories(
        box,
        {"qa": "    qa-web: {ansible_host: 127.0.0.2}\n", "production": "    web-1: {ansible_host: 127.0.0.3}\n"},
    )
    findings = doctor_inventories.shared_hosts(load(box.config))
    assert [(f.ok, f.what) for f in findings] == [(True, "no SSH host is in two environments' inventories")]
