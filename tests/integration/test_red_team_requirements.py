"""What one tree installs from its requirements is that tree's alone: a qa push cannot choose what production's tree runs.

The installed roles and collections are kept in a cache shared by every environment. Real: bubblewrap, ansible-galaxy
installing a collection from a tarball in the tree (a relative `type: file` source), ansible-playbook running its module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from gitopsd.adapters import runner
from gitopsd.core.types import PlaybookRun
from tests.integration.test_sandbox import Server

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

REQUIREMENTS = "collections:\n  - name: ./acme-tools-1.0.0.tar.gz\n    type: file\n"
PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - acme.tools.which: {{}}
      register: which
    - ansible.builtin.copy:
        content: "{{{{ which.said }}}}"
        dest: "{out}/{{{{ gitopsd_tree }}}}"
"""
MODULE = """\
#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
AnsibleModule(argument_spec={{}}).exit_json(changed=False, said={said!r})
"""


def collection(folder: Path, said: str) -> bytes:
    """acme.tools 1.0.0 built by ansible-galaxy, its one module saying `said`."""
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "init", "acme.tools", "--init-path", str(folder)], check=True, capture_output=True)
    source = folder / "acme" / "tools"
    (source / "plugins" / "modules").mkdir(parents=True, exist_ok=True)
    (source / "plugins" / "modules" / "which.py").write_text(MODULE.format(said=said))
    subprocess.run([galaxy, "collection", "build", str(source), "--output-path", str(folder)], check=True, capture_output=True)
    return (folder / "acme-tools-1.0.0.tar.gz").read_bytes()


def test_a_qa_tree_with_the_same_requirements_but_its_own_tarball_does_not_choose_what_the_next_tree_installs(tmp_path):
    server = Server(tmp_path / "server")
    policy = server.policy(requirements_cache=server.state / "requirements")  # as the daemon's: shared by every run
    said = {}
    for n, (tree_id, what) in enumerate((("evil-tree", "EVIL"), ("good-tree", "GOOD"))):
        tarball = collection(tmp_path / f"build-{n}", what)
        tree = server.export({"site.yml": PLAY.format(out=server.out), "requirements.yml": REQUIREMENTS})
        (tree / "acme-tools-1.0.0.tar.gz").write_bytes(tarball)
        outcome = runner.run_playbook(
            PlaybookRun(
                marker=f"test-{uuid.uuid4().hex[:8]}",
                workdir=tree,
                playbook=tree / "site.yml",
                inventory=tree / "hosts.yml",
                data_dir=tree.parent / "run-1",
                extravars={"gitopsd_env": "qa", "gitopsd_tree": tree_id},
                timeout=120,
            ),
            threading.Event(),
            policy,
        )
        assert outcome.ok, outcome.reason
        said[tree_id] = (server.out / tree_id).read_text()
    server.store.close()
    assert said == {"evil-tree": "EVIL", "good-tree": "GOOD"}
