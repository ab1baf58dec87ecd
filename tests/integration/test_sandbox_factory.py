"""The tests' Sandbox (tests/support.py): a copy of a template is what a sandbox made the long way would be.

Real: git, the hook, `gitopsd install-hooks` for the template and for the sandbox made the long way. Nothing faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from tests.support import ROOT, Daemon, Sandbox, git, shared_templates

ENVS = {"qa": ["qa-1"], "staging": ["staging-1"]}


def test_a_copied_sandbox_has_what_install_hooks_gives_one_made_the_long_way_with_its_own_paths(short_tmp: Path) -> None:
    copied = Sandbox(short_tmp / "copied", ENVS)
    long = Sandbox(short_tmp / "long", ENVS, from_template=False)

    def settings(box: Sandbox) -> str:  # each install makes its own push-certificate nonce seed (a secret)
        text = (box.repo / "config").read_text().replace(str(box.root), "ROOT")
        return re.sub(r"certNonceSeed = [0-9a-f]+", "certNonceSeed = SEED", text)

    assert settings(copied) == settings(long)
    assert (copied.repo / "gitopsd-gate.stamp").read_text() == (long.repo / "gitopsd-gate.stamp").read_text().replace(
        str(long.root), str(copied.root)
    )
    assert (copied.repo / "hooks" / "pre-receive").read_bytes() == (long.repo / "hooks" / "pre-receive").read_bytes()
    assert git(copied.work, "remote", "get-url", "origin").stdout.strip() == str(copied.repo)
    assert sorted(p.name for p in copied.state.iterdir()) == sorted(p.name for p in long.state.iterdir())
    for box in (copied, long):
        assert git(box.repo, "for-each-ref", "--format=%(refname)").stdout.split() == [
            "refs/heads/main",
            "refs/heads/qa",
            "refs/heads/staging",
        ]


def test_sandboxes_copied_from_one_template_judge_pushes_each_by_its_own_config(short_tmp: Path) -> None:
    strict = Sandbox(short_tmp / "strict", ENVS)
    direct = Sandbox(short_tmp / "direct", ENVS, env_options={"staging": {"promote_from": "main"}})
    for box in (strict, direct):
        box.write("a.txt", "1")
        box.commit("one")
        box.push("main")
    refused = strict.push("main:staging", check=False)
    assert refused.returncode != 0 and "staging only takes trees that were deployed and verified in qa" in refused.stderr
    direct.push("main:staging")
    assert direct.head("staging") == direct.head("main")


def test_status_in_this_process_says_what_the_console_script_says(short_tmp: Path) -> None:
    box = Sandbox(short_tmp, ENVS)
    assert box.status() == {row["env"]: row for row in json.loads(box.cli("status", "--json").stdout)}
    proc = box.command("history", "nosuchenv", check=False)
    assert (proc.returncode, proc.stdout) == (1, "") and "no environment named 'nosuchenv'" in proc.stderr, proc.stderr


def test_a_converged_sandbox_starts_its_daemon_in_sync_and_deploys_the_next_push_as_any_other(short_tmp: Path) -> None:
    box = Sandbox(short_tmp, ENVS, converged=True)
    first = box.head("qa")
    with Daemon(box) as daemon:
        for env in ENVS:
            daemon.wait_state(env, "in-sync", first)
        assert sorted(d["env"] for d in box.history()) == sorted(ENVS)  # the template's deployments, one each
        with contextlib.closing(sqlite3.connect(box.state / "state.db")) as db:
            workdirs = [Path(w) for (w,) in db.execute("SELECT workdir FROM deployments")]
        assert len(workdirs) == 2 and all(w.is_relative_to(box.state) and w.is_dir() for w in workdirs), workdirs
        box.write("a.txt", "1")
        second = box.commit("two")
        box.push("main", "main:qa")
        daemon.wait_result("qa", second, "succeeded")
        assert box.runs() == [f"qa-1.3: {second} deploy qa notify=none"]  # nothing ran at start
    proc = box.push("main:staging", check=False)
    assert proc.returncode == 0, proc.stderr  # the promotion gate reads the copy's ledger


def test_a_converged_sandbox_whose_settings_name_files_in_its_own_root_gets_them_named_in_its_root(short_tmp: Path) -> None:
    write = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + chr(10))"
    notify = {"command": [sys.executable, "-c", write, str(short_tmp / "events.jsonl")]}
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, env_options={"qa": {"notify": notify}}, converged=True)
    assert yaml.safe_load(box.config.read_text())["repositories"][0]["environments"][0]["notify"] == notify
    with Daemon(box) as daemon:
        daemon.wait_state("qa", "in-sync", box.head("qa"))
        box.write("FAIL", "all")
        broken = box.commit("broken")
        box.push("main", "main:qa")
        daemon.wait_result("qa", broken, "failed")
        events = daemon.wait_for(
            lambda: (short_tmp / "events.jsonl").exists() and (short_tmp / "events.jsonl").read_text().split("\n"),
            60,
            "the failed deployment's notification",
        )
    assert [json.loads(line)["commit"] for line in events if line.strip()][:1] == [broken], events


def test_the_workers_of_one_test_run_build_a_template_once_and_share_it(tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    log = tmp_path / "built"
    build = (
        "import sys; from tests.support import _built_once; "
        "print(_built_once('t', 'k', lambda root: open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))))"
    )
    env = {**os.environ, "PYTEST_XDIST_TESTRUNUID": run}
    try:
        workers = [
            subprocess.Popen([sys.executable, "-c", build, str(log), name], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for name in ("gw0", "gw1")
        ]
        folders = {worker.communicate(timeout=60)[0].strip() for worker in workers}
        assert [worker.returncode for worker in workers] == [0, 0]
        assert len(folders) == 1 and Path(folders.pop()).parent == shared_templates(run)
        assert len(log.read_text().splitlines()) == 1  # one worker built it, the other waited for it
    finally:
        shutil.rmtree(shared_templates(run), ignore_errors=True)
