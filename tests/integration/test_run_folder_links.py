"""What a run leaves in its own folder is read back as the run's, never as a file it names: a symlink does not lift the sandbox.

A run may write its folder (ansible-runner's private data dir, bound writable in the sandbox), and the daemon, `gitopsd
logs` and the dashboard read that folder afterwards, outside the sandbox, as the service user. Real: bubblewrap,
ansible-runner, ansible-playbook with a local host, `gitopsd logs` on a real store.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from gitopsd.adapters import runner
from gitopsd.adapters.inventory import InventoryError
from gitopsd.adapters.store import Store
from gitopsd.web.pages import OutputTail
from tests.integration.test_sandbox import Server
from tests.support import Daemon, Sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

SECRET = "production-vault-password-5521"


LINK_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: point this run's output at a file the sandbox hides
      ansible.builtin.shell: ln -sf {secret} "$TMPDIR/../artifacts/run/stdout"
"""


def hidden_secret(folder: Path) -> Path:
    """A one-line secret file, as production's vault password is: hidden from runs, readable by the service."""
    secret = folder / "production.vault"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return secret


def test_a_qa_run_that_links_its_output_to_productions_vault_password_does_not_show_it_in_gitopsd_logs(short_tmp):
    secret = hidden_secret(short_tmp)
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "production": ["production-1"]},
        env_options={"production": {"vault_password_file": str(secret)}},
    )
    box.write("playbooks/deploy.yml", LINK_PLAYBOOK.format(secret=secret))
    commit = box.commit("a playbook that links its output to a secret")
    box.push("main", "main:qa")
    with Daemon(box) as daemon:
        daemon.wait_result("qa", commit, "succeeded", timeout=180)
    deployment = box.history("qa")[0]
    assert os.path.islink(box.state / "deployments" / str(deployment["id"]) / "run-1" / "artifacts" / "run" / "stdout")
    logs = box.command("logs", str(deployment["id"])).stdout
    assert SECRET not in logs
    assert "not the run's own file" in logs
    with Store(box.state / "state.db") as store:  # the dashboard's deployment page reads it the same way
        shown = OutputTail(box.state, store.get(deployment["id"])).read()
    assert SECRET not in "".join(shown)


def test_an_inventory_that_links_its_error_output_to_a_secret_does_not_put_the_secret_in_the_deployments_reason(short_tmp):
    server = Server(short_tmp)  # short: a run's sockets live in its folder, and a socket's path must fit 108 bytes
    secret = hidden_secret(server.config.parent)
    link = f'ln -sf {secret} \\"$TMPDIR/../stderr\\"; rm -f \\"$TMPDIR/../hosts.json\\"; kill -9 $PPID'
    tree = server.export({"group_vars/all.yml": f"app_port: \"{{{{ lookup('pipe', '{link}') }}}}\"\n"})
    with pytest.raises(InventoryError) as failed:
        runner.read_hosts(
            tree / "hosts.yml",
            ("app_port",),
            workdir=tree,
            data_dir=tree.parent / "inv",
            marker=f"test-{uuid.uuid4().hex[:8]}",
            timeout=60,
            cancel=threading.Event(),
            policy=server.policy(),
        )
    server.store.close()
    assert SECRET not in str(failed.value)
    assert os.path.islink(tree.parent / "inv" / "stderr"), "the attack did not happen: the test proves nothing"
