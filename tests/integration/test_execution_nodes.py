"""Execution nodes for real: loopback sshd hosts (tests/sshhosts.py) act as nodes, each running the test venv's
`ansible-runner worker` (its PATH set by sshd's SetEnv), fed by `ansible-runner transmit` and read back by
`ansible-runner process` here. Nothing is faked but the wrong ansible-runner version (a script first on a
node's PATH) and the node going down (its sshd and sessions killed).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from gitopsd.adapters import remote
from gitopsd.adapters.runner import run_playbook
from gitopsd.core.settings import ExecutionNode
from gitopsd.core.types import PlaybookRun
from gitopsd.services.nodes import Placement
from tests.sshhosts import SshHost, skip_without_sshd, ssh_clients
from tests.support import GITOPSD, Daemon, Sandbox, inventory, run

pytestmark = [pytest.mark.slow, skip_without_sshd]

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
FIRST_OCTET = 61  # away from the targets of other SSH tests
PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: say where
      ansible.builtin.debug:
        msg: "{{ gitopsd_env }} from {{ (lookup('ansible.builtin.env', 'SSH_CONNECTION') or 'here').split()[2:3] }}"
    - name: sleep when asked to
      ansible.builtin.command: sleep {{ sleep | default(0) }}
"""


def node_environment(host: SshHost, path: str, **variables: str) -> None:
    """Give the node's sessions a PATH (and more variables) through sshd's SetEnv, then restart it."""
    extra = " ".join(f"{k}={v}" for k, v in {"PATH": path, **variables}.items())
    host.config.write_text(host.config.read_text().replace("SetEnv SHLVL=1", f"SetEnv SHLVL=1 {extra}"))
    host.stop()
    host.start()


def trust(known_hosts: Path, *hosts: SshHost) -> None:
    known_hosts.write_text(
        "".join(f"[{h.address}]:{h.port} {' '.join(Path(f'{h.host_key}.pub').read_text().split()[:2])}\n" for h in hosts)
    )


@pytest.fixture
def nodes(ssh_hosts, tmp_path):
    """`nodes(n)`: n loopback nodes with ansible-runner on their PATH and trusted host keys; (hosts, ExecutionNodes, known_hosts).

    Their sessions carry GITOPSD_NODE_TEST=<this test's folder>, which tells their processes from those of other
    runs on this machine (other tests, `make bench`).
    """

    def start(count: int, **variables: str):
        hosts = ssh_hosts([f"node-{i + 1}" for i in range(count)], first_octet=FIRST_OCTET)
        for host in hosts:
            node_environment(host, f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", GITOPSD_NODE_TEST=str(tmp_path), **variables)
        known_hosts = tmp_path / "known_hosts"
        trust(known_hosts, *hosts)
        defined = tuple(ExecutionNode(f"runner{i + 1}", h.user, h.address, h.port, h.key) for i, h in enumerate(hosts))
        return hosts, defined, known_hosts

    yield start
    assert node_processes(test=str(tmp_path)) == [], "a process of a run survived on a node"


def node_processes(marker: str | None = None, test: str | None = None) -> list[psutil.Process]:
    """Processes started by a node's worker (found by their GITOPSD_NODE_RUN marker), on this machine as on a node;
    with `test`, only those of that test's nodes."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            environ = proc.environ()
        except (psutil.Error, OSError):
            continue
        value = environ.get(remote.NODE_MARKER)
        if (
            value is not None
            and (marker is None or value == marker)
            and (test is None or environ.get("GITOPSD_NODE_TEST") == test)
        ):
            found.append(proc)
    return found


def sleeping(procs: list[psutil.Process]) -> list[str]:
    """The markers of those processes that are the playbook's `sleep` (gone ones skipped)."""
    found = []
    for proc in procs:
        try:
            if "sleep" in " ".join(proc.cmdline()):
                found.append(proc.environ()[remote.NODE_MARKER])
        except (psutil.Error, OSError):
            continue
    return found


def make_run(tmp: Path, *, timeout: int = 60, sleep: int = 0, name: str = "run") -> PlaybookRun:
    work = tmp / f"tree-{name}"
    (work / "playbooks").mkdir(parents=True, exist_ok=True)
    (work / "playbooks" / "deploy.yml").write_text(PLAY.replace("default(0)", f"default({sleep})"))
    (work / "hosts.yml").write_text(inventory("web-1", "web-2"))
    return PlaybookRun(
        marker=f"nodetest-{time.monotonic_ns()}",
        workdir=work,
        playbook=work / "playbooks" / "deploy.yml",
        inventory=work / "hosts.yml",
        data_dir=tmp / f"{name}-{time.monotonic_ns()}",
        extravars={"gitopsd_env": "qa", "gitopsd_repo": "shop", "gitopsd_deploy_id": "7", "gitopsd_workdir": str(work)},
        timeout=timeout,
    )


def never_local():
    raise AssertionError("the run was placed on the controller")


def task_lines(text: str) -> list[str]:
    """What a run's output says, without the node's address."""
    return [line.split(" from ")[0] for line in text.splitlines() if line.strip()]


def test_a_run_on_a_node_gives_the_same_host_results_and_output_as_a_local_run(tmp_path, nodes):
    hosts, defined, known_hosts = nodes(1)
    placement = Placement(defined, known_hosts)
    here = run_playbook(make_run(tmp_path, name="local"), threading.Event())
    there = placement.run(node_run := make_run(tmp_path, name="node"), threading.Event(), "runner1", None, never_local)
    assert there.ok and there.status == "successful" and there.rc == 0
    assert (there.node, here.node) == ("runner1", "")  # the deployment's record says where it ran
    assert (there.hosts, there.reason) == (here.hosts, here.reason) == ({"web-1": "ok", "web-2": "ok"}, "succeeded on 2 hosts")
    assert [c.key for c in there.changes] == [c.key for c in here.changes]  # task paths relative to the tree, as here
    assert here.stdout is not None and there.stdout is not None
    assert sorted(task_lines(there.stdout.read_text())) == sorted(task_lines(here.stdout.read_text()))  # hosts interleave
    assert f"from ['{hosts[0].address}']" in there.stdout.read_text()  # it ran over there
    assert not list((Path.home() / ".gitopsd" / "runs").glob(f"{node_run.marker}-*"))  # its folder there is gone


def test_any_skips_a_node_that_is_down_with_a_log_line_and_places_on_another(tmp_path, nodes, caplog):
    hosts, defined, known_hosts = nodes(2)
    hosts[0].stop()
    placement = Placement(defined, known_hosts)
    with caplog.at_level(logging.WARNING, logger="gitopsd.nodes"):
        outcome = placement.run(make_run(tmp_path), threading.Event(), "any", None, never_local)
    assert outcome.ok, outcome.reason
    assert f"from ['{hosts[1].address}']" in outcome.stdout.read_text()
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("unreachable node runner1 (") and m.endswith("skipped, placing the run elsewhere") for m in said), (
        said
    )
    # runner1 is remembered as down: the next run goes straight to runner2, without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gitopsd.nodes"):
        assert placement.run(make_run(tmp_path), threading.Event(), "any", None, never_local).ok
    assert caplog.records == []


def test_any_fails_as_unreachable_node_when_every_node_is_down(tmp_path, nodes):
    hosts, defined, known_hosts = nodes(2)
    for host in hosts:
        host.stop()
    outcome = Placement(defined, known_hosts).run(make_run(tmp_path), threading.Event(), "any", None, never_local)
    assert not outcome.ok and not outcome.permanent
    assert outcome.reason.startswith("unreachable node: no execution node could take the run (unreachable node runner1")
    assert "unreachable node runner2" in outcome.reason


def test_a_node_that_dies_mid_run_fails_it_as_unreachable_node_and_any_retries_elsewhere(tmp_path, nodes):
    hosts, defined, known_hosts = nodes(2)
    placement = Placement(defined, known_hosts)
    result = {}
    run = make_run(tmp_path, sleep=30)
    thread = threading.Thread(
        target=lambda: result.update(outcome=placement.run(run, threading.Event(), "any", None, never_local))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not sleeping(node_processes(run.marker)):
        assert time.monotonic() < deadline and thread.is_alive(), "the run never started on the node"
        time.sleep(0.1)
    hosts[0].stop()  # runner1 (least busy, first by name) goes away with its sessions
    thread.join(60)
    outcome = result["outcome"]
    assert not outcome.ok and not outcome.permanent
    assert outcome.reason.startswith("unreachable node runner1: the run's result never came back"), outcome.reason
    retry = placement.run(make_run(tmp_path), threading.Event(), "any", None, never_local)  # the reconciler's retry
    assert retry.ok and f"from ['{hosts[1].address}']" in retry.stdout.read_text()


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_kill_the_remote_worker_and_leave_no_process_on_the_node(tmp_path, nodes, how):
    hosts, defined, known_hosts = nodes(1)
    placement = Placement(defined, known_hosts)
    cancel = threading.Event()
    run = make_run(tmp_path, sleep=47, timeout=6 if how == "timeout" else 120)
    result = {}
    thread = threading.Thread(target=lambda: result.update(outcome=placement.run(run, cancel, "runner1", None, never_local)))
    started = time.monotonic()
    thread.start()
    while not sleeping(node_processes(run.marker)):
        assert time.monotonic() - started < 60, "the run never started on the node"
        time.sleep(0.1)
    if how == "cancel":
        cancel.set()
    thread.join(90)
    outcome = result["outcome"]
    assert outcome.status == ("canceled" if how == "cancel" else "timeout") and not outcome.ok
    assert time.monotonic() - started < 45
    assert node_processes(run.marker) == []  # the worker, ansible-playbook and the orphaned `sleep 47`
    assert ssh_clients(hosts) == []
    assert not list((Path.home() / ".gitopsd" / "runs").glob(f"{run.marker}*"))


def test_a_fixed_node_that_is_down_fails_the_deployment_as_unreachable_node_and_it_is_retried(short_tmp, nodes):
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["web-1"]},
        env_options={"qa": {"execution_node": "runner1", "retries": 10, "retry_backoff": 1, "retry_backoff_max": 1}},
    )
    hosts, defined, known_hosts = nodes(1, GITOPSD_TEST_OUT=str(sandbox.out))
    node = defined[0]
    sandbox.write_config(
        ssh={"known_hosts": str(known_hosts)},
        execution_nodes=[
            {"name": "runner1", "ssh": f"{node.user}@{node.host}", "port": node.port, "identity_file": str(node.identity_file)}
        ],
    )
    hosts[0].stop()
    with Daemon(sandbox) as daemon:
        daemon.wait_for(
            lambda: any("unreachable node runner1" in (d.get("outcome") or "") for d in sandbox.history("qa")),
            60,
            "a failed attempt",
        )
        hosts[0].start()
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"), timeout=120)
    history = sandbox.history("qa")
    assert history[0]["result"] == "succeeded"
    assert [b.get("node") for b in history[0]["batches"]] == ["runner1"]  # history --json says where it ran
    assert history[-1]["result"] == "failed" and history[-1]["outcome"].startswith("unreachable node runner1 (")
    assert any(r.startswith("web-1.") for r in sandbox.runs())  # the run on the node wrote where the test reads


def test_node_check_reports_versions_and_refuses_a_mismatched_ansible_runner(tmp_path, nodes):
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "ansible-runner").write_text("#!/bin/sh\necho 2.3.9\n")
    (fake / "ansible-runner").chmod(0o755)
    hosts, defined, known_hosts = nodes(2)
    node_environment(hosts[1], f"{fake}:{VENV_BIN}:/usr/bin:/bin", GITOPSD_NODE_TEST=str(tmp_path))
    config = tmp_path / "gitopsd.yml"
    repo = tmp_path / "shop.git"
    run(["git", "init", "-q", "--bare", str(repo)])
    nodes_yaml = "".join(
        f"  - {{name: {n.name}, ssh: {n.destination}, port: {n.port}, identity_file: {n.identity_file}}}\n" for n in defined
    )
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nruntime_dir: {tmp_path / 'run'}\n"
        f"ssh: {{known_hosts: {known_hosts}}}\nexecution_nodes:\n{nodes_yaml}"
        f"repositories:\n  - {{name: shop, path: {repo}}}\n"
    )
    env = {**os.environ, "GITOPSD_CONFIG": str(config)}
    good = run([*GITOPSD, "node", "check", "runner1"], env=env, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ansible-core 2.19" in good.stdout and "ansible-runner 2.4" in good.stdout and "python 3." in good.stdout
    assert good.stdout.strip().endswith(f"matches the controller's {remote.controller_runner_version()}")
    bad = run([*GITOPSD, "node", "check", "runner2"], env=env, check=False)
    assert bad.returncode == 1
    assert (
        f"execution node runner2: ansible-runner 2.3.9 there does not match the controller's {remote.controller_runner_version()}"
    ) in bad.stdout
    # A deployment placed there is refused the same way, before anything runs.
    outcome = Placement(defined, known_hosts).run(make_run(tmp_path), threading.Event(), "runner2", None, never_local)
    assert not outcome.ok and outcome.permanent and "ansible-runner 2.3.9 there does not match" in outcome.reason


def test_a_node_whose_host_key_is_unknown_is_refused_naming_it_until_node_check_trusts_it(tmp_path, nodes):
    hosts, defined, known_hosts = nodes(1)
    known_hosts.write_text("")
    outcome = Placement(defined, known_hosts).run(make_run(tmp_path), threading.Event(), "runner1", None, never_local)
    assert not outcome.ok and outcome.permanent
    assert outcome.reason == (
        f"execution node runner1 ({hosts[0].address}:{hosts[0].port}): its host key is not trusted "
        "yet, ssh refused to connect: check it, then run `gitopsd node check runner1 --trust`"
    )
    config = tmp_path / "gitopsd.yml"
    repo = tmp_path / "shop.git"
    run(["git", "init", "-q", "--bare", str(repo)])
    node = defined[0]
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nruntime_dir: {tmp_path / 'run'}\n"
        f"ssh: {{known_hosts: {known_hosts}}}\nexecution_nodes:\n"
        f"  - {{name: runner1, ssh: {node.destination}, port: {node.port}, identity_file: {node.identity_file}}}\n"
        f"repositories:\n  - {{name: shop, path: {repo}}}\n"
    )
    env = {**os.environ, "GITOPSD_CONFIG": str(config)}
    refused = run([*GITOPSD, "node", "check", "runner1"], env=env, check=False)
    assert refused.returncode == 1 and "its host key is not trusted yet" in refused.stdout
    trusted = run([*GITOPSD, "node", "check", "runner1", "--trust", "--yes"], env=env, check=False)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "runner1" in trusted.stdout and "host key new" in trusted.stdout and "SHA256:" in trusted.stdout
    assert Placement(defined, known_hosts).run(make_run(tmp_path), threading.Event(), "runner1", None, never_local).ok


def test_a_daemon_killed_mid_run_stops_what_the_run_left_on_its_node_when_it_starts_again(short_tmp, nodes, tmp_path):
    sandbox = Sandbox(short_tmp, {"qa": ["web-1"]}, env_options={"qa": {"execution_node": "any", "retries": 0}})
    hosts, defined, known_hosts = nodes(1, GITOPSD_TEST_OUT=str(sandbox.out))
    node = defined[0]
    sandbox.write_config(
        ssh={"known_hosts": str(known_hosts)},
        execution_nodes=[
            {"name": "runner1", "ssh": f"{node.user}@{node.host}", "port": node.port, "identity_file": str(node.identity_file)}
        ],
    )
    sandbox.write("SLEEP", "120")
    sandbox.commit("slow")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        markers = daemon.wait_for(lambda: sleeping(node_processes(test=str(tmp_path))), 60, "the run sleeping on the node")
        daemon.proc.kill()
        daemon.proc.wait()
    assert node_processes(markers[0]) != []  # the daemon is gone, its run on the node is not
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "interrupted by a daemon stop" in daemon.log(), 60, "the recovery")
        assert node_processes(markers[0]) == []
        assert not list((Path.home() / ".gitopsd" / "runs").glob(f"{markers[0]}-*"))
