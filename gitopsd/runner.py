"""Running repository content: ansible-runner and psutil live here and nowhere else.

A run gets a fresh private data dir (ansible-runner keeps `env/*` files that would leak into the
next run), its extra vars as a file of `!unsafe` values (Jinja never evaluates them), and a marker
in its environment so that every process it started can be found and reaped, even after the
daemon itself was killed. Playbook runs and inventory reads go through the sandbox (sandbox.py):
ansible-runner starts the sandbox's launcher instead of ansible-playbook.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ansible_runner
import psutil

from . import sandbox
from .inventory import HostInfo, InventoryError
from .sandbox import SandboxPolicy

MARKER = "GITOPSD_DEPLOYMENT"
# Variables that belong to the daemon's own supervisor, never to Ansible.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook invocation, fully described."""

    marker: str            # unique per deployment and state folder; tags every process of the run
    workdir: Path          # the exported commit; Ansible runs with it as its project folder
    playbook: Path
    inventory: Path
    data_dir: Path         # fresh ansible-runner private data dir
    extravars: dict[str, str]
    timeout: int
    limit: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, judged from Ansible's final stats rather than its exit code."""

    ok: bool
    status: str            # successful | failed | timeout | canceled
    rc: int | None
    reason: str
    hosts: dict[str, str] = field(default_factory=dict)   # host -> ok | failed | unreachable
    stdout: Path | None = None


def extravars_file(path: Path, values: dict[str, str]) -> None:
    """Write extra vars as JSON strings marked unsafe: data that Jinja never evaluates.

    JSON with `__ansible_unsafe` keeps every value a string; ansible-core 2.19 reads YAML
    `!unsafe "0123"` as the integer 83 and `!unsafe ""` as None.
    """
    for key in values:
        if not key.isidentifier():
            raise ValueError(f"bad extra var name {key!r}")
    path.write_text(json.dumps({k: {"__ansible_unsafe": str(v)} for k, v in values.items()}, indent=1) + "\n",
                    encoding="utf-8")


def judge(stats: dict[str, Any] | None, no_hosts_matched: bool, status: str, rc: int | None) -> tuple[bool, str, dict[str, str]]:
    """Given the final `playbook_on_stats` data, return (ok, reason, per-host result)."""
    if status in ("timeout", "canceled"):
        return False, f"run {'timed out' if status == 'timeout' else 'was canceled'}", {}
    if stats is None:
        return False, f"ansible-playbook ended without final stats (exit code {rc}): syntax error or missing file?", {}
    hosts: dict[str, str] = {}
    for host in stats.get("processed", {}):
        hosts[host] = "ok"
    for host in stats.get("failures", {}):
        hosts[host] = "failed"
    for host in stats.get("dark", {}):
        hosts[host] = "unreachable"
    if no_hosts_matched or not hosts:
        return False, "no hosts matched: the inventory or the play's hosts pattern selects nothing", hosts
    bad = sorted(h for h, r in hosts.items() if r != "ok")
    if bad:
        return False, "failed on " + ", ".join(f"{h} ({hosts[h]})" for h in bad), hosts
    if status != "successful":
        return False, f"ansible-playbook reported {status} (exit code {rc})", hosts
    return True, f"succeeded on {len(hosts)} host{'s' if len(hosts) != 1 else ''}", hosts


def run_playbook(run: PlaybookRun, cancel: threading.Event, policy: SandboxPolicy | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    """Run the playbook (in the sandbox of `policy`) to the end, a timeout or `cancel`; reap every process it started."""
    run.data_dir.mkdir(parents=True, exist_ok=False)
    vars_path = run.data_dir / "gitopsd-vars.json"
    extravars_file(vars_path, run.extravars)
    stats: dict[str, Any] | None = None
    no_hosts = False

    def handle(event: dict[str, Any]) -> bool:
        nonlocal stats, no_hosts
        kind = event.get("event")
        if kind == "playbook_on_stats":
            stats = event.get("event_data", {})
        elif kind == "playbook_on_no_hosts_matched":
            no_hosts = True
        if on_event is not None:
            on_event(event)
        return True

    # ssh's ControlPersist masters rename themselves ("ssh: .../cp/... [mux]"), which hides the marker in
    # their environment; a control path inside the run's folder lets the reaper find them by name.
    control_dir = run.data_dir / "cp"
    control_dir.mkdir()
    envvars = {MARKER: run.marker, "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "True",
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir), "PATH": _path_with_interpreter_bin()}
    cmdline = f"-e @{shlex.quote(str(vars_path))}"
    if run.limit:
        cmdline += f" --limit {shlex.quote(run.limit)}"
    binary = None
    if policy is not None and policy.enabled:
        argv_file = run.data_dir / "sandbox.argv"
        sandbox.write_argv(argv_file, sandbox.command_prefix(policy, project=run.workdir, run_dir=run.data_dir))
        envvars["GITOPSD_SANDBOX_ARGV"] = str(argv_file)
        binary = str(sandbox.launcher())
        cmdline += f" {shlex.quote(str(run.playbook))}"   # with its own `binary`, ansible-runner adds no playbook
    try:
        result = ansible_runner.run(
            private_data_dir=str(run.data_dir), project_dir=str(run.workdir), playbook=str(run.playbook),
            inventory=str(run.inventory), cmdline=cmdline, envvars=envvars, timeout=run.timeout,
            ident="run", quiet=True, event_handler=handle, cancel_callback=cancel.is_set, binary=binary,
            settings={"suppress_ansible_output": True})
        status, rc = result.status, result.rc
    finally:
        reap(run.marker, also=str(control_dir))
    ok, reason, hosts = judge(stats, no_hosts, status, rc)
    stdout = run.data_dir / "artifacts" / "run" / "stdout"
    return RunOutcome(ok, status, rc, reason, hosts, stdout if stdout.exists() else None)


def read_hosts(inventory: Path, variables: tuple[str, ...], *, workdir: Path, data_dir: Path, marker: str,
               timeout: float, cancel: threading.Event, policy: SandboxPolicy | None = None) -> list[HostInfo]:
    """The hosts of an inventory with the given variables templated, read by Ansible in the sandbox.

    An inventory is repository content (templates, lookups, scripts), so it is read by a child
    process in the deployment's sandbox, killed at `timeout` or on `cancel` with everything it
    started. Raise InventoryError with Ansible's reason, or when it timed out or was canceled.
    """
    data_dir.mkdir(parents=True, exist_ok=False)
    command = [sys.executable, "-I", "-m", "gitopsd.inventory", str(inventory), *variables]
    if policy is not None and policy.enabled:
        command = sandbox.command_prefix(policy, project=workdir, run_dir=data_dir) + command
    env = {**os.environ, MARKER: marker, "PATH": _path_with_interpreter_bin()}
    out_path = data_dir / "hosts.json"
    with open(out_path, "wb") as out, open(data_dir / "stderr", "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise InventoryError(f"reading the inventory was {'canceled' if cancel.is_set() else 'stopped'}"
                                         f"{'' if cancel.is_set() else f' after {timeout:g}s (time limit)'}")
                time.sleep(0.02)
        finally:
            reap(marker)
    try:
        answer = json.loads(out_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        detail = (data_dir / "stderr").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise InventoryError(f"reading the inventory failed (exit code {proc.returncode})"
                             + (f": {detail[-1]}" if detail else "")) from None
    if "error" in answer:
        raise InventoryError(str(answer["error"]))
    return [HostInfo(str(name), {str(k): str(v) for k, v in values.items()}) for name, values in answer["hosts"]]


def _path_with_interpreter_bin() -> str:
    """PATH with the folder of this Python first, so the matching ansible-playbook is found."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return path if path.split(":")[0] == bindir else f"{bindir}:{path}"


def scrub_environment() -> None:
    """Drop the supervisor's variables from this process so no child ever inherits them."""
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)


def processes_of(marker: str, also: str | None = None) -> list[psutil.Process]:
    """Every live process carrying this deployment's marker (or naming `also` in its command line)."""
    wanted = marker
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER) == wanted or (also and also in " ".join(proc.cmdline())):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def reap(marker: str, grace: float = 2.0, also: str | None = None) -> int:
    """Terminate, then kill, every process of a deployment. Return how many there were."""
    procs = processes_of(marker, also)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)
