"""The daemon judges pushes for the hook's shim (daemon/judge.py, issue 28): no Python starts, and nothing else changes.

Real `git push`es through the installed shim into a real bare repository, a real daemon process answering on its
judge socket, and git's own credential-cache client as the shim uses it. The hook's Python is replaced by a script
that leaves a mark and runs the real one, so each test sees which of the two judged.
"""

from __future__ import annotations

import os
import pwd
import subprocess

from tests.integration.test_hook_shim import _started, _watch_python
from tests.support import Daemon, Sandbox, git, run


def _orphan(sandbox: Sandbox) -> str:
    """A commit of main's tree with no parent: a push of it to qa rewrites qa's history."""
    return git(sandbox.work, "commit-tree", "-m", "rewritten", "HEAD^{tree}").stdout.strip()


def test_with_the_daemon_up_a_push_starts_no_python_and_hears_word_for_word_what_the_hooks_python_says(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["staging-1"]}, converged=True)
    mark = _watch_python(sandbox)
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    sandbox.push("main")
    refused = ["main:staging", "main:refs/tags/qa", f"{_orphan(sandbox)}:refs/heads/qa"]
    by_python = {}
    for refspec in refused:  # the daemon is down: the hook's Python judges
        proc = sandbox.push("-f", refspec, check=False)
        assert proc.returncode == 1 and _started(mark), proc.stderr
        by_python[refspec] = proc.stderr
    with Daemon(sandbox) as daemon:
        daemon.wait_ready()
        for refspec in refused:
            proc = sandbox.push("-f", refspec, check=False)
            assert proc.returncode == 1 and not _started(mark), proc.stderr
            assert proc.stderr == by_python[refspec]
        # A new commit straight to qa: its objects are in the push's quarantine, which the daemon reads.
        sandbox.write("a.txt", "2")
        new = sandbox.commit("two")
        proc = run(
            ["git", "push", "origin", "main", "main:qa"], cwd=sandbox.work, env=sandbox.environ(GITOPSD_USER="alice"), check=False
        )
        assert proc.returncode == 0 and not _started(mark), proc.stderr
        assert "gitopsd: qa will be deployed as soon as this push completes" in proc.stderr
        row = daemon.wait_result("qa", new, "succeeded", timeout=120)
        # The transport's identity, as the hook's Python would take it (the pusher owns the repository here), beside
        # the kernel's word on who connected.
        assert (row["trigger"], row["actor"]) == ("push", f"alice (via {pwd.getpwuid(os.getuid()).pw_name})")
        proc = sandbox.push("main:staging")  # verified on qa now: the promotion is accepted, by the daemon
        assert proc.returncode == 0 and not _started(mark)
        daemon.wait_result("staging", new, "succeeded", timeout=120)


def _ask(judge: str, request: str, cwd: str) -> str:
    """What the judge answers REQUEST, through the client the shim uses."""
    return subprocess.run(
        ["git", "credential-cache", "--socket", judge, "get"], input=request, capture_output=True, text=True, cwd=cwd, timeout=60
    ).stdout


def test_the_judge_answers_only_pushes_to_its_own_repositories_with_their_own_quarantine(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    head = sandbox.head("qa")
    config = str(sandbox.config.resolve())
    database = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.database").stdout.strip()
    judge = str(sandbox.root / "run" / "judge.sock")
    names = "GL_USER GITOPSD_USER REMOTE_USER"

    def request(**fields: str) -> str:
        values = {"config": config, "database": database, "repository": str(sandbox.repo), "names": names, **fields}
        lines = "".join(f"{key}={value}\n" for key, value in values.items())
        return f"gitopsd-judge-1\n{lines}input\n{head} {head} refs/heads/main\n"

    other = short_tmp / "other.yml"
    other.write_text(sandbox.config.read_text())
    outside = short_tmp / "elsewhere" / "tmp_objdir-incoming-x"
    outside.mkdir(parents=True)
    objects = str(sandbox.repo / "objects")
    with Daemon(sandbox) as daemon:
        daemon.wait_ready()
        assert _ask(judge, request(), str(sandbox.repo)).startswith("gitopsd-judge accept\n")
        for wrong in (
            {"config": str(other)},  # another configuration's repository
            {"database": str(short_tmp / "other.db")},
            {"repository": str(short_tmp)},  # not a repository of this daemon
            {"quarantine": str(outside), "objects": str(outside), "alternates": objects},  # not this repository's
            {"quarantine": objects, "objects": objects, "alternates": objects},  # the repository's own objects
            {"names": "GL_USER"},  # the identity variables the config names are not all sent
            {"unknown": "x"},
        ):
            assert _ask(judge, request(**wrong), str(sandbox.repo)) == "", wrong
        assert _ask(judge, "gitopsd-judge-1\ngarbage\n", str(sandbox.repo)) == ""
        assert "Traceback" not in daemon.log()
