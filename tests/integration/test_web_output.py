"""The dashboard's deployment page shows repository-controlled Ansible output, whatever bytes it holds.

Real: `gitopsd run` as a process serving the dashboard on loopback, a push through the installed hook, and
ansible-playbook deploying to a local host with a playbook whose task names carry escape sequences. Nothing faked.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import Daemon, Sandbox, free_port
from tests.webclient import Browser, token, web_up

HOSTILE_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: "\\e[{nines}mhuge colour\\e[0m"
      ansible.builtin.debug: {{msg: one}}
    - name: "\\e[{params}mmany parameters\\e[0m"
      ansible.builtin.debug: {{msg: two}}
    - name: "\\e[1;32mgreen <b>not bold</b>\\e[0m"
      ansible.builtin.debug: {{msg: three}}
"""


def test_the_deployment_page_shows_output_whose_escape_sequences_have_absurd_parameters(short_tmp: Path) -> None:
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"]}}},
        },
    )
    sandbox.write("playbooks/deploy.yml", HOSTILE_PLAYBOOK.format(nines="9" * 5000, params=";".join(["31"] * 20_000)))
    commit = sandbox.commit("a playbook whose output has absurd escape sequences")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        daemon.wait_state("qa", "in-sync", commit)
        viewer = Browser(port)
        assert viewer.login(token(sandbox, "vera-laptop", "read", owner="vera")).status == 303
        deployment = sandbox.history("qa")[0]
        page = viewer.get(f"/deployments/{deployment['id']}")
        assert page.status == 200, page.text[:500]
        assert "huge colour" in page.text and "many parameters" in page.text
        assert '<span class="ansi-bold ansi-fg-green">' in page.text and "&lt;b&gt;not bold&lt;/b&gt;" in page.text
        assert "9" * 100 not in page.text and "\x1b" not in page.text
        assert len(re.findall(r"<span", page.text)) < 100  # 20,000 parameters make one span, not 20,000
