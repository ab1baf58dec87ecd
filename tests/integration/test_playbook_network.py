"""A playbook run's network (sandbox.playbook_network): loopback is its own, and ssh gets out only to the inventory.

What is real: bubblewrap, ansible-runner and ansible-playbook, ssh and the run's ssh-agent, sshd hosts on loopback
(tests/sshhosts.py), the forwarder's socket and its helper (libexec/ssh-proxy), a TCP listener standing for the
daemon's API. Each test plays the attacker with push rights: a playbook task that runs on the controller.
"""

from __future__ import annotations

import getpass
import logging
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from gitopsd.adapters import sandbox, sshgate
from gitopsd.config import load
from gitopsd.core.types import HostInfo
from gitopsd.installers import doctor
from tests.integration.test_sandbox import Server
from tests.integration.test_sandbox_keys import CONNECT, daemon_home, keeps_user, listener, umask_kept  # noqa: F401 (fixtures)
from tests.sshhosts import inventory_yaml, skip_without_sshd
from tests.support import Sandbox
from tests.unit.test_config import problems

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

HELPER = Path(sandbox.__file__).resolve().parent.parent / "libexec" / "ssh-proxy"


@skip_without_sshd
def test_a_playbook_deploys_over_ssh_while_its_controller_tasks_reach_neither_loopback_nor_a_host_outside_the_inventory(
    short_tmp,
    daemon_home,  # noqa: F811 (the fixture imported above)
    ssh_hosts,
    caplog,
):
    srv = Server(short_tmp)  # ssh's control sockets live in the run's folder: a short path
    host, outside = ssh_hosts(["net-1", "net-2"])
    shutil.copyfile(host.key, daemon_home / ".ssh" / "id_ed25519")  # the service's key, in the run's agent only
    shutil.copyfile(f"{host.key}.pub", daemon_home / ".ssh" / "id_ed25519.pub")
    data = yaml.safe_load(inventory_yaml([host]))
    del data["all"]["hosts"]["net-1"]["ansible_ssh_private_key_file"]
    api = listener()  # where the daemon's API or a proxy would listen
    out = srv.out
    ssh = "ssh -F ~/.ssh/config -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    play = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: hostname
    - ansible.builtin.shell: "{sys.executable} -c \\"{CONNECT}\\" {api.getsockname()[1]} > {out}/api 2>&1 || echo refused >> {out}/api"
      delegate_to: localhost
    - ansible.builtin.shell: "{ssh} -p {outside.port} {outside.user}@{outside.address} true > {out}/outside 2>&1 || echo refused >> {out}/outside"
      delegate_to: localhost
"""
    try:
        with caplog.at_level(logging.WARNING, logger="gitopsd.sshgate"):
            outcome = srv.run(play, {"hosts.yml": yaml.safe_dump(data)}, policy=keeps_user(srv))
        assert outcome.ok, outcome.reason + outcome.stdout.read_text()[-3000:]
        assert outcome.hosts == {"net-1": "ok"} and "Accepted publickey" in host.log.read_text(errors="replace")
        reached = (out / "api").read_text()
        assert "connected" not in reached and "refused" in reached, reached
        refusal = (
            f"{outside.address}:{outside.port} is not a host of this deployment's inventory "
            "(sandbox.playbook_network: ssh-only lets a playbook run reach only those, over SSH)"
        )
        assert f"gitopsd: refused: {refusal}" in (out / "outside").read_text(), (out / "outside").read_text()
        assert any(refusal in r.getMessage() for r in caplog.records), caplog.text
        # The escape hatch: with the host's network, the same task reaches the listener (so the test can fail).
        outcome = srv.run(play, {"hosts.yml": yaml.safe_dump(data)}, policy=keeps_user(srv, playbook_network="host"))
        assert outcome.ok, outcome.reason
        assert (out / "api").read_text().startswith("connected")
    finally:
        api.close()
        srv.store.close()


def test_the_forwarder_refuses_a_host_outside_the_inventory_the_daemons_own_address_and_anything_but_ssh(tmp_path):
    api, ssh, web = listener(), listener(), listener()
    api_port, ssh_port, web_port = api.getsockname()[1], ssh.getsockname()[1], web.getsockname()[1]
    allowed = sshgate.targets(
        [
            HostInfo("web-1", {"ansible_host": "127.0.0.1", "ansible_port": str(ssh_port)}),
            HostInfo("api", {"ansible_host": "127.0.0.1", "ansible_port": str(api_port)}),
            HostInfo("web", {"ansible_host": "127.0.0.1", "ansible_port": str(web_port)}),
            HostInfo("here", {"ansible_connection": "local"}),
        ]
    )
    assert allowed == {("127.0.0.1", ssh_port), ("127.0.0.1", api_port), ("127.0.0.1", web_port)}

    def greet(server: socket.socket, first: bytes) -> None:  # a server's first line, then the end
        conn, _ = server.accept()
        conn.sendall(first)
        conn.close()

    threading.Thread(target=greet, args=(ssh, b"SSH-2.0-test\r\n"), daemon=True).start()
    threading.Thread(target=greet, args=(web, b"HTTP/1.0 400 Bad Request\r\n"), daemon=True).start()

    def through(host: str, port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", "-S", str(HELPER), host, str(port), str(gate.path)],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    try:
        with sshgate.Forwarder(tmp_path / sshgate.SOCKET_NAME, lambda: allowed, {("127.0.0.1", api_port)}, "test") as gate:
            relayed = through("127.0.0.1", ssh_port)  # an inventory host: connected, relayed both ways
            assert (relayed.returncode, relayed.stdout) == (0, "SSH-2.0-test\n"), relayed
            refused = through("127.0.0.1", api_port)
            assert (refused.returncode, refused.stderr.strip()) == (
                1,
                f"gitopsd: refused: 127.0.0.1:{api_port} is where gitopsd itself listens",
            )
            refused = through("localhost", 22)
            assert refused.returncode == 1 and "localhost:22 is not a host of this deployment's inventory" in refused.stderr
            refused = through("127.0.0.1", web_port)  # named by the inventory, but no SSH server: no tunnel to it
            assert refused.stderr.strip() == f"gitopsd: refused: 127.0.0.1:{web_port} does not answer as an SSH server"
            assert len(gate.refused) == 3
        assert not (tmp_path / sshgate.SOCKET_NAME).exists()
    finally:
        for server in (api, ssh, web):
            server.close()


def test_playbook_network_is_ssh_only_unless_the_config_says_host_and_anything_else_is_named(tmp_path):
    box = Sandbox(tmp_path, {"qa": ["qa-1"]})
    assert load(box.config).sandbox.playbook_network == "ssh-only"
    box.sandbox_options["playbook_network"] = "host"
    box.write_config()
    assert load(box.config).sandbox.playbook_network == "host"
    box.sandbox_options["playbook_network"] = "none"
    box.write_config()
    line = box.config.read_text().splitlines().index("  playbook_network: none") + 1
    assert problems(box.config) == [
        f"{box.config}:{line}: sandbox.playbook_network: must be ssh-only (playbook runs reach only their inventory's "
        "hosts, over SSH) or host (the deploy server's network), not 'none'"
    ]


def test_doctor_checks_that_a_playbook_runs_ssh_goes_through_its_forwarder_and_names_the_host_escape_hatch(short_tmp, umask_kept):  # noqa: F811
    box = Sandbox(short_tmp, {"qa": ["qa-1"]})
    me = getpass.getuser()
    found = {f.what: f.ok for f in doctor.probe(load(box.config))}
    line = f"{me}'s playbook runs reach SSH hosts only through their forwarder (sandbox.playbook_network: ssh-only)"
    assert found.get(line) is True, found
    box.sandbox_options["playbook_network"] = "host"
    box.write_config()
    found = {f.what: f.ok for f in doctor.probe(load(box.config))}
    assert (
        found.get(
            "playbook runs use this machine's network (sandbox.playbook_network: host): their tasks reach "
            "its loopback services, the API and the dashboard too"
        )
        is True
    ), found


@skip_without_sshd
def test_proxyjump_through_a_jump_host_the_inventory_names_still_reaches_a_host_behind_it(short_tmp, daemon_home, ssh_hosts):  # noqa: F811
    srv = Server(short_tmp)
    jump, target = ssh_hosts(["jump-1", "app-1"])
    shutil.copyfile(jump.key, daemon_home / ".ssh" / "id_ed25519")  # both hosts take the key, from the run's agent
    shutil.copyfile(f"{jump.key}.pub", daemon_home / ".ssh" / "id_ed25519.pub")
    # The jump's own ssh reads only the config files (not the outer ssh's -o options): the service's config trusts it.
    (daemon_home / ".ssh" / "config").write_text(
        f"Host {jump.address}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
    )
    data = yaml.safe_load(inventory_yaml([target]))
    host_vars = data["all"]["hosts"]["app-1"]
    del host_vars["ansible_ssh_private_key_file"]
    host_vars["ansible_ssh_common_args"] += f" -o ProxyJump={jump.user}@{jump.address}:{jump.port}"
    outcome = srv.run(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: hostname\n",
        {"hosts.yml": yaml.safe_dump(data)},
        policy=keeps_user(srv),
    )
    assert outcome.ok, outcome.reason + outcome.stdout.read_text()[-3000:]
    assert "Accepted publickey" in jump.log.read_text(errors="replace")
    assert "Accepted publickey" in target.log.read_text(errors="replace")
    srv.store.close()
