"""The sample playbook deployed over real SSH by gitopsd's runner, to 4 sshd hosts on loopback.

Each host is an sshd on 127.0.0.1x (tests/sshhosts.py); its app_root is a folder of this test and
its app listens on a free 127.0.0.1 port, which the playbook's health check reaches from the
"remote" host because every host is this machine.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from gitopsd.adapters.runner import PlaybookRun, RunOutcome, processes_of, run_playbook
from tests.sshhosts import (
    SshHost,
    interpreter,
    inventory_yaml,
    skip_without_sshd,
    ssh_clients,
    sshd_processes,
    start_hosts,
    stop_all,
)
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "deploy.yml"
NAMES = ["ssh-1", "ssh-2", "ssh-3", "ssh-4"]

pytestmark = [pytest.mark.slow, skip_without_sshd]


@dataclass
class Site:
    tmp: Path
    hosts: list[SshHost]
    app_roots: dict[str, Path]
    app_ports: dict[str, int]
    workdir: Path
    inventory: Path
    last_commit: str = ""
    runs: list[str] = field(default_factory=list)

    def host(self, name: str) -> SshHost:
        return next(h for h in self.hosts if h.name == name)

    def deploy(self, commit: str, limit: str | None = None) -> RunOutcome:
        marker = f"gitopsd-ssh-test-{uuid.uuid4().hex}"
        deploy_id = f"ssh-{len(self.runs) + 1}"
        self.runs.append(deploy_id)
        run = PlaybookRun(
            marker=marker,
            workdir=self.workdir,
            playbook=PLAYBOOK,
            inventory=self.inventory,
            data_dir=self.tmp / f"runner-{deploy_id}",
            timeout=90,
            limit=limit,
            extravars={
                "gitopsd_env": "production",
                "gitopsd_repo": str(self.tmp / "repo.git"),
                "gitopsd_commit": commit,
                "gitopsd_tree": secrets.token_hex(20),
                "gitopsd_previous_commit": self.last_commit,
                "gitopsd_deploy_id": deploy_id,
                "gitopsd_kind": "deploy",
                "gitopsd_workdir": str(self.workdir),
            },
        )
        outcome = run_playbook(run, threading.Event())
        assert processes_of(marker) == [], "the runner left processes of the run behind"
        self.last_commit = commit
        return outcome

    def health(self, name: str) -> dict | None:
        """The app's /health on that host, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.app_ports[name]}/health", timeout=2) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def logins(self, name: str) -> int:
        """Successful SSH logins so far on that host, from its sshd log."""
        return self.host(name).log.read_text(errors="replace").count("Accepted publickey")


def describe(outcome: RunOutcome) -> str:
    tail = outcome.stdout.read_text(errors="replace")[-3000:] if outcome.stdout else "(no stdout)"
    return f"{outcome.status} rc={outcome.rc} {outcome.reason} {outcome.hosts}\n{tail}"


def app_processes(root: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(a.endswith("app.py") for a in cmdline) and any(a.startswith(str(root)) for a in cmdline):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ssh")
    workdir = tmp / "work"
    shutil.copytree(ROOT / "app", workdir / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    apps = tmp / "apps"
    app_roots = {name: apps / name for name in NAMES}
    for path in app_roots.values():
        path.mkdir(parents=True)
    app_ports: dict[str, int] = {}
    while len(app_ports) < len(NAMES):
        port = free_port("127.0.0.1")
        if port not in app_ports.values():
            app_ports[NAMES[len(app_ports)]] = port
    hosts = start_hosts(tmp, NAMES)
    try:
        inventory = tmp / "hosts.yml"
        inventory.write_text(
            inventory_yaml(
                hosts,
                {n: {"app_root": str(app_roots[n]), "app_port": app_ports[n]} for n in NAMES},
                # Pipelining runs each module through the ssh session's stdin: half the round trips of
                # the default (temp folder, sftp put, run, remove). The copy task still transfers files.
                {"app_python": interpreter(), "keep_releases": 3, "ansible_pipelining": True},
            )
        )
        yield Site(tmp, hosts, app_roots, app_ports, workdir, inventory)
    finally:
        stop_all(hosts)
        left = sshd_processes(hosts)
        shutil.rmtree(apps, ignore_errors=True)  # each app exits within ~1 s of its folder going
        deadline = time.monotonic() + 10
        while app_processes(apps) and time.monotonic() < deadline:
            time.sleep(0.1)
        while ssh_clients(hosts) and time.monotonic() < deadline:  # ControlPersist masters see EOF
            time.sleep(0.1)
        assert left == [], f"sshd processes left: {left}"
        assert ssh_clients(hosts) == [], "ssh clients still connected to stopped hosts"
        assert not any(h.running for h in hosts)
        assert app_processes(apps) == [], "apps still running after their folders were deleted"


def test_deploys_to_every_host_over_ssh(site):
    commit = secrets.token_hex(20)
    outcome = site.deploy(commit)
    assert outcome.ok, describe(outcome)
    assert outcome.hosts == {name: "ok" for name in NAMES}
    for name in NAMES:
        assert site.logins(name) >= 2, f"{name} was not reached over SSH"  # the readiness check, then Ansible
        health = site.health(name)
        assert health is not None and health["commit"] == commit and health["host"] == name, (name, health)
        assert (site.app_roots[name] / "current" / "REVISION.json").exists()


def test_a_host_whose_sshd_is_down_is_unreachable_and_the_others_deploy(site):
    down = site.hosts[1]
    before = site.health(down.name)
    down.stop()
    try:
        assert not down.running and sshd_processes([down]) == []
        with pytest.raises(OSError):
            socket.create_connection((down.address, down.port), timeout=1).close()
        commit = secrets.token_hex(20)
        outcome = site.deploy(commit)
        assert not outcome.ok, describe(outcome)
        assert outcome.hosts == {name: ("unreachable" if name == down.name else "ok") for name in NAMES}, describe(outcome)
        assert f"{down.name} (unreachable)" in outcome.reason
        for name in NAMES:
            health = site.health(name)
            if name == down.name:
                assert health == before  # its app, if any, was left as it was
            else:
                assert health is not None and health["commit"] == commit, (name, health)
    finally:
        down.start()
    assert down.running


def test_a_limited_batch_of_one_host_touches_only_that_host(site):
    target = site.hosts[1].name
    others = [n for n in NAMES if n != target]
    health_before = {n: site.health(n) for n in others}
    logins_before = {n: site.logins(n) for n in NAMES}
    commit = secrets.token_hex(20)
    outcome = site.deploy(commit, limit=target)
    assert outcome.ok, describe(outcome)
    assert outcome.hosts == {target: "ok"}
    health = site.health(target)
    assert health is not None and health["commit"] == commit and health["host"] == target
    assert site.logins(target) > logins_before[target]
    for name in others:
        assert site.logins(name) == logins_before[name], f"{name} was logged in to"
        assert site.health(name) == health_before[name]


def test_stopping_a_host_ends_its_open_sessions_and_start_brings_it_back(ssh_hosts):
    (host,) = ssh_hosts(["lone"], first_octet=21)
    session = subprocess.Popen(
        host.ssh_argv("sleep 60"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while len(sshd_processes([host])) < 2 and time.monotonic() < deadline:  # listener + session
            time.sleep(0.05)
        assert len(sshd_processes([host])) >= 2
        host.stop()
        assert session.wait(timeout=5) == 255  # the connection was cut
        assert host.pid is None and sshd_processes([host]) == []
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    port = host.port
    host.start()
    assert host.running and host.port == port
    assert subprocess.run(host.ssh_argv("true"), stdin=subprocess.DEVNULL, capture_output=True).returncode == 0
