"""Playbook runs on execution nodes: ansible-runner's streaming mode over SSH, as AWX runs its execution nodes.

`ansible-runner transmit` packs the run (the exported tree, its vars, inventory and settings) here,
`ansible-runner worker` runs it on the node (started by ssh under `setsid`, tagged with
GITOPSD_NODE_RUN=<marker> so that everything it starts can be found and killed there), and
`ansible-runner process` reads its events and final status back here, where runevents.judge judges
them exactly as for a local run. The node needs Python, ansible-core and ansible-runner; on the
node, the node is the isolation (there is no sandbox around the run there).

What comes back from a node is data, never paths: events are handled in memory (ansible-runner's
processor would write each one to a file named by the node), and of the artifacts zip only the
`rc` and `stdout` members are read, never extracted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import ansible_runner

from ..core.errors import GitopsdError
from ..core.settings import ExecutionNode, SandboxPolicy
from ..core.types import PlaybookRun, RunOutcome, TaskChange
from .processes import MARKER, reap
from .runevents import content_error, judge, reports_changed, task_change
from .runner import extravars_file
from .sandboxed import Requirements, RequirementsError, install_requirements
from .sshkeys import host_key_problems, ssh_envvars

NODE_MARKER = "GITOPSD_NODE_RUN"  # tags the worker's processes on the node (the controller's MARKER never goes there)
RUNS = ".gitopsd/runs"  # the worker's private data dirs, under the node user's home
CONNECT_TIMEOUT = 10  # seconds for ssh to reach a node
KILL_TIMEOUT = 20  # seconds for the remote kill to finish
STREAM_GRACE = 30  # seconds past a run's timeout before the controller stops waiting for the node
MAX_ARTIFACTS = 256 * 1024 * 1024  # bytes of the artifacts zip a node may send back

# Run on the node after each worker, on cancel or timeout, and after a daemon crash: kill every process
# carrying the run's marker (TERM, then KILL), then remove the run's folders (~/.gitopsd/runs/<marker>-*).
# Python, because the marker is in the processes' environment (a module's child, e.g. `command: sleep`,
# has none of the worker's arguments).
REAPER = r"""
import os, shutil, signal, sys, time
mark = ("%s=%s" % (sys.argv[1], sys.argv[2])).encode()
def tagged():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.append(int(pid))
            except OSError:
                pass
    return found
for sig in (signal.SIGTERM, signal.SIGKILL):
    pids = tagged()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    end = time.time() + 2
    while pids and time.time() < end and tagged():
        time.sleep(0.05)
runs = os.path.join(os.path.expanduser("~"), sys.argv[3])
for name in (os.listdir(runs) if os.path.isdir(runs) else []):
    if name.startswith(sys.argv[2] + "-"):
        shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
"""

# What a node answers about itself: its home, then its tools' versions (each line tagged; missing tools say so).
PROBE = (
    'printf "home=%s\\n" "$HOME"; '
    'printf "runner=%s\\n" "$(ansible-runner --version 2>&1 | tail -n 1)"; '
    'printf "python3=%s\\n" "$(python3 -c \'import platform; print(platform.python_version())\' 2>&1 | tail -n 1)"'
)
PROBE_FULL = PROBE + '; printf "playbook=%s\\n" "$(ansible-playbook --version 2>&1 | tr "\\n" " ")"'


class NodeError(GitopsdError):
    """A node cannot be used: down, its host key not trusted, or its tools missing or of the wrong version."""

    def __init__(self, message: str, *, down: bool = False, untrusted: bool = False):
        super().__init__(message)
        self.down, self.untrusted = down, untrusted


@dataclass(frozen=True)
class NodeInfo:
    """What a node said about itself."""

    home: str
    runner: str  # ansible-runner --version, or its error
    python: str = ""
    ansible_core: str = ""
    ansible_python: str = ""


def controller_runner_version() -> str:
    return metadata.version("ansible-runner")


def version_problem(node: ExecutionNode, info: NodeInfo) -> str | None:
    """Why the node's ansible-runner cannot run our streams (None if it can): the same major.minor is required."""
    ours = controller_runner_version()
    if not re.fullmatch(r"\d+\.\d+(\.\S+)?", info.runner):
        return (
            f"execution node {node.name}: ansible-runner does not run there ({info.runner or 'no answer'}): "
            f'install ansible-runner {ours} on {node.name} (docs/install.md, "Execution nodes")'
        )
    if info.runner.split(".")[:2] != ours.split(".")[:2]:
        return (
            f"execution node {node.name}: ansible-runner {info.runner} there does not match the controller's {ours} "
            f"(the streaming protocol needs the same major.minor): install ansible-runner=={ours} on {node.name}"
        )
    return None


def ssh_argv(node: ExecutionNode, known_hosts: Path, command: str) -> list[str]:
    """ssh to a node, checking its host key against the service's known_hosts only, never asking anything."""
    argv = [
        "ssh",
        "-p",
        str(node.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        # a node that dies mid-run is noticed within 15 s, even when no event is due
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "LogLevel=ERROR",
    ]
    if node.identity_file is not None:
        argv += ["-i", str(node.identity_file), "-o", "IdentitiesOnly=yes"]
    return argv + ["--", node.destination, command]


def connection_problem(node: ExecutionNode, stderr: str, rc: int | None) -> NodeError:
    """ssh's failure to reach a node, as one line naming the node and what to do."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("Host key verification failed" in line or "HOST IDENTIFICATION HAS CHANGED" in line for line in lines):
        changed = any("HAS CHANGED" in line for line in lines)
        return NodeError(
            f"execution node {node.name} ({node.host}:{node.port}): its host key "
            f"{'changed' if changed else 'is not trusted yet'}, ssh refused to connect: check it, then run "
            f"`gitopsd node check {node.name} --trust`",
            untrusted=True,
        )
    detail = lines[-1] if lines else f"ssh exit code {rc}"
    return NodeError(f"unreachable node {node.name} ({node.destination}:{node.port}): {detail}", down=True)


def probe(node: ExecutionNode, known_hosts: Path, *, full: bool = False, timeout: float = 60) -> NodeInfo:
    """Connect to a node and ask for its home and versions. Raise NodeError when it cannot be reached."""
    try:
        proc = subprocess.run(
            ssh_argv(node, known_hosts, PROBE_FULL if full else PROBE),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise NodeError(
            f"unreachable node {node.name} ({node.destination}:{node.port}): no answer within {timeout:g}s", down=True
        ) from None
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or "home" not in values:
        raise connection_problem(node, proc.stderr, proc.returncode)
    playbook = values.get("playbook", "")
    core = re.search(r"\[core ([^\]]+)\]", playbook)
    python = re.search(r"python version = (\S+)", playbook)
    return NodeInfo(
        values["home"],
        values.get("runner", "").strip(),
        values.get("python3", "").strip(),
        core.group(1) if core else playbook.strip()[:80],
        python.group(1) if python else "",
    )


def kill_remote(node: ExecutionNode, known_hosts: Path, marker: str) -> bool:
    """Kill every process of a run on its node (by its marker) and remove its folders there. Return whether ssh got there."""
    command = shlex.join(["python3", "-c", REAPER, NODE_MARKER, marker, RUNS])
    try:
        proc = subprocess.run(
            ssh_argv(node, known_hosts, command), capture_output=True, timeout=KILL_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


@dataclass(frozen=True)
class NodeRun:
    """How a run on a node ended: the outcome, and whether the node's worker ever answered."""

    outcome: RunOutcome
    reached: bool
    problem: NodeError | None = None  # set when the node could not be used (down, untrusted)


class _Stream:
    """The worker's output as ansible-runner's processor reads it, with the artifacts zip taken out of it.

    The zip is read here (its rc and stdout members only) instead of being extracted by the processor,
    which would follow symlinks a run on the node could have put in it.
    """

    def __init__(self, raw: IO[bytes], artifacts: Path):
        self.raw, self.artifacts = raw, artifacts
        self.answered = False  # a line came from the worker
        self.rc: int | None = None
        self.stdout = False

    def readline(self) -> bytes:
        while True:
            line = self.raw.readline()
            if line:
                self.answered = True
            if not line.startswith(b'{"zipfile"'):
                return line
            try:
                size = int(json.loads(line)["zipfile"])
            except (ValueError, KeyError, TypeError):
                return line
            self._artifacts(size)

    def _artifacts(self, size: int) -> None:
        """Read `size` bytes of zip (base64 on the stream); keep its rc and stdout."""
        need = 4 * ((size + 2) // 3)
        with tempfile.TemporaryFile() as encoded:
            while need > 0:
                chunk = self.raw.read(min(need, 1 << 20))
                if not chunk:
                    return
                chunk = bytes(c for c in chunk if c not in b" \t\r\n") if re.search(rb"\s", chunk) else chunk
                need -= len(chunk)
                if size <= MAX_ARTIFACTS:
                    encoded.write(chunk)
            if size > MAX_ARTIFACTS:
                return
            encoded.seek(0)
            with tempfile.TemporaryFile() as data:
                while block := encoded.read(1 << 20):
                    data.write(base64.b64decode(block))
                try:
                    with zipfile.ZipFile(data) as archive:
                        names = set(archive.namelist())
                        if "rc" in names:
                            text = archive.read("rc").decode("ascii", "replace").strip()
                            self.rc = int(text) if re.fullmatch(r"-?\d{1,4}", text) else None
                        if "stdout" in names:
                            self.artifacts.mkdir(parents=True, exist_ok=True)
                            with archive.open("stdout") as src, open(self.artifacts / "stdout", "wb") as out:
                                shutil.copyfileobj(src, out)
                            self.stdout = True
                except (zipfile.BadZipFile, OSError, ValueError):
                    pass


def run_on_node(
    node: ExecutionNode,
    info: NodeInfo,
    run: PlaybookRun,
    cancel: threading.Event,
    policy: SandboxPolicy | None,
    known_hosts: Path,
) -> NodeRun:
    """Run the playbook on `node` through transmit | ssh worker | process, to the end, a timeout or `cancel`.

    Judged like a local run (runevents.judge). A node that cannot be reached, or that goes away before
    the run's result came back, fails the run as `unreachable node` (NodeRun.reached says which).
    """
    run.data_dir.mkdir(parents=True, exist_ok=False)
    remote = f"{info.home.rstrip('/')}/{RUNS}/{run.marker}-{run.data_dir.name}"
    try:
        requirements = install_requirements(run, policy, cancel)  # in the controller's sandbox, then shipped
    except RequirementsError as exc:
        if cancel.is_set():
            return NodeRun(RunOutcome(False, "canceled", None, "run was canceled"), False)
        return NodeRun(RunOutcome(False, "failed", None, str(exc), permanent=exc.permanent), False)
    stream = run.data_dir / "transmit.stream"
    try:
        _transmit(run, remote, requirements, known_hosts, stream)
    except OSError as exc:  # the vault password file (see runner.run_playbook), or the disk
        return NodeRun(
            RunOutcome(False, "failed", None, f"cannot prepare the run for node {node.name}: {exc.strerror or exc}"), False
        )
    try:
        return _stream(node, run, cancel, known_hosts, stream, remote)
    finally:
        stream.unlink(missing_ok=True)  # it holds the vault password, if any
        reap(run.marker)  # the ssh clients of this run, here


def _transmit(run: PlaybookRun, remote: str, requirements: Requirements | None, known_hosts: Path | None, stream: Path) -> None:
    """Write the run as ansible-runner transmit's stream: the tree as project/, vars and secrets under gitopsd/."""
    local = run.data_dir / "transmit"
    project = local / "project"
    shutil.copytree(run.workdir, project, symlinks=True)
    own = local / "gitopsd"
    own.mkdir(mode=0o700)
    extravars: dict[str, Any] = {**run.extravars, "gitopsd_workdir": f"{remote}/project"}
    artifacts = dict(run.extravars.get("gitopsd_artifacts") or {})
    if artifacts:  # the files CI built, shipped along (they live in the controller's state folder)
        (own / "artifacts").mkdir()
        for i, (name, entry) in enumerate(sorted(artifacts.items())):
            shutil.copyfile(entry["path"], own / "artifacts" / str(i))
            artifacts[name] = {**entry, "path": f"{remote}/gitopsd/artifacts/{i}"}
        extravars["gitopsd_artifacts"] = artifacts
    extravars_file(own / "vars.json", extravars)
    envvars = {"ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "True", "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{remote}/cp"}
    if known_hosts is not None and known_hosts.is_file():
        shutil.copyfile(known_hosts, own / "known_hosts")
        envvars.update(ssh_envvars(Path(f"{remote}/gitopsd/known_hosts")))
    else:
        envvars.update(ssh_envvars(None))
    if requirements is not None:
        shutil.copytree(requirements.folder, local / "requirements", symlinks=True)
        envvars.update(Requirements(Path(f"{remote}/requirements")).envvars(Path(f"{remote}/project")))
    cmdline = f"-e @{shlex.quote(f'{remote}/gitopsd/vars.json')}"
    if run.limit:
        cmdline += f" --limit {shlex.quote(run.limit)}"
    cmdline += " --force-handlers"  # as runner.run_playbook: handlers notified before a failure run all the same
    if run.check_mode:
        cmdline += " --check --diff"
    if run.vault_password_file is not None:
        try:
            shutil.copyfile(run.vault_password_file, own / "vault-password")
        except OSError as exc:
            raise OSError(
                exc.errno, f"vault_password_file {run.vault_password_file} cannot be read ({exc.strerror or exc})"
            ) from exc
        os.chmod(own / "vault-password", 0o700 if os.access(run.vault_password_file, os.X_OK) else 0o600)
        cmdline += f" --vault-password-file {shlex.quote(f'{remote}/gitopsd/vault-password')}"
    root = run.workdir.resolve()
    fd = os.open(stream, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            ansible_runner.run(
                streamer="transmit",
                _output=out,
                private_data_dir=str(local),
                playbook=str(run.playbook.resolve().relative_to(root)),
                inventory=str(project / run.inventory.resolve().relative_to(root)),
                cmdline=cmdline,
                envvars=envvars,
                timeout=run.timeout,
                ident="run",
                quiet=True,
                settings={"suppress_ansible_output": True},
            )
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _stream(  # noqa: C901 (ansible-runner's streaming protocol: one branch per message kind)
    node: ExecutionNode,
    run: PlaybookRun,
    cancel: threading.Event,
    known_hosts: Path,
    stream: Path,
    remote: str,
) -> NodeRun:
    """ssh the stream to the node's worker and process what comes back; stop the remote run on cancel or timeout."""
    worker = shlex.join(
        [
            "env",
            f"{NODE_MARKER}={run.marker}",
            "setsid",
            "-w",
            "ansible-runner",
            "worker",
            "--private-data-dir",
            remote,
            "--delete",
        ]
    )
    reaper = shlex.join(["python3", "-c", REAPER, NODE_MARKER, run.marker, RUNS])
    command = f"{worker}; status=$?; {reaper}; exit $status"  # orphans of the run die with it, on the node too
    stats: dict[str, Any] | None = None
    no_hosts = False
    unreachable: dict[str, str] = {}
    changes: list[TaskChange] = []
    lines: list[str] = []
    final: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> bool:
        nonlocal stats, no_hosts
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "runner_on_ok" and reports_changed(event):
            changes.append(task_change(data, Path(f"{remote}/project")))
        if kind == "playbook_on_stats":
            stats = data
        elif kind == "playbook_on_no_hosts_matched":
            no_hosts = True
        elif kind == "runner_on_unreachable" and data.get("host"):
            unreachable[str(data["host"])] = str((data.get("res") or {}).get("msg", ""))
        if event.get("stdout"):
            lines.append(str(event["stdout"]))
        return False  # never written to a file named by the node (see the module's docstring)

    def on_status(data: dict[str, Any], runner_config: Any = None) -> None:
        final.update(status=data.get("status"), explanation=data.get("job_explanation"))

    stopped: list[str] = []
    done = threading.Event()
    log = run.data_dir / "ssh.log"
    env = {**os.environ, MARKER: run.marker}
    with open(stream, "rb") as source, open(log, "wb") as errors:
        proc = subprocess.Popen(
            ssh_argv(node, known_hosts, command),
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            start_new_session=True,
        )

        def watch() -> None:
            deadline = time.monotonic() + run.timeout + STREAM_GRACE
            while not done.wait(0.1):
                if cancel.is_set() or time.monotonic() > deadline:
                    stopped.append("canceled" if cancel.is_set() else "timeout")
                    kill_remote(node, known_hosts, run.marker)
                    proc.kill()
                    return

        watcher = threading.Thread(target=watch, name=f"node-{node.name}", daemon=True)
        watcher.start()
        assert proc.stdout is not None
        reader = _Stream(proc.stdout, run.data_dir / "artifacts" / "run")
        try:
            ansible_runner.run(
                streamer="process",
                _input=reader,
                private_data_dir=str(run.data_dir),
                ident="run",
                quiet=True,
                event_handler=on_event,
                status_handler=on_status,
            )
        finally:
            done.set()
            proc.stdout.close()
            proc.wait()
            watcher.join()
    status = final.get("status") or "failed"
    stdout = run.data_dir / "artifacts" / "run" / "stdout"
    if not reader.stdout and lines:  # canceled, or the node went away: what the events said
        stdout.parent.mkdir(parents=True, exist_ok=True)
        stdout.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if stopped:
        reason = f"run timed out on execution node {node.name}" if stopped[0] == "timeout" else "run was canceled"
        return NodeRun(RunOutcome(False, stopped[0], None, reason, {}, stdout if stdout.exists() else None), True)
    if status not in ("successful", "failed", "timeout", "canceled"):
        said = log.read_text(encoding="utf-8", errors="replace")
        if not reader.answered:  # nothing from the worker: ssh never got there, or the worker never started
            problem = connection_problem(node, said, proc.returncode)
            if not problem.untrusted and proc.returncode != 255:
                problem = NodeError(
                    f"execution node {node.name}: the worker did not start (exit code {proc.returncode}"
                    f"{': ' + said.strip().splitlines()[-1] if said.strip() else ''}): "
                    f"run `gitopsd node check {node.name}`",
                    down=True,
                )
            outcome = RunOutcome(False, "failed", proc.returncode, str(problem), permanent=problem.untrusted)
            return NodeRun(outcome, False, problem)
        detail = final.get("explanation") or (said.strip().splitlines() or [f"ssh exit code {proc.returncode}"])[-1]
        if stats is None or status == "error":
            problem = NodeError(f"unreachable node {node.name}: the run's result never came back ({detail})", down=True)
            return NodeRun(
                RunOutcome(False, "failed", proc.returncode, str(problem), stdout=stdout if stdout.exists() else None),
                True,
                problem,
            )
    ok, reason, hosts = judge(stats, no_hosts, status, reader.rc)
    permanent = False
    if stats is None and status == "failed" and reader.rc == 4:
        invalid = content_error(stdout, Path(f"{remote}/project"))
        if invalid:
            reason, permanent = f"invalid content: {invalid}", True
    keys = host_key_problems(unreachable, run.extravars)
    if keys:
        reason, permanent = f"{reason}: {'; '.join(keys)}", True
    return NodeRun(
        RunOutcome(ok, status, reader.rc, reason, hosts, stdout if stdout.exists() else None, permanent, tuple(changes)), True
    )


__all__ = [
    "NODE_MARKER",
    "NodeError",
    "NodeInfo",
    "NodeRun",
    "controller_runner_version",
    "kill_remote",
    "probe",
    "run_on_node",
    "ssh_argv",
    "version_problem",
]
