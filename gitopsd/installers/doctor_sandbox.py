"""`gitopsd doctor` as the daemon's user: a sandboxed playbook and CI step, the SSH forwarder, the runs' ssh-agent."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import Config
from ..core.settings import SandboxPolicy
from .doctor_report import Finding

PROBE_PLAYBOOK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: gitopsd doctor}\n"
PROBE_INVENTORY = "all:\n  hosts:\n    doctor: {ansible_connection: local}\n"


def sandboxed_runs(config: Config, me: str) -> list[Finding]:
    """A no-op playbook and a no-op CI step, each in the sandbox and in a folder where the daemon puts its own."""
    import threading

    from ..adapters import runner, sandbox
    from ..core.types import PlaybookRun

    policy = sandbox.for_config(config)
    folder = Path(tempfile.mkdtemp(prefix=".doctor-", dir=config.state_dir))
    found = []
    try:
        tree = folder / "deployment" / "tree"
        tree.mkdir(parents=True)
        (tree / "site.yml").write_text(PROBE_PLAYBOOK, encoding="utf-8")
        (tree / "hosts.yml").write_text(PROBE_INVENTORY, encoding="utf-8")
        outcome = runner.run_playbook(
            PlaybookRun(
                marker=f"gitopsd-doctor-{os.getpid()}",
                workdir=tree,
                playbook=tree / "site.yml",
                inventory=tree / "hosts.yml",
                data_dir=folder / "deployment" / "run",
                extravars={},
                timeout=120,
            ),
            threading.Event(),
            policy,
        )
        why = outcome.reason
        if not outcome.ok and outcome.stdout is not None and outcome.stdout.exists():
            why = (outcome.stdout.read_text(errors="replace").strip().splitlines() or [why])[-1]
        found.append(
            Finding(
                outcome.ok,
                f"{me} runs a playbook in the sandbox" + ("" if outcome.ok else f": {why}"),
                None if outcome.ok else "gitopsd check-config, and the sandbox section of docs (Trust model)",
            )
        )
        work = folder / "ci" / "work"
        step_tree = work / "tree"
        step_tree.mkdir(parents=True)
        argv = sandbox.command_prefix(policy, project=step_tree, run_dir=work, network=policy.network) + ["true"]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=step_tree,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work / "home"), "LANG": "C.UTF-8"},
        )
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        found.append(
            Finding(proc.returncode == 0, f"{me} runs a CI step in the sandbox" + ("" if proc.returncode == 0 else f": {last}"))
        )
        found.append(_playbook_network(policy, step_tree, folder / "net", me))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def _playbook_network(policy: SandboxPolicy, tree: Path, run_dir: Path, me: str) -> Finding:
    """With sandbox.playbook_network ssh-only, a run's ssh reaches its forwarder, and the forwarder refuses a host
    outside the inventory (here every host: the probe has none)."""
    from ..adapters import sandbox, sshgate

    if policy.playbook_network == "host":
        return Finding(
            True,
            "playbook runs use this machine's network (sandbox.playbook_network: host): their tasks "
            "reach its loopback services, the API and the dashboard too",
        )
    run_dir.mkdir()
    helper = Path(sandbox.__file__).resolve().parent.parent / "libexec" / "ssh-proxy"
    # The refusal is the answer asked for, not news: the forwarder's warning about it would read as a problem.
    level = sshgate.log.level
    sshgate.log.setLevel(logging.ERROR)
    try:
        with sshgate.Forwarder(
            run_dir / sshgate.SOCKET_NAME, set, set(policy.daemon_addresses), "doctor", sandbox.run_as(policy)
        ) as gate:
            argv = sandbox.command_prefix(policy, project=tree, run_dir=run_dir, network=False, ssh_gate=gate.path) + [
                sys.executable,
                "-I",
                "-S",
                str(helper),
                "127.0.0.1",
                "22",
                sandbox.SSH_GATE_SOCKET,
            ]
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                cwd=tree,
                timeout=60,
                check=False,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
    finally:
        sshgate.log.setLevel(level)
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    ok = last.startswith("gitopsd: refused: 127.0.0.1:22 is not a host of this deployment's inventory")
    return Finding(
        ok,
        f"{me}'s playbook runs reach SSH hosts only through their forwarder (sandbox.playbook_network: "
        f"ssh-only)" + ("" if ok else f": {last}"),
        None if ok else "gitopsd check-config, and the sandbox section of docs (Trust model)",
    )


def ssh_agent(config: Config, me: str) -> list[Finding]:
    """Playbook runs get the service's SSH keys through an ssh-agent: start one as a run does and give it the keys."""
    from ..adapters import runner

    keys = runner.identity_files()
    if not keys:
        return []
    folder = Path(tempfile.mkdtemp(prefix=".doctor-", dir=config.state_dir))
    try:
        agent, socket_path = runner.start_agent(folder, f"gitopsd-doctor-agent-{os.getpid()}", None, keys)
        runner.stop_agent(agent, socket_path)
    except runner.AgentError as exc:
        return [Finding(False, str(exc))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Finding(
            True,
            f"{me}'s ssh-agent takes the SSH key{'s' if len(keys) > 1 else ''} "
            f"{', '.join(str(k) for k in keys)} for playbook runs",
        )
    ]
