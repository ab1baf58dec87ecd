"""How a run uses SSH: host keys always checked, the service's keys lent through a per-run ssh-agent.

A run can use the daemon's keys, never read them; ssh refuses a host whose key is not trusted, and the run
says which host and the command that trusts it (`gitopsd hosts trust`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ..core.errors import GitopsdError
from .processes import MARKER

# ansible-runner's own settings, which a repository's ansible.cfg cannot change (environment variables win
# over ansible.cfg): its callback writes the events gitopsd judges, and host keys are always checked.
SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"  # Ansible's default ssh_args, kept


def ssh_envvars(known_hosts: Path | None) -> dict[str, str]:
    """Ansible settings that make ssh check host keys (ansible-runner turns checking off).

    With `known_hosts`, ssh accepts only the keys recorded there (and in /etc/ssh/ssh_known_hosts)
    and never writes to it. They go in ssh_args, which come first on ssh's command line, and ssh
    keeps the first value of an option: ssh_common_args or ssh_extra_args cannot turn checking off.
    """
    envvars = {"ANSIBLE_HOST_KEY_CHECKING": "True"}
    if known_hosts is not None:
        envvars["ANSIBLE_SSH_ARGS"] = (
            f"{SSH_ARGS} -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o UserKnownHostsFile={shlex.quote(str(known_hosts))}"
        )
    return envvars


_SSH_HOST = re.compile(r"(?:Host key for|host key is known for) (\S+?)(?: has changed| and you have)")


def host_key_problems(unreachable: dict[str, str], extravars: dict[str, str]) -> list[str]:
    """One line per host ssh refused for its host key: which host, where, and the command to trust it."""
    command = f"gitopsd hosts trust {extravars.get('gitopsd_env', 'ENV')}"
    if extravars.get("gitopsd_repo"):
        command += f" --repo {extravars['gitopsd_repo']}"
    problems = []
    for host, msg in sorted(unreachable.items()):
        if "Host key verification failed" not in msg:
            continue
        found = _SSH_HOST.search(msg)
        address = found.group(1) if found else "?"
        if address.startswith("[") and "]:" in address:
            address = address[1:].replace("]:", ":", 1)
        if "has changed" in msg or "IDENTIFICATION HAS CHANGED" in msg:
            what = (
                f"host key of {host} ({address}) changed: ssh refused to connect (someone may be intercepting "
                f"the connection, or the host was reinstalled), run `{command}` after checking it"
            )
        else:
            what = f"host key of {host} ({address}) is not trusted yet: ssh refused to connect, run `{command}` after checking it"
        problems.append(what)
    return problems


IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")  # the daemon's keys in ~/.ssh that a playbook run may use


class AgentError(GitopsdError):
    """The run's ssh-agent could not be started or would not take the service's key."""


def identity_files() -> list[Path]:
    """The daemon's SSH private keys (IDENTITIES in ~/.ssh) that exist."""
    ssh = Path(os.path.expanduser("~")) / ".ssh"
    return [ssh / name for name in IDENTITIES if (ssh / name).is_file()]


def start_agent(
    run_dir: Path, marker: str, run_as: tuple[int, int] | None, keys: list[Path]
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start an ssh-agent for one run, holding `keys`, its socket `<run_dir>/agent.sock`; return (process, socket).

    Like AWX's machine credentials: the run can use the keys, never read them. The agent runs as the
    run's user (ssh-agent answers only its own user and root), carries the run's marker in its
    environment and in its command line (ssh-agent makes its environment unreadable to the daemon's
    user), so the reaper finds it after a crash. Raise AgentError in one line saying what to do.
    """
    binary, adder = shutil.which("ssh-agent"), shutil.which("ssh-add")
    if binary is None or adder is None:
        raise AgentError(
            "ssh-agent and ssh-add are not installed, so the run cannot use the service's SSH key "
            f"{keys[0]}: install openssh-client (apt-get install openssh-client), then `gitopsd retry`"
        )
    socket_path = run_dir / "agent.sock"
    # Relative to the run's folder: a socket's path is limited to 107 bytes, a run's folder is not.
    argv = [binary, "-D", "-a", socket_path.name]
    if run_as is not None:
        argv = ["setpriv", f"--reuid={run_as[0]}", f"--regid={run_as[1]}", "--clear-groups", "--", *argv]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER: marker}
    log = run_dir / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [f"ssh-agent [{MARKER}={marker}]", *argv[1:]],
            executable=argv[0],
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while not socket_path.is_socket():
        if agent.poll() is not None or time.monotonic() > deadline:
            stop_agent(agent, socket_path)
            detail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["it did not start"]
            raise AgentError(f"the run's ssh-agent did not start ({detail[-1]}): run `gitopsd doctor` as root")
        time.sleep(0.01)
    add_env = {"PATH": env["PATH"], "SSH_AUTH_SOCK": socket_path.name, "SSH_ASKPASS_REQUIRE": "never"}
    for key in keys:
        while True:
            added, why = _add_key(adder, key, run_dir, add_env)
            # The socket is bound a moment before ssh-agent listens on it: refused in that gap, on a busy machine.
            if added is None or added.returncode == 0 or "Connection refused" not in why or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if added is None or added.returncode != 0:
            stop_agent(agent, socket_path)
            raise AgentError(
                f"the service's SSH key {key} cannot be given to the run's ssh-agent ({why}): the key must "
                "be readable by the daemon and have no passphrase (ssh-keygen -p -N '' -f KEY); "
                "then `gitopsd retry`"
            )
    return agent, socket_path


def _add_key(adder: str, key: Path, run_dir: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[bytes] | None, str]:
    """`ssh-add KEY` to the run's agent: (its result, the last line it said), or (None, why) when it hung."""
    try:
        added = subprocess.run(
            [adder, "-q", str(key)],
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "ssh-add did not answer in 10s"
    return added, (added.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {added.returncode}"])[-1]


def stop_agent(agent: subprocess.Popen[bytes], socket_path: Path) -> None:
    """End a run's ssh-agent and remove its socket: the keys are gone from memory with it."""
    if agent.poll() is None:
        agent.kill()
    agent.wait()
    socket_path.unlink(missing_ok=True)
