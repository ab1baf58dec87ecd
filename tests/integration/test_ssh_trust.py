"""SSH host keys are checked against the service's known_hosts, recorded with `gitopsd hosts trust ENV`.

What is real: two sshd hosts on loopback (tests/sshhosts.py) with their own host keys, a bare repository
with the hook, `gitopsd hosts trust` as a process, and the deployment's playbook run as the daemon runs it
(ansible-runner in the sandbox, from the exported branch head, with the config's sandbox policy). The
inventory does NOT carry the fixture's SSH_COMMON_ARGS; it and the tree's ansible.cfg try to turn
checking off instead, and must not manage to.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from gitopsd import config as config_mod
from gitopsd.adapters.gitrepo import GitRepository
from gitopsd.adapters.runner import PlaybookRun, RunOutcome, run_playbook
from gitopsd.daemon.wiring import sandbox_policy
from tests.sshhosts import SshHost, interpreter, skip_without_sshd
from tests.support import GITOPSD, Sandbox, git, run
from tests.support import inventory as local_inventory

pytestmark = [pytest.mark.slow, skip_without_sshd]
NAMES = ["web-1", "web-2"]
PING = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n"
# Both are what a repository copied from a blog post says; neither may turn host key checking off.
LAX_CFG = "[defaults]\nhost_key_checking = False\n[ssh_connection]\nssh_args = -o StrictHostKeyChecking=no\n"


def inventory(hosts: list[SshHost]) -> str:
    entries = {
        h.name: {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "ansible_user": h.user,
            "ansible_ssh_private_key_file": str(h.key),
            "ansible_python_interpreter": interpreter(),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
        for h in hosts
    }
    return yaml.safe_dump({"all": {"hosts": entries}})


@pytest.fixture
def site(short_tmp, ssh_hosts):
    hosts = ssh_hosts(NAMES)
    if os.geteuid() == 0:  # runs drop to nobody: the client key is that user's, as it would be the service's
        for path in (hosts[0].key, Path(f"{hosts[0].key}.pub")):
            os.chown(path, 65534, 65534)
    sandbox = Sandbox(
        short_tmp,
        {"production": NAMES},
        env_options={"production": {"promote_from": "main"}},
        sandbox_options={"read_only": [str(hosts[0].key.parent)]},
    )
    sandbox.write("environments/production/hosts.yml", inventory(hosts))
    sandbox.write("playbooks/deploy.yml", PING)
    sandbox.write("ansible.cfg", LAX_CFG)
    sandbox.commit("production over ssh")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main")
    return sandbox, hosts


def deploy(sandbox: Sandbox) -> RunOutcome:
    """Run production's branch head as the daemon would: exported, in the config's sandbox."""
    config = config_mod.load(sandbox.config)
    repo = config.repositories[0]
    env = repo.environment("production")
    folder = config.state_dir / "deployments" / uuid.uuid4().hex[:8]
    commit = sandbox.head("production")
    GitRepository(repo.path).export(commit, folder / "tree")
    run = PlaybookRun(
        marker=f"trust-{uuid.uuid4().hex}",
        workdir=folder / "tree",
        playbook=folder / "tree" / env.playbook,
        inventory=folder / "tree" / env.inventory,
        data_dir=folder / "run",
        timeout=60,
        extravars={"gitopsd_env": "production", "gitopsd_repo": "shop", "gitopsd_commit": commit},
    )
    return run_playbook(run, threading.Event(), sandbox_policy(config))


def test_an_untrusted_host_fails_naming_it_then_hosts_trust_lets_it_deploy(site):
    sandbox, hosts = site
    outcome = deploy(sandbox)
    assert not outcome.ok and outcome.hosts == {"web-1": "unreachable", "web-2": "unreachable"}
    assert outcome.permanent  # retrying cannot help until someone trusts the keys: it stalls at once
    assert (
        f"host key of web-1 ({hosts[0].address}:{hosts[0].port}) is not trusted yet" in outcome.reason
        and "run `gitopsd hosts trust production --repo shop` after checking it" in outcome.reason
    ), outcome.reason

    trusted = sandbox.command("hosts", "trust", "production", "--yes")
    known_hosts = sandbox.state / ".ssh" / "known_hosts"
    for host in hosts:
        assert f"{host.name} ({host.address}:{host.port}): new" in trusted.stdout
        assert f"[{host.address}]:{host.port} ssh-ed25519 " in known_hosts.read_text()
    assert "ED25519 SHA256:" in trusted.stdout and f"recorded 2 hosts in {known_hosts}" in trusted.stdout
    assert oct(known_hosts.stat().st_mode & 0o777) == "0o644"

    outcome = deploy(sandbox)
    assert outcome.ok, outcome.reason
    assert "host_key_checking" not in outcome.reason
    again = sandbox.command("hosts", "trust", "production")  # nothing new: no question asked
    assert "web-1" in again.stdout and ": known" in again.stdout and "nothing to record" in again.stdout


def test_a_host_whose_key_changed_fails_naming_it_until_trusted_again(site):
    sandbox, hosts = site
    sandbox.command("hosts", "trust", "production", "--yes")
    assert deploy(sandbox).ok
    web2 = hosts[1]
    web2.stop()
    web2.host_key.unlink()
    Path(f"{web2.host_key}.pub").unlink()
    web2.start()  # a new host key: reinstalled, or someone in between

    outcome = deploy(sandbox)
    assert not outcome.ok and outcome.hosts == {"web-1": "ok", "web-2": "unreachable"}
    assert f"host key of web-2 ({web2.address}:{web2.port}) changed" in outcome.reason, outcome.reason
    assert "web-1" not in outcome.reason.split("host key of", 1)[1]

    refused = sandbox.command("hosts", "trust", "production", check=False)  # no terminal, no --yes: nothing written
    assert refused.returncode == 1 and "web-2" in refused.stdout and ": changed" in refused.stdout
    assert "--yes" in refused.stderr
    assert not deploy(sandbox).ok

    sandbox.command("hosts", "trust", "production", "--yes")
    known = (sandbox.state / ".ssh" / "known_hosts").read_text()
    assert known.count(f"[{web2.address}]:{web2.port} ") == 1  # the old key is gone, not kept beside the new one
    assert deploy(sandbox).ok


def test_hosts_trust_follows_the_old_ansible_ssh_host_and_port_names_as_ssh_does(site):
    sandbox, hosts = site
    web2 = hosts[1]
    data = yaml.safe_load(inventory(hosts))
    entry = data["all"]["hosts"][web2.name]
    entry.update(
        {
            "ansible_host": "192.0.2.1",
            "ansible_port": 1,  # overridden by the ansible_ssh_* names
            "ansible_ssh_host": web2.address,
            "ansible_ssh_port": web2.port,
        }
    )
    sandbox.write("environments/production/hosts.yml", yaml.safe_dump(data))
    sandbox.commit("web-2 with the old variable names")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main")
    trusted = sandbox.command("hosts", "trust", "production", "--yes")
    assert f"{web2.name} ({web2.address}:{web2.port}): new" in trusted.stdout, trusted.stdout
    assert deploy(sandbox).ok


def test_before_the_first_promotion_hosts_trust_names_the_ref_to_use_and_trusts_the_hosts_of_that_tree(site):
    sandbox, hosts = site
    empty = git(sandbox.root, "--git-dir", str(sandbox.repo), "hash-object", "-t", "tree", "-w", "/dev/null").stdout
    placeholder = git(
        sandbox.root, "--git-dir", str(sandbox.repo), "commit-tree", empty.strip(), "-m", "gitopsd init"
    ).stdout.strip()  # what `gitopsd init` leaves on a later environment's branch
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", placeholder)

    refused = sandbox.command("hosts", "trust", "production", "--yes", check=False)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert f"production is at the placeholder `gitopsd init` left ({placeholder[:7]})" in refused.stderr
    assert "first promotion from main" in refused.stderr
    assert "`gitopsd hosts trust production --ref main --repo shop`" in refused.stderr

    unknown = sandbox.command("hosts", "trust", "production", "--ref", "nosuch", check=False)
    assert unknown.returncode == 1 and "nosuch is not a commit or branch in" in unknown.stderr

    trusted = sandbox.command("hosts", "trust", "production", "--ref", "main", "--yes")
    assert f"recorded 2 hosts in {sandbox.state / '.ssh' / 'known_hosts'}" in trusted.stdout
    for host in hosts:
        assert f"{host.name} ({host.address}:{host.port}): new" in trusted.stdout


def test_hosts_trust_exits_1_saying_why_when_the_answer_is_no_or_the_inventory_has_no_ssh_hosts(site):
    sandbox, _hosts = site
    declined = run(
        [*GITOPSD, "hosts", "trust", "production", "--config", str(sandbox.config)],
        env=sandbox.environ(),
        input="n\n",
        check=False,
    )
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert f"nothing recorded in {sandbox.state / '.ssh' / 'known_hosts'}: the answer was not yes" in declined.stdout
    assert not (sandbox.state / ".ssh" / "known_hosts").exists()

    sandbox.write("environments/production/hosts.yml", local_inventory("h1"))
    sandbox.commit("production runs locally")
    sandbox.push("main")
    git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/production", "refs/heads/main")
    local = sandbox.command("hosts", "trust", "production", "--yes", check=False)
    assert local.returncode == 1, local.stdout + local.stderr
    assert "nothing recorded: the inventory of shop/production has no hosts reached over SSH" in local.stdout
