"""Running repository content: ansible-runner lives here and nowhere else.

A run gets a fresh private data dir (ansible-runner keeps `env/*` files that would leak into the
next run), its extra vars as a file of `!unsafe` values (Jinja never evaluates them), and a marker
in its environment so that every process it started can be found and reaped, even after the
daemon itself was killed. Playbook runs and inventory reads go through the sandbox (sandbox.py):
ansible-runner starts the sandbox's launcher instead of ansible-playbook.

Its siblings hold the parts: processes.py (the marker, reaping), sshkeys.py (host keys, the run's
ssh-agent), runevents.py (judging the events, diffs), sandboxed.py (requirements, vault values).
The names callers use are exported here too.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ansible_runner

from ..core.runfiles import one_line
from ..core.settings import SandboxPolicy
from ..core.types import HostInfo, PlaybookRun, RunOutcome, TaskChange
from . import guarded, sandbox, sshgate
from .inventory import InventoryError
from .processes import MARKER, path_with_interpreter_bin, processes_of, reap, scrub_environment
from .runevents import TASK_ENDS, content_error, judge, render_diff, reports_changed, task_change, timed_out
from .sandboxed import RequirementsError, install_requirements, vault_values
from .sshkeys import SSH_ARGS, AgentError, host_key_problems, identity_files, ssh_envvars, start_agent, stop_agent

__all__ = [
    "MARKER",
    "AgentError",
    "PlaybookRun",
    "RunOutcome",
    "identity_files",
    "judge",
    "processes_of",
    "reap",
    "read_hosts",
    "render_diff",
    "run_playbook",
    "scrub_environment",
    "start_agent",
    "stop_agent",
    "vault_values",
]


def extravars_file(path: Path, values: dict[str, Any]) -> None:
    """Write extra vars as JSON strings marked unsafe: data that Jinja never evaluates.

    JSON with `__ansible_unsafe` keeps every value a string; ansible-core 2.19 reads YAML
    `!unsafe "0123"` as the integer 83 and `!unsafe ""` as None. A mapping (gitopsd_artifacts)
    stays a mapping, each of its values marked so.
    """
    for key in values:
        if not key.isidentifier():
            raise ValueError(f"bad extra var name {key!r}")

    def unsafe(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): unsafe(v) for k, v in value.items()}
        return {"__ansible_unsafe": str(value)}

    path.write_text(json.dumps({k: unsafe(v) for k, v in values.items()}, indent=1) + "\n", encoding="utf-8")


def artifact_files(extravars: dict[str, Any]) -> tuple[Path, ...]:
    """The files of `gitopsd_artifacts`, which the sandbox shows the run read-only (they live in the hidden state folder)."""
    artifacts = extravars.get("gitopsd_artifacts") or {}
    return tuple(sorted({Path(a["path"]) for a in artifacts.values()}))


# What a run may print (its events' stdout) before it is stopped: the daemon keeps it in the run's folder twice (stdout,
# events), in the state folder, and a playbook that loops over huge messages would fill that disk.
RUN_OUTPUT_MAX = 1 << 30


def run_playbook(  # noqa: C901 (one run's options, each an independent branch; the seams are the helpers it calls)
    run: PlaybookRun,
    cancel: threading.Event,
    policy: SandboxPolicy | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Run the playbook (in the sandbox of `policy`) to the end, a timeout or `cancel`; reap every process it started."""
    run.data_dir.mkdir(parents=True, exist_ok=False)
    vars_path = run.data_dir / "gitopsd-vars.json"
    extravars_file(vars_path, run.extravars)
    stats: dict[str, Any] | None = None
    no_hosts = False
    unreachable: dict[str, str] = {}  # host -> why, from Ansible's events
    changes: list[TaskChange] = []
    busy: dict[str, str] = {}  # host -> the task it has started and not finished (what a timeout stopped)
    printed = 0
    too_much = threading.Event()  # printed past RUN_OUTPUT_MAX: stopped as a cancel stops a run

    def handle(event: dict[str, Any]) -> bool:
        nonlocal stats, no_hosts, printed
        printed += len(event.get("stdout") or "")
        if printed > RUN_OUTPUT_MAX:
            too_much.set()
        kind = event.get("event")
        data = event.get("event_data", {})
        if kind in TASK_ENDS and data.get("host"):
            busy.pop(str(data["host"]), None)
        elif kind == "runner_on_start" and data.get("host"):
            busy[str(data["host"])] = str(data.get("task") or data.get("task_action") or "?")
        if kind == "runner_on_ok" and reports_changed(event):
            changes.append(task_change(data, run.workdir))
        if kind == "playbook_on_stats":
            stats = data
        elif kind == "playbook_on_no_hosts_matched":
            no_hosts = True
        elif kind == "runner_on_unreachable" and data.get("host"):
            unreachable[str(data["host"])] = str((data.get("res") or {}).get("msg", ""))
        if on_event is not None:
            on_event(event)
        return True

    known_hosts = policy.known_hosts if policy is not None else None
    try:
        requirements = install_requirements(run, policy, cancel)
    except RequirementsError as exc:
        if cancel.is_set():
            return RunOutcome(False, "canceled", None, "run was canceled")
        return RunOutcome(False, "failed", None, str(exc), permanent=exc.permanent)

    # ssh's ControlPersist masters rename themselves ("ssh: .../cp/... [mux]"), which hides the marker in
    # their environment; a control path inside the run's folder lets the reaper find them by name. In the sandbox
    # the folder is shown at a short path (sandbox.SSH_CONTROL_DIR), so a long state_dir leaves room for the sockets.
    control_dir = run.data_dir / "cp"
    control_dir.mkdir()
    envvars = {
        MARKER: run.marker,
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
        "PATH": path_with_interpreter_bin(),
        **ssh_envvars(known_hosts),
        **(requirements.envvars(run.workdir) if requirements else {}),
    }
    cmdline = f"-e @{shlex.quote(str(vars_path))}"
    if run.limit:
        cmdline += f" --limit {shlex.quote(run.limit)}"
    # Handlers notified before a failing task run all the same: else the retry of a failed tree finds its
    # changes made ("ok", nothing notified) and succeeds with the handlers never run. A play may say
    # `force_handlers: false`.
    cmdline += " --force-handlers"
    if run.check_mode:  # drift detection: what would change, and how, without changing it
        cmdline += " --check --diff"
    if run.verbose:
        cmdline += " -v"
    vault = None
    if run.vault_password_file is not None:
        # A private copy in the run's folder: the run's user (nobody, as root) can read it, nothing else sees it.
        vault = run.data_dir / "vault-password"
        try:
            shutil.copyfile(run.vault_password_file, vault)
        except OSError as exc:  # retrying cannot help until an operator puts the file back
            return RunOutcome(
                False,
                "failed",
                None,
                f"vault_password_file {run.vault_password_file} cannot be read "
                f"({exc.strerror or exc}): the tree's Ansible Vault content cannot be decrypted; "
                "restore the file (readable by the daemon's user), then `gitopsd retry`",
                permanent=True,
            )
        os.chmod(vault, 0o500 if os.access(run.vault_password_file, os.X_OK) else 0o400)
        cmdline += f" --vault-password-file {shlex.quote(str(vault))}"
    binary = None
    agent: tuple[subprocess.Popen[bytes], Path] | None = None
    gate = None
    try:
        if policy is not None and policy.enabled:
            argv_file = run.data_dir / "sandbox.argv"
            shown = tuple(p for p in (known_hosts, requirements.folder if requirements else None) if p is not None)
            shown += artifact_files(run.extravars)
            identities = identity_files()
            if policy.playbook_network != "host":
                gate = ssh_gate(run, policy, cancel)
            prefix = sandbox.command_prefix(
                policy,
                project=run.workdir,
                run_dir=run.data_dir,
                read_only=shown,
                agent=run.data_dir / "agent.sock" if identities else None,
                network=gate is None,
                ssh_gate=gate.path if gate else None,
                ssh_control=control_dir,
            )
            envvars["ANSIBLE_SSH_CONTROL_PATH_DIR"] = sandbox.SSH_CONTROL_DIR
            if identities:  # after command_prefix: it hands the run's folder, where the socket goes, to the run's user
                try:
                    agent = start_agent(run.data_dir, run.marker, sandbox.run_as(policy), identities)
                except AgentError as exc:
                    return RunOutcome(False, "failed", None, str(exc), permanent=True)
            if gate is not None:  # ssh finds the user's config by the user database's home, which a kept user's $HOME is not
                config = f"{sandbox.home_of(uid_gid[0] if (uid_gid := sandbox.run_as(policy)) else os.geteuid())}/.ssh/config"
                envvars["ANSIBLE_SSH_ARGS"] = f"{envvars.get('ANSIBLE_SSH_ARGS', SSH_ARGS)} -F {shlex.quote(config)}"
            sandbox.write_argv(argv_file, prefix)
            envvars["GITOPSD_SANDBOX_ARGV"] = str(argv_file)
            binary = str(sandbox.launcher())
            cmdline += f" {shlex.quote(str(run.playbook))}"  # with its own `binary`, ansible-runner adds no playbook
        result = ansible_runner.run(
            private_data_dir=str(run.data_dir),
            project_dir=str(run.workdir),
            playbook=str(run.playbook),
            inventory=str(run.inventory),
            cmdline=cmdline,
            envvars=envvars,
            timeout=run.timeout,
            ident="run",
            quiet=True,
            event_handler=handle,
            cancel_callback=lambda: cancel.is_set() or too_much.is_set(),
            binary=binary,
            settings={"suppress_ansible_output": True},
        )
        status, rc = result.status, result.rc
    finally:
        if agent is not None:
            stop_agent(*agent)
        reap(run.marker, also=str(control_dir))
        if gate is not None:
            gate.__exit__()
        if vault is not None:
            vault.unlink(missing_ok=True)
    if too_much.is_set() and not cancel.is_set():  # the same tree prints as much again: a person must look
        output = run.data_dir / "artifacts" / "run" / "stdout"
        reason = f"the playbook printed more than {RUN_OUTPUT_MAX >> 20} MiB and was stopped: make it print less"
        return RunOutcome(False, "failed", rc, reason, {}, output if output.exists() else None, True)
    ok, reason, hosts = judge(stats, no_hosts, status, rc)
    if status == "timeout":
        reason = timed_out(run.timeout, busy)
    stdout = run.data_dir / "artifacts" / "run" / "stdout"
    permanent = False
    if stats is None and status == "failed" and rc == 4:
        invalid = content_error(stdout, run.workdir)
        if invalid:
            reason, permanent = f"invalid content: {invalid}", True
    keys = host_key_problems(unreachable, run.extravars)
    if keys:  # ssh refuses these hosts until someone trusts their keys: retrying cannot help, a human must look
        reason, permanent = f"{reason}: {'; '.join(keys)}", True
    # The reason is recorded, notified and printed: what the tree put in it (a task's or a host's name) stays text.
    reason = one_line(reason)
    return RunOutcome(ok, status, rc, reason, hosts, stdout if stdout.exists() else None, permanent, tuple(changes))


def ssh_gate(run: PlaybookRun, policy: SandboxPolicy, cancel: threading.Event) -> sshgate.Forwarder:
    """Start the forwarder of a playbook run without a network (sandbox.playbook_network: ssh-only): the hosts of
    its inventory, read in the sandbox at its first SSH connection, are all its ssh may reach."""

    read_once: list[list[HostInfo]] = []

    def hosts() -> list[HostInfo]:
        if not read_once:  # asked for the targets, then (with a later environment's hosts) for the jump hosts
            # Its own marker: the reaper at the end of the read must leave the playbook's processes alone.
            read_once.append(
                read_hosts(
                    run.inventory,
                    sshgate.VARIABLES,
                    workdir=run.workdir,
                    data_dir=run.data_dir / "ssh-hosts",
                    marker=f"{run.marker}-ssh-hosts",
                    timeout=run.timeout,
                    cancel=cancel,
                    policy=policy,
                )
            )
        return read_once[0]

    def read(inventory: Path, workdir: Path, data_dir: Path) -> list[HostInfo]:
        # A marker of its own for each read (they run side by side): the reaper at the end of one leaves the others.
        marker = f"{run.marker}-guarded-{data_dir.parent.name}-{data_dir.name}"
        return read_hosts(
            inventory,
            sshgate.VARIABLES,
            workdir=workdir,
            data_dir=data_dir,
            marker=marker,
            timeout=run.timeout,
            cancel=cancel,
            policy=policy,
        )

    forwarder = sshgate.Forwarder(
        run.data_dir / sshgate.SOCKET_NAME,
        lambda: sshgate.targets(hosts()),
        set(policy.daemon_addresses),
        run.marker,
        sandbox.run_as(policy),
        guarded=(lambda: guarded.owners(run, read, policy.shared_hosts)) if run.guarded else None,
        through=lambda: sshgate.hops(hosts()),
    )
    return forwarder.__enter__()


def read_hosts(
    inventory: Path,
    variables: tuple[str, ...],
    *,
    workdir: Path,
    data_dir: Path,
    marker: str,
    timeout: float,
    cancel: threading.Event,
    policy: SandboxPolicy | None = None,
) -> list[HostInfo]:
    """The hosts of an inventory with the given variables templated, read by Ansible in the sandbox.

    An inventory is repository content (templates, lookups, scripts), so it is read by a child
    process in the deployment's sandbox, killed at `timeout` or on `cancel` with everything it
    started. Raise InventoryError with Ansible's reason, or when it timed out or was canceled.
    """
    data_dir.mkdir(parents=True, exist_ok=False)
    command = [sys.executable, "-I", "-m", "gitopsd.adapters.inventory", str(inventory), *variables]
    if policy is not None and policy.enabled:  # no network: a lookup cannot reach the API or anything else
        command = sandbox.command_prefix(policy, project=workdir, run_dir=data_dir, network=False) + command
    env = {**os.environ, MARKER: marker, "PATH": path_with_interpreter_bin()}
    # Read back through the daemon's own descriptors, never by name: the child may replace the names with links to
    # what the sandbox hides from it (a vault password), and the last line of stderr becomes the deployment's reason.
    with open(data_dir / "hosts.json", "w+b") as out, open(data_dir / "stderr", "w+b") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise InventoryError(
                        f"reading the inventory was {'canceled' if cancel.is_set() else 'stopped'}"
                        f"{'' if cancel.is_set() else f' after {timeout:g}s (time limit)'}"
                    )
                time.sleep(0.02)
        finally:
            reap(marker)
        out.seek(0)
        err.seek(0)
        written, errors = out.read(), err.read()
    try:
        answer = json.loads(written.decode("utf-8"))
    except ValueError:
        detail = errors.decode("utf-8", errors="replace").strip().splitlines()
        raise InventoryError(
            f"reading the inventory failed (exit code {proc.returncode})" + (f": {one_line(detail[-1])}" if detail else "")
        ) from None
    if "error" in answer:
        raise InventoryError(one_line(str(answer["error"])))
    return [HostInfo(str(name), {str(k): str(v) for k, v in values.items()}) for name, values in answer["hosts"]]
