"""The processes of a run: the marker each carries, and finding and reaping every one of them (psutil lives here).

Every process a run starts carries the run's marker in its environment (or its command line), so that all of
them can be found and reaped, even after the daemon itself was killed and restarted.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil

MARKER = "GITOPSD_DEPLOYMENT"
# Variables that belong to the daemon's own supervisor, never to Ansible.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def path_with_interpreter_bin() -> str:
    """PATH with the folder of this Python first, so the matching ansible-playbook is found."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return path if path.split(":")[0] == bindir else f"{bindir}:{path}"


def scrub_environment() -> None:
    """Drop the supervisor's variables from this process so no child ever inherits them."""
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)


def processes_of(marker: str, also: str | None = None) -> list[psutil.Process]:
    """Every live process carrying this deployment's marker (or naming `also` in its command line).

    The marker is in a process's environment, or in its command line where the environment cannot be
    read (the run's ssh-agent hides its own).
    """
    wanted = marker
    named = f"{MARKER}={marker}]"
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            try:
                mine = proc.environ().get(MARKER) == wanted
            except psutil.AccessDenied:
                mine = False
            if mine or (also and also in " ".join(proc.cmdline())) or named in " ".join(proc.cmdline()[:1]):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def reap(marker: str, grace: float = 2.0, also: str | None = None, settle: float = 10.0) -> int:
    """Terminate, then kill, every process of a deployment, until none is left. Return how many there were.

    A run counts as reaped only when no process of it remains: what it started while being killed, and what
    dropped the marker from its environment but is still a descendant of one that has it (a sandbox's pid 1,
    whose end takes its whole pid namespace with it), are looked for again; `settle` seconds at most."""
    seen: set[int] = set()
    deadline = time.monotonic() + 2 * grace + settle
    while True:
        procs = _with_descendants(processes_of(marker, also))
        if not procs:
            break
        seen.update(proc.pid for proc in procs)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        alive = _wait_gone(procs, grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        _wait_gone(alive, max(0.1, min(grace, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    return len(seen)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for `procs` to end; return those still running. A zombie has ended (a sandbox's pid 1
    becomes one only after its namespace is empty), whether or not its parent collects it."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                continue
        if not alive or time.monotonic() >= deadline:
            return alive
        procs = alive
        time.sleep(0.02)


def _with_descendants(procs: list[psutil.Process]) -> list[psutil.Process]:
    """`procs` and every live descendant of them (zombies are gone already: nothing to wait for)."""
    found = {proc.pid: proc for proc in procs}
    for proc in procs:
        try:
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    live = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc)
        except psutil.Error:
            continue
    return live
