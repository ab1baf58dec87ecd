"""What a push through the hook costs beyond a push with none (issue 28): the processes it starts, counted by git.

Every git process on a push logs its start with its whole command line to GIT_TRACE2_EVENT's file: the
pushing git, receive-pack and its helpers, the shim's and the hook's. gitopsd's own git runs carry
`core.hooksPath=/dev/null` (base/gitcli.py).
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_hook_shim import _started, _watch_python
from tests.support import Sandbox, git, run

pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]})


def _traced_push(sandbox: Sandbox, *refspecs: str) -> tuple[int, str, list[str]]:
    """Push with git's trace on; return (exit code, stderr, the command lines of the git processes started)."""
    trace = sandbox.root / "git-trace"
    trace.unlink(missing_ok=True)
    proc = run(
        ["git", "push", "origin", *refspecs], cwd=sandbox.work, check=False, env=sandbox.environ(GIT_TRACE2_EVENT=str(trace))
    )
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    started = [" ".join(["git", *e["argv"][1:]]) for e in events if e["event"] == "start"]
    return proc.returncode, proc.stderr, started


def _gitopsds(started: list[str]) -> list[str]:
    return [line for line in started if "core.hooksPath=/dev/null" in line]


def test_a_push_moving_an_environment_branch_forward_is_judged_with_one_git_process(sandbox):
    sandbox.write("a.txt", "1")
    commit = sandbox.commit("one")
    code, err, started = _traced_push(sandbox, "main", "main:qa")
    assert code == 0, err
    assert sandbox.head("qa") == commit
    assert len(_gitopsds(started)) == 1, _gitopsds(started)


def test_a_force_push_to_an_environment_branch_is_still_refused_after_a_long_walk(sandbox):
    """The one git run walks at most a bounded part of the history; an unrelated one is told apart all the same."""
    orphan = sandbox.root / "orphan"
    git(sandbox.root, "init", "--quiet", "--initial-branch=other", str(orphan))
    stream = "".join(
        f"commit refs/heads/other\ncommitter A <a@example.com> {1_600_000_000 + i} +0000\ndata 2\nc\n"
        f"M 100644 inline f\ndata {len(str(i))}\n{i}\n\n"
        for i in range(1500)
    )
    run(["git", "fast-import", "--quiet"], cwd=orphan, input=stream)
    git(sandbox.work, "fetch", "--quiet", str(orphan), "other:other")
    before = sandbox.head("qa")
    code, err, _started = _traced_push(sandbox, "--force", "other:qa")
    assert code == 1
    assert "rule: environment branches only move forward (no force-push, no rewritten history)" in err
    assert sandbox.head("qa") == before


def test_the_shim_reads_the_hooks_settings_from_the_repositorys_config_without_starting_git(sandbox):
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    code, err, started = _traced_push(sandbox, "main", "main:qa")
    assert code == 0, err
    assert not [line for line in started if line.startswith("git config")], started


def test_the_shim_leaves_a_repository_config_it_cannot_read_plainly_to_git(sandbox):
    """A second [gitopsd] section spelled otherwise: git's answer (the last value) is the one the shim uses."""
    mark = sandbox.root / "python-argv"
    script = sandbox.root / "python-watched"
    python = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.python").stdout.strip()
    script.write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexec {python} "$@"\n')
    script.chmod(0o755)
    config = sandbox.repo / "config"
    database = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.database").stdout.strip()
    config.write_text(config.read_text() + f"[GitOpsD]\n\tpython = {script}\n")
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    code, err, started = _traced_push(sandbox, "main", "main:qa")
    assert code == 0, err
    assert [line for line in started if line.startswith("git config")]
    assert mark.read_text().split() == [
        "-I",
        "-S",
        git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.entry").stdout.strip(),
        "--config",
        str(sandbox.config.resolve()),
        "--database",
        database,
    ]


def test_after_a_config_edit_the_push_that_reads_it_lets_the_next_push_of_main_alone_start_no_python(sandbox):
    mark = _watch_python(sandbox)
    sandbox.envs["production"] = ["production-1"]
    sandbox.write_config()  # an edit the daemon has not read: the shim's stamp is of the file before it
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    assert sandbox.push("main").returncode == 0
    assert _started(mark)
    sandbox.write("a.txt", "2")
    sandbox.commit("two")
    assert sandbox.push("main").returncode == 0
    assert not _started(mark)
    # The stamp the hook wrote is of the edited file: production is an environment branch now.
    proc = sandbox.push("main:production", check=False)
    assert _started(mark)
    assert proc.returncode == 1 and "remote: gitopsd: push to refs/heads/production refused" in proc.stderr


def test_the_stamp_a_pushers_hook_rewrites_is_readable_by_every_other_pushers_shim_whatever_its_umask(sandbox):
    sandbox.envs["production"] = ["production-1"]
    sandbox.write_config()
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    run(["sh", "-c", "umask 077 && exec git push --quiet origin main"], cwd=sandbox.work, env=sandbox.environ())
    stamp = sandbox.repo / "gitopsd-gate.stamp"
    assert stamp.read_text().split("\n")[1] == "qa staging production"
    assert stamp.stat().st_mode & 0o777 == 0o644
