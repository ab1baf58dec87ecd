"""Keys that can be used but not read, and a sandbox that cannot reach the daemon: real bubblewrap, real runs.

What is real: bubblewrap, ansible-runner and ansible-playbook, ssh-agent and ssh-add, the built-in CI's
StepRunner, sshd hosts on loopback (tests/sshhosts.py). The daemon's home is a folder of the test
($HOME), with an SSH key pair, known_hosts and config in its .ssh, as the service user's home has.
Each test plays the attacker with push rights: a playbook task, a CI step or an inventory lookup that
tries to read the service's key or to reach a service on this machine.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import yaml

from gitopsd.adapters import runner, sandbox
from gitopsd.adapters.sandbox import SandboxPolicy
from gitopsd.config import load
from gitopsd.installers import doctor
from tests.integration.test_ci_steps import harness_for, steps  # noqa: F401 (fixtures)
from tests.integration.test_sandbox import Server, server, shell_play  # noqa: F401 (fixtures)
from tests.sshhosts import inventory_yaml, keygen, skip_without_sshd
from tests.support import Sandbox, python_for_everyone, sh
from tests.unit.test_config import problems

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

# Reads everything the run can find of the daemon's .ssh: the usual path, its home's and the real one.
LOOK = (
    'for f in ~/.ssh/* {ssh}/*; do echo "== $f"; cat "$f" || echo "refused $f"; done; '
    'ls -a ~/.ssh; echo "agent: ${{SSH_AUTH_SOCK:-none}}"; ssh-add -L || echo no-agent-keys'
)


@pytest.fixture
def daemon_home(tmp_path, monkeypatch) -> Path:
    """The daemon's $HOME with .ssh: a key pair, known_hosts, config and authorized_keys."""
    home = tmp_path / "daemon-home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    keygen(ssh / "id_ed25519", "gitopsd@deploy")
    (ssh / "known_hosts").write_text("[127.0.0.9]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleHostKey\n")
    (ssh / "config").write_text("Host *\n  ServerAliveInterval 30\n")
    (ssh / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
    monkeypatch.setenv("HOME", str(home))
    return home


def keeps_user(srv: Server, **changes) -> SandboxPolicy:
    """The sandbox as a service has it: the run keeps the daemon's user (who can read its own keys)."""
    return replace(srv.policy(**changes), user="root")


def secret(home: Path) -> str:
    """A line from the middle of the private key: it appears nowhere but in the key file."""
    return (home / ".ssh" / "id_ed25519").read_text().splitlines()[2]


def with_passphrase(key: Path) -> None:
    """Replace the key pair with one that has a passphrase, which ssh-add cannot use without a person."""
    for path in (key, Path(f"{key}.pub")):
        path.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True, capture_output=True)


def agents_of(marker: str) -> list[psutil.Process]:
    return [p for p in runner.processes_of(marker) if "ssh-agent" in " ".join(p.cmdline())]


@pytest.mark.parametrize("keep_user", [True, False], ids=["as-the-daemons-user", "as-sandbox-user"])
def test_a_playbook_task_uses_the_services_key_through_the_agent_but_cannot_read_any_file_of_its_ssh(
    server,  # noqa: F811 (the fixture above)
    daemon_home,
    keep_user,
):
    report = server.out / "seen"
    outcome = server.run(
        shell_play(f"({LOOK.format(ssh=daemon_home / '.ssh')}) > {report} 2>&1"),
        policy=keeps_user(server) if keep_user else server.policy(),
    )
    assert outcome.ok, outcome.reason + outcome.stdout.read_text()[-2000:]
    seen = report.read_text()
    assert secret(daemon_home) not in seen and "PRIVATE KEY" not in seen, seen
    assert (daemon_home / ".ssh" / "id_ed25519.pub").read_text().split()[1] in seen, seen  # the agent holds it
    listed = seen.split("ls -a", 1)[0] if "ls -a" in seen else seen
    assert "ServerAliveInterval" in listed and "127.0.0.9" in listed  # config and known_hosts, read-only
    names = {line.split()[-1] for line in seen.splitlines() if line.startswith("== ")}
    assert {Path(n).name for n in names} <= {"known_hosts", "config", "*"}, names
    assert f"agent: {sandbox.AGENT_SOCKET}" in seen


def run_watching(srv: Server, play: str, cancel_on_agent: bool) -> tuple[runner.RunOutcome, list[psutil.Process], str]:
    """Run a playbook while a thread records the run's ssh-agent (and cancels the run once seen, if asked)."""
    marker = f"test-{uuid.uuid4().hex[:8]}"
    tree = srv.export({"site.yml": play})
    run = runner.PlaybookRun(
        marker=marker,
        workdir=tree,
        playbook=tree / "site.yml",
        inventory=tree / "hosts.yml",
        data_dir=tree.parent / "run-1",
        extravars={"gitopsd_env": "qa"},
        timeout=60,
    )
    cancel, ended = threading.Event(), threading.Event()
    seen: list[psutil.Process] = []

    def watch() -> None:
        while not seen and not ended.is_set():
            seen.extend(agents_of(marker))
            time.sleep(0.05)
        if cancel_on_agent:
            cancel.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = runner.run_playbook(run, cancel, keeps_user(srv))
    finally:
        ended.set()
        watcher.join()
    assert not (run.data_dir / "agent.sock").exists()
    return outcome, seen, marker


def test_the_runs_agent_is_gone_after_the_run_and_after_a_canceled_run(server, daemon_home):  # noqa: F811
    outcome, seen, marker = run_watching(server, shell_play("sleep 2; ssh-add -l"), cancel_on_agent=False)
    assert outcome.ok, outcome.reason
    assert seen, "the run had an ssh-agent"
    assert not any(p.is_running() for p in seen) and agents_of(marker) == []
    outcome, seen, marker = run_watching(server, shell_play("sleep 60"), cancel_on_agent=True)
    assert outcome.status == "canceled", outcome.reason
    assert seen, "the run had an ssh-agent"
    assert not any(p.is_running() for p in seen) and agents_of(marker) == []


def test_the_reaper_finds_a_runs_agent_by_its_marker_after_a_daemon_crash(tmp_path, daemon_home):
    marker = f"test-{uuid.uuid4().hex[:8]}"
    agent, sock = runner.start_agent(tmp_path, marker, None, runner.identity_files())
    try:
        assert [p.pid for p in runner.processes_of(marker)] == [agent.pid]
        assert runner.reap(marker) == 1
        assert agent.wait(timeout=5) is not None
    finally:
        runner.stop_agent(agent, sock)


AS_SERVICE = """\
import sys
from pathlib import Path
import psutil
from gitopsd.adapters import runner
agent, sock = runner.start_agent(Path(sys.argv[1]), sys.argv[2], None, runner.identity_files())
try:
    try:
        psutil.Process(agent.pid).environ()
        print("environment readable")
    except psutil.AccessDenied:
        print("environment hidden")
    print("reaped", runner.reap(sys.argv[2]), "alive", agent.poll() is None)
finally:
    runner.stop_agent(agent, sock)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to run as another user")
def test_the_reaper_finds_a_runs_agent_where_a_service_user_cannot_read_the_agents_environment(short_tmp):
    """ssh-agent makes itself undumpable: its own user cannot read its environment, only its command line."""
    short_tmp.chmod(0o755)
    bin_dir = python_for_everyone(short_tmp / "venv")
    home, run_dir = short_tmp / "home", short_tmp / "run"
    (home / ".ssh").mkdir(parents=True)
    run_dir.mkdir()
    keygen(home / ".ssh" / "id_ed25519", "gitopsd@deploy")
    (short_tmp / "as_service.py").write_text(AS_SERVICE)
    sh(["chown", "-R", "nobody:", str(home), str(run_dir)])
    said = sh(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "env",
            "-i",
            f"HOME={home}",
            "PATH=/usr/bin:/bin",
            str(bin_dir / "python"),
            str(short_tmp / "as_service.py"),
            str(run_dir),
            f"test-{uuid.uuid4().hex[:8]}",
        ],
        cwd="/",
    ).stdout
    assert said.splitlines() == ["environment hidden", "reaped 1 alive False"], said


def test_a_key_with_a_passphrase_fails_the_deployment_in_one_line_saying_what_to_do(server, daemon_home):  # noqa: F811
    key = daemon_home / ".ssh" / "id_ed25519"
    with_passphrase(key)
    outcome = server.run(shell_play("true"), policy=keeps_user(server))
    assert not outcome.ok and outcome.permanent
    assert f"the service's SSH key {key} cannot be given to the run's ssh-agent" in outcome.reason
    assert "no passphrase" in outcome.reason and "\n" not in outcome.reason and "Traceback" not in outcome.reason


@pytest.fixture
def umask_kept() -> Iterator[None]:
    """doctor's probe sets the unit's umask for its process: this one's later tests must not inherit it."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


def test_doctor_says_whether_the_runs_agent_takes_the_services_key(short_tmp, daemon_home, umask_kept):
    config = load(Sandbox(short_tmp, {"qa": ["qa-1"]}).config)
    key = daemon_home / ".ssh" / "id_ed25519"
    me = getpass.getuser()
    assert f"{me}'s ssh-agent takes the SSH key {key} for playbook runs" in [f.what for f in doctor.probe(config) if f.ok]
    with_passphrase(key)
    refused = [f.what for f in doctor.probe(config) if not f.ok]
    assert any(f"the service's SSH key {key} cannot be given to the run's ssh-agent" in what for what in refused), refused


@skip_without_sshd
def test_a_deployment_over_ssh_works_with_the_key_only_in_the_agent(short_tmp, daemon_home, ssh_hosts):
    srv = Server(short_tmp)  # ssh's control sockets live in the run's folder: a short path
    (host,) = ssh_hosts(["keys-1"])
    shutil.copyfile(host.key, daemon_home / ".ssh" / "id_ed25519")  # the service's key, and no other way in
    shutil.copyfile(f"{host.key}.pub", daemon_home / ".ssh" / "id_ed25519.pub")
    data = yaml.safe_load(inventory_yaml([host]))
    del data["all"]["hosts"]["keys-1"]["ansible_ssh_private_key_file"]
    inventory = yaml.safe_dump(data)
    report = srv.out / "over-ssh"
    play = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: "cat {daemon_home / ".ssh" / "id_ed25519"}"
      register: key
      failed_when: false
    - ansible.builtin.copy:
        dest: "{report}"
        content: "{{{{ inventory_hostname }}}} rc={{{{ key.rc }}}}"
"""
    outcome = srv.run(play, {"hosts.yml": inventory}, policy=keeps_user(srv))
    assert outcome.ok, outcome.reason + outcome.stdout.read_text()[-3000:]
    assert outcome.hosts == {"keys-1": "ok"}
    assert "Accepted publickey" in host.log.read_text(errors="replace")
    # The task ran on the host (this machine, as the tester): there the file is readable, so rc=0 shows it ran.
    assert report.read_text() == "keys-1 rc=0"
    srv.store.close()


@skip_without_sshd
def test_a_role_from_a_private_git_repository_over_ssh_installs_with_the_key_only_in_the_agent(short_tmp, daemon_home, ssh_hosts):
    srv = Server(short_tmp)  # the default sandbox: as root, runs and their agent are `nobody`
    (host,) = ssh_hosts(["git-1"])
    shutil.copyfile(host.key, daemon_home / ".ssh" / "id_ed25519")  # the service's key, and no other way in
    shutil.copyfile(f"{host.key}.pub", daemon_home / ".ssh" / "id_ed25519.pub")
    host_key = Path(f"{host.host_key}.pub").read_text().split()
    (daemon_home / ".ssh" / "known_hosts").write_text(f"[{host.address}]:{host.port} {host_key[0]} {host_key[1]}\n")
    role = short_tmp / "private_role"
    (role / "tasks").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "tasks" / "main.yml").write_text("- ansible.builtin.debug: {msg: from the private role}\n")
    (role / "meta" / "main.yml").write_text(
        "galaxy_info: {author: x, description: x, license: MIT, min_ansible_version: '2.9'}\n"
    )
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "role"]):
        subprocess.run(["git", *args], cwd=role, check=True, capture_output=True)
    bare = short_tmp / "private_role.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(role), str(bare)], check=True, capture_output=True)
    requirements = f"- src: ssh://{host.user}@{host.address}:{host.port}{bare}\n  scm: git\n  name: private_role\n"
    play = "- hosts: all\n  gather_facts: false\n  roles: [private_role]\n"
    outcome = srv.run(play, {"requirements.yml": requirements})
    logs = "".join(p.read_text() for p in outcome.stdout.parents[2].glob("galaxy-*.log")) if outcome.stdout else ""
    assert outcome.ok, outcome.reason + logs
    assert "from the private role" in outcome.stdout.read_text()
    assert "Accepted publickey" in host.log.read_text(errors="replace")
    srv.store.close()


def test_a_ci_step_can_read_no_file_of_the_services_ssh_and_has_no_agent(harness_for, daemon_home):  # noqa: F811
    ssh = daemon_home / ".ssh"
    h = harness_for(steps({"name": "look", "run": ["sh", "-c", LOOK.format(ssh=ssh) + f"; cat {ssh}/id_ed25519"]}))
    h.config = replace(h.config, sandbox=replace(h.config.sandbox, user="root"))  # keeps the daemon's user
    h.runner = h.new_runner()
    event = h.push("look")
    h.runner.sink(h.config.repository("shop"), event)
    done = h.wait_done(event, 1)
    assert done["gitopsd/look"][0] == "failure", done  # the last cat is refused
    log = next((h.config.ci_dir).rglob("*look*")).read_text()
    assert secret(daemon_home) not in log and "PRIVATE KEY" not in log, log
    assert "agent: none" in log and "no-agent-keys" in log


def listener() -> socket.socket:
    """A TCP service on loopback, as the daemon's API is."""
    server_socket = socket.socket()
    server_socket.bind(("127.0.0.1", 0))
    server_socket.listen()
    return server_socket


CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('connected')"


def test_a_ci_step_cannot_connect_to_the_daemons_api_port_unless_sandbox_network_allows_it(harness_for):  # noqa: F811
    api = listener()
    try:
        port = str(api.getsockname()[1])
        h = harness_for(steps({"name": "call", "run": [sys.executable, "-c", CONNECT, port]}))
        event = h.push("call the api")
        h.runner.sink(h.config.repository("shop"), event)
        assert h.wait_done(event, 1)["gitopsd/call"][0] == "failure"
        log = next(h.config.ci_dir.rglob("*call*")).read_text()
        assert "\nconnected" not in log and ("Connection refused" in log or "unreachable" in log), log
        # sandbox.network: true lets CI steps out again: the test can fail.
        h.config = replace(h.config, sandbox=replace(h.config.sandbox, network=True))
        h.runner.stop()
        h.runner = h.new_runner()
        h.sandbox.write("app.txt", "v2\n")  # another tree: CI runs once per tree
        again = h.push("call the api again")
        h.runner.sink(h.config.repository("shop"), again)
        assert h.wait_done(again, 1)["gitopsd/call"][0] == "success"
    finally:
        api.close()


def test_an_inventory_lookup_cannot_open_a_tcp_connection(server):  # noqa: F811
    api = listener()
    try:
        port = api.getsockname()[1]
        tree = server.export({"connect.py": CONNECT + "\n"})
        (tree / "group_vars").mkdir()
        (tree / "group_vars" / "all.yml").write_text(
            f"reached: \"{{{{ lookup('pipe', '{sys.executable} {tree}/connect.py {port} 2>&1 || echo refused') }}}}\"\n"
        )
        hosts = runner.read_hosts(
            tree / "hosts.yml",
            ("reached",),
            workdir=tree,
            data_dir=tree.parent / "inv",
            marker=f"test-{uuid.uuid4().hex[:8]}",
            timeout=30,
            cancel=threading.Event(),
            policy=server.policy(),
        )
        reached = hosts[0].vars["reached"]
        assert not reached.startswith("connected") and ("Connection refused" in reached or "unreachable" in reached), reached
    finally:
        api.close()


def test_sandbox_network_is_off_unless_the_config_says_true_and_anything_else_is_named(tmp_path):
    box = Sandbox(tmp_path, {"qa": ["qa-1"]})
    assert load(box.config).sandbox.network is False
    box.sandbox_options["network"] = True
    box.write_config()
    assert load(box.config).sandbox.network is True
    box.sandbox_options["network"] = "yes please"
    box.write_config()
    line = box.config.read_text().splitlines().index("  network: yes please") + 1
    assert problems(box.config) == [
        f"{box.config}:{line}: sandbox.network: must be true or false (whether CI steps may reach the network), not 'yes please'"
    ]


def test_a_run_s_agent_that_refuses_the_first_connection_still_gets_the_key(tmp_path, daemon_home, monkeypatch):
    """ssh-agent binds its socket a moment before it listens: an ssh-add in that gap is refused, and tried again."""
    wrapper = tmp_path / "bin" / "ssh-add"
    wrapper.parent.mkdir()
    tried = tmp_path / "tried"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e {tried} ]; then touch {tried}; echo "Error connecting to agent: Connection refused" >&2; exit 2; fi\n'
        f'exec {shutil.which("ssh-add")} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    marker = f"test-{uuid.uuid4().hex[:8]}"
    agent, sock = runner.start_agent(tmp_path, marker, None, runner.identity_files())
    try:
        assert tried.exists()
        listed = subprocess.run(
            ["ssh-add", "-l"],
            cwd=tmp_path,
            env={**os.environ, "SSH_AUTH_SOCK": sock.name},
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0 and "ED25519" in listed.stdout.upper(), listed
    finally:
        runner.stop_agent(agent, sock)
