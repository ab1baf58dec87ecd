"""Reaping a run: every process of it is gone when reap returns, also one that dropped the run's marker.

Real processes (sh, env, sleep) carrying a real marker; nothing faked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from gitopsd.adapters import runner


def sleeping(seconds: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:2] == ["sleep", seconds]:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_process_that_cleared_its_environment_is_reaped_with_the_run_that_started_it():
    marker = f"reap-test-{os.getpid()}-{time.monotonic_ns()}"
    seconds = str(600 + os.getpid() % 97)  # a sleep no one else runs
    parent = subprocess.Popen(
        ["sh", "-c", f"env -i sleep {seconds} & exec sleep {int(seconds) + 1}"],
        env={**os.environ, runner.MARKER: marker},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not sleeping(seconds) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleeping(seconds), "the unmarked sleep never started"
        assert runner.reap(marker, grace=1.0) >= 2
        assert not sleeping(seconds), "a process of the run is alive after reap returned"
        assert not runner.processes_of(marker)
    finally:
        for proc in sleeping(seconds):
            proc.kill()
        parent.kill()
        parent.wait()


def test_a_process_of_the_run_that_became_a_zombie_nobody_collects_does_not_hold_reap_for_its_grace_time():
    marker = f"reap-test-{os.getpid()}-{time.monotonic_ns()}"
    seconds = str(700 + os.getpid() % 97)
    # An unmarked parent (not of the run, so it lives on) that never collects its marked child: killed, the child
    # stays a zombie. Ended all the same, it must not hold reap.
    starter = (
        f"import os, subprocess, sys, time; child = subprocess.Popen(['sleep', '{seconds}'], "
        f"env={{**os.environ, {runner.MARKER!r}: {marker!r}}}); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not sleeping(seconds) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleeping(seconds), "the run's sleep never started"
        started = time.monotonic()
        assert runner.reap(marker, grace=3.0) == 1
        assert time.monotonic() - started < 2.0
        assert not sleeping(seconds) and not runner.processes_of(marker)
    finally:
        for proc in sleeping(seconds):
            proc.kill()
        parent.kill()
        parent.wait()
