"""What a playbook run can do to the daemon and to later environments' hosts: through its SSH forwarder
(sandbox.playbook_network: ssh-only), its files and its output.

Real: the forwarder's Unix socket served by the daemon's code (adapters/sshgate.py), connections opened as a run's
tasks can, SSH servers on loopback that greet as one does, and playbook runs in bubblewrap.
"""

from __future__ import annotations

import logging
import re
import resource
import shutil
import signal
import socket
import threading
import time

import pytest

from gitopsd.adapters import runner, sandbox, sshgate
from gitopsd.core.types import HostInfo
from tests.integration.test_red_team_inventories import SSH_PLAY, qa_run_reaching, set_inventories
from tests.integration.test_sandbox import Server, shell_play
from tests.integration.test_sandbox_keys import listener
from tests.support import Sandbox

# The tests that run a playbook need bubblewrap; the others talk to the forwarder alone.
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_a_run_that_opens_thousands_of_forwarder_connections_gets_a_bounded_number_and_one_line_saying_why(tmp_path, caplog):
    ssh = listener()
    port = ssh.getsockname()[1]
    allowed = sshgate.targets([HostInfo("web-1", {"ansible_host": "127.0.0.1", "ansible_port": str(port)})])
    held: list[socket.socket] = []
    threads = threading.active_count()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="gitopsd.sshgate"),
            sshgate.Forwarder(tmp_path / sshgate.SOCKET_NAME, lambda: allowed, set(), "flood") as gate,
        ):
            for _ in range(sshgate.MAX_OPEN):  # idle connections, each a thread and a descriptor in the daemon
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(gate.path))
                held.append(conn)
            answers = []
            for _ in range(300):
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(gate.path))  # blocking, as ssh-proxy's: it waits while the backlog is full
                conn.settimeout(30)
                answers.append(conn.recv(200).decode())
                conn.close()
            assert set(answers) == {
                f"refused: {sshgate.MAX_OPEN} SSH connections of this run are open already, the most one run may have\n"
            }
            assert threading.active_count() - threads <= sshgate.MAX_OPEN + 1  # the accepting thread
            for conn in held:  # the run lets go: it is served again
                conn.close()
            held.clear()

            def greet() -> None:  # the inventory's SSH server
                server, _ = ssh.accept()
                server.sendall(b"SSH-2.0-test\r\n")
                server.close()

            threading.Thread(target=greet, daemon=True).start()

            def served() -> str:  # once the forwarder has seen those connections end
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(gate.path))
                conn.settimeout(30)
                conn.sendall(f"127.0.0.1 {port}\n".encode())
                answer = conn.recv(200).decode()
                conn.close()
                return "" if answer.startswith("refused: ") else answer

            deadline = time.monotonic() + 60
            while not (answer := served()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert answer == "ok\nSSH-2.0-test\r\n"
        said = [r.getMessage() for r in caplog.records if r.name == "gitopsd.sshgate"]
        assert said[0] == (
            f"playbook run flood: refused an SSH connection: {sshgate.MAX_OPEN} SSH connections of this run are open "
            "already, the most one run may have"
        )
        assert len(said) == 2 and re.fullmatch(r"playbook run flood: refused \d+ more SSH connections, as said above", said[1])
    finally:
        for conn in held:
            conn.close()
        ssh.close()


def test_a_run_that_asks_the_forwarder_for_refused_hosts_in_a_loop_logs_a_bounded_number_of_lines(tmp_path, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="gitopsd.sshgate"),
        sshgate.Forwarder(tmp_path / sshgate.SOCKET_NAME, set, set(), "loop") as gate,
    ):
        for n in range(200):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(gate.path))
            conn.settimeout(30)
            conn.sendall(b"not a request\n" if n % 2 else f"host-{n}.invalid 22\n".encode())
            assert conn.recv(200).startswith(b"refused: ")
            conn.close()
    said = [r.getMessage() for r in caplog.records if r.name == "gitopsd.sshgate"]
    assert len(said) == sshgate.SAID_AT_MOST + 1 and len(gate.refused) == sshgate.SAID_AT_MOST, said
    assert said[-1] == f"playbook run loop: refused {200 - sshgate.SAID_AT_MOST} more SSH connections, as said above"


@needs_bwrap
def test_a_run_under_a_long_state_dir_reaches_its_ssh_hosts_through_the_forwarder(tmp_path, caplog):
    web = listener()  # named by the inventory; it greets as a web server, so the forwarder refuses it
    port = web.getsockname()[1]

    def greet() -> None:
        conn, _ = web.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n")
        conn.close()

    threading.Thread(target=greet, daemon=True).start()
    server = Server(tmp_path / ("a-long-state-folder-" * 3))  # ssh's control sockets would not fit in its runs' folders
    assert len(str(server.state / "deployments" / "1" / "run-1" / "cp" / ("0" * 40))) > 107
    inventory = f"all:\n  hosts:\n    web-1: {{ansible_host: 127.0.0.1, ansible_port: {port}}}\n"
    try:
        with caplog.at_level(logging.WARNING, logger="gitopsd.sshgate"):
            outcome = server.run(SSH_PLAY, {"hosts.yml": inventory})
        assert not outcome.ok and "ControlPath too long" not in outcome.reason, outcome.reason
        said = [r.getMessage() for r in caplog.records if r.name == "gitopsd.sshgate"]
        assert any(f"127.0.0.1:{port} does not answer as an SSH server" in s for s in said), (said, outcome.reason)
    finally:
        web.close()
        server.store.close()


@needs_bwrap
def test_a_run_that_writes_a_file_without_end_into_its_folder_stops_at_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "RUN_FILE_SIZE", 8 << 20)
    server = Server(tmp_path)
    try:  # its TMPDIR is in its run's folder, in the state folder, on the disk the daemon's records need
        outcome = server.run(shell_play('head -c 64M /dev/zero > "$TMPDIR/fill"; echo $? > ' + str(server.out / "rc")))
    finally:
        server.store.close()
    assert outcome.ok, outcome.reason  # the shell goes on: only the writing process ends
    assert (server.out / "rc").read_text().strip() == str(128 + signal.SIGXFSZ)
    fill = server.state / "deployments" / "1" / "run-1" / "tmp" / "fill"
    assert fill.stat().st_size == 8 << 20


def test_a_qa_inventory_host_cannot_be_the_jump_host_to_a_host_of_productions_inventory(tmp_path, caplog):
    jump = listener()  # qa's own SSH host, which a qa run reaches; behind it, production's database
    port = jump.getsockname()[1]

    def greet() -> None:
        while True:
            try:
                conn, _ = jump.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-test\r\n")
            conn.close()

    threading.Thread(target=greet, daemon=True).start()
    qa_web = HostInfo("qa-web", {"ansible_host": "127.0.0.1", "ansible_port": str(port)})
    production = {("127.0.0.9", 2222): "production"}

    def asked(*hosts: HostInfo) -> str:
        with sshgate.Forwarder(
            tmp_path / sshgate.SOCKET_NAME,
            lambda: sshgate.targets(list(hosts)),
            set(),
            "qa",
            guarded=lambda: production,
            through=lambda: sshgate.hops(list(hosts)),
        ) as gate:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(gate.path))  # as `ssh -J`'s own ssh to the jump host asks
            conn.settimeout(30)
            conn.sendall(f"127.0.0.1 {port}\n".encode())
            answer = conn.recv(500).decode()
            conn.close()
            return answer

    assert asked(qa_web) == "ok\nSSH-2.0-test\r\n"  # qa's host, for itself
    refused = (
        f"refused: 127.0.0.1:{port} is the jump host to 127.0.0.9:2222, which is a host of production's inventory, "
        "which production's own tree does not share with this environment"
    )
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args"):
        behind = HostInfo(
            "db-copy", {"ansible_host": "127.0.0.9", "ansible_port": "2222", key: f"-C -o ProxyJump=qa@127.0.0.1:{port}"}
        )
        assert asked(qa_web, behind).startswith(refused), key
    # A jump to one of qa's own hosts is as before.
    behind = HostInfo("app", {"ansible_host": "127.0.0.8", "ansible_ssh_common_args": f"-J 127.0.0.1:{port}"})
    assert asked(qa_web, behind) == "ok\nSSH-2.0-test\r\n"
    jump.close()


@needs_bwrap
def test_a_qa_run_whose_host_jumps_through_a_qa_host_to_productions_database_is_refused_the_jump(short_tmp, caplog):
    box = Sandbox(short_tmp, {"qa": ["qa-1"], "production": ["production-1"]})
    server = Server(short_tmp / "server")
    set_inventories(box, {"production": "    db-1: {ansible_host: 127.0.0.9, ansible_port: 2222}\n"})
    jumping = "db-copy: {ansible_host: 127.0.0.9, ansible_port: 2222, ansible_ssh_common_args: '-J 127.0.0.2'}"
    try:
        refused = qa_run_reaching(box, server, jumping, caplog)
    finally:
        server.store.close()
    assert any(
        "127.0.0.2:22 is the jump host to 127.0.0.9:2222, which is a host of production's inventory" in r for r in refused
    ), refused


LOUD_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ 'x' * 200000 }}"
      loop: "{{ range(1000) | list }}"
"""


@needs_bwrap
def test_a_run_that_prints_without_end_is_stopped_at_its_bound_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RUN_OUTPUT_MAX", 2 << 20)
    server = Server(tmp_path)
    try:  # 200 MB of messages; the daemon keeps a run's output in the state folder
        outcome = server.run(LOUD_PLAY)
    finally:
        server.store.close()
    assert not outcome.ok and outcome.permanent
    assert outcome.reason == "the playbook printed more than 2 MiB and was stopped: make it print less"
    # Stopped as a cancel stops a run, once the events are read: some MB more are printed by then (15-29 MB here), far
    # from the 200 MB of the whole run.
    assert outcome.stdout is not None and outcome.stdout.stat().st_size < 150 << 20
    assert b"(item=999)" not in outcome.stdout.read_bytes()


def test_a_run_over_more_ssh_hosts_than_the_bound_keeps_a_connection_open_to_each_of_them(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # four descriptors a host, here
    ssh = socket.socket()
    ssh.bind(("127.0.0.1", 0))
    port = ssh.getsockname()[1]
    ssh.close()
    ssh = socket.socket()
    ssh.bind(("0.0.0.0", port))  # noqa: S104 (every 127.0.x.y of loopback: hundreds of hosts on one port)
    ssh.listen(512)
    hosts = [
        HostInfo(f"web-{n}", {"ansible_host": f"127.0.{1 + n // 250}.{1 + n % 250}", "ansible_port": str(port)})
        for n in range(sshgate.MAX_OPEN + 44)
    ]
    accepted: list[socket.socket] = []

    def greet() -> None:  # every host's sshd, greeting and keeping the connection, as a ControlMaster's stays
        while True:
            try:
                conn, _ = ssh.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-test\r\n")
            accepted.append(conn)

    threading.Thread(target=greet, daemon=True).start()
    masters: list[socket.socket] = []
    try:
        with sshgate.Forwarder(tmp_path / sshgate.SOCKET_NAME, lambda: sshgate.targets(hosts), set(), "many") as gate:
            for host in hosts:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(str(gate.path))
                conn.settimeout(30)
                conn.sendall(f"{host.vars['ansible_host']} {port}\n".encode())
                assert conn.recv(200) == b"ok\nSSH-2.0-test\r\n", host.name
                masters.append(conn)
    finally:
        for conn in masters + accepted:
            conn.close()
        ssh.close()
