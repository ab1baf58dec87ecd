"""What hooks/pre-receive decides alone, without starting Python: pushes with nothing to judge (issue 28).

The hook's Python is replaced by a script that leaves a mark and then runs the real one, so each
test sees whether a real `git push` started Python, and what it answered.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gitopsd.installers import install_hooks
from tests.integration.test_hooks import _run_hook_entry
from tests.support import Daemon, Sandbox, git


def _watch_python(sandbox: Sandbox) -> Path:
    """Point the hook's recorded Python at a script that marks each start; return the mark's path."""
    mark = sandbox.root / "python-started"
    script = sandbox.root / "python-watched"
    script.write_text(f'#!/bin/sh\necho x >> {mark}\nexec {sys.executable} "$@"\n')
    script.chmod(0o755)
    git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.python", str(script))
    return mark


def _started(mark: Path) -> bool:
    started = mark.exists()
    mark.unlink(missing_ok=True)
    return started


@pytest.fixture
def sandbox(short_tmp):
    return Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["staging-1"]})


def test_a_feature_branch_push_starts_no_python_and_a_push_touching_qa_still_does(sandbox):
    mark = _watch_python(sandbox)
    sandbox.write("a.txt", "1")
    commit = sandbox.commit("one")
    assert sandbox.push("main", "main:feature/x", "main:refs/tags/v1").returncode == 0
    assert not _started(mark)
    assert sandbox.head("feature/x") == commit
    proc = sandbox.push("main:qa")
    assert _started(mark)
    assert "gitopsd: the daemon is not running; qa will be deployed when it is back" in proc.stderr
    assert sandbox.head("qa") == commit


@pytest.mark.parametrize(
    "refspec, said",
    [
        ("main:refs/tags/qa", "its name shadows the environment branch qa"),
        ("main:refs/heads/refs/heads/staging", "its name shadows the environment branch staging"),
        ("main:refs/tags/rc/1", "release candidates (rc/* tags) are made by gitopsd only"),
        ("main:refs/notes/gitopsd", "refs/notes/gitopsd is gitopsd's own record"),
        ("main:refs/replace/" + "0" * 40, "replace refs (refs/replace/*) are not accepted"),
    ],
)
def test_a_push_beside_a_feature_branch_that_the_gate_refuses_still_goes_to_python_and_is_refused(sandbox, refspec, said):
    mark = _watch_python(sandbox)
    proc = sandbox.push("main:feature/y", refspec, check=False)
    assert proc.returncode == 1 and said in proc.stderr
    assert _started(mark)


def test_a_config_edit_adding_an_environment_is_policed_before_the_daemon_reloads(sandbox):
    mark = _watch_python(sandbox)
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    sandbox.push("main:production")  # not an environment yet: nothing to judge
    assert not _started(mark)
    sandbox.envs["production"] = ["production-1"]
    sandbox.write_config()
    sandbox.write("b.txt", "2")
    sandbox.commit("two")
    proc = sandbox.push("main:production", check=False)
    assert _started(mark)
    assert proc.returncode == 1 and "remote: gitopsd: push to refs/heads/production refused" in proc.stderr
    # The push that read the new config recorded it for the shim (gate/shimstamp.py), as the daemon does too.
    assert sandbox.push("main:feature/z").returncode == 0 and not _started(mark)
    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: "gitopsd started" in daemon.log(), what="the start")
        sandbox.write("c.txt", "3")
        sandbox.commit("three")
        assert sandbox.push("main:feature/z").returncode == 0
        assert not _started(mark)
        # The daemon judges it (daemon/judge.py) with the file as it is now: refused, and no Python started.
        proc = sandbox.push("main:production", check=False)
        assert proc.returncode == 1 and "remote: gitopsd: push to refs/heads/production refused" in proc.stderr
        assert not _started(mark)


def test_a_repository_whose_approvals_need_to_know_who_pushed_main_runs_python_for_every_push(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, env_options={"qa": {"approvals": {"required": 1, "approvers": ["carol"]}}})
    mark = _watch_python(sandbox)
    assert sandbox.push("main:feature/x").returncode == 0
    assert _started(mark)


def test_a_repository_whose_signatures_rule_guards_main_runs_python_for_a_push_to_main(short_tmp):
    signers = short_tmp / "allowed_signers"
    signers.write_text("")
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={
            "repositories": [
                {
                    "name": "shop",
                    "path": str(short_tmp / "shop.git"),
                    "signatures": {"allowed_signers": str(signers)},
                    "environments": [{"name": "qa"}],
                }
            ]
        },
    )
    mark = _watch_python(sandbox)
    sandbox.write("a.txt", "unsigned")
    sandbox.commit("unsigned")
    pushed = sandbox.push("main", check=False)
    assert _started(mark)
    assert pushed.returncode != 0 and "has no signature" in pushed.stderr, pushed.stderr  # main's rule


def test_after_a_config_edit_the_hook_parses_the_yaml_once_and_later_pushes_read_its_own_copy(sandbox):
    sandbox.write("a.txt", "1")
    new = sandbox.commit("one")
    sandbox.push("main")
    old = sandbox.head("qa")
    sandbox.env_options["qa"] = {"windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}]}
    sandbox.write_config()
    for parsed in (True, False):
        proc, modules = _run_hook_entry(sandbox, old, new, "refs/heads/qa")
        assert proc.returncode == 1
        assert "rule: promotions to qa are closed now: the deploy window is closed: inside 'freeze'" in proc.stderr
        assert ("yaml" in modules) is parsed
    # The next edit is obeyed at once: the copy is of one version of the file only.
    sandbox.env_options["qa"] = {}
    sandbox.write_config()
    proc, modules = _run_hook_entry(sandbox, old, new, "refs/heads/qa")
    assert proc.returncode == 0 and "yaml" in modules


def test_a_hook_installed_without_its_python_runs_gitopsd_hook_which_reads_the_config_and_obeys_it(sandbox):
    """`gitopsd hook pre-receive` (cli/server.py) hands the gate config.load, as hook_entry does."""
    git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "--unset", "gitopsd.python")
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    sandbox.push("main")
    sandbox.env_options["qa"] = {"windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}]}
    sandbox.write_config()
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    assert "rule: promotions to qa are closed now: the deploy window is closed: inside 'freeze'" in proc.stderr


def test_a_config_put_in_place_with_an_older_mtime_is_policed_too(sandbox):
    mark = _watch_python(sandbox)
    before = sandbox.config.stat().st_mtime_ns
    sandbox.envs["production"] = ["production-1"]
    sandbox.write_config()  # as `cp -p` or `tar x` of a file edited earlier leaves it
    os.utime(sandbox.config, ns=(before - 10**9, before - 10**9))
    proc = sandbox.push("main:production", check=False)
    assert _started(mark)
    assert proc.returncode == 1 and "remote: gitopsd: push to refs/heads/production refused" in proc.stderr


def test_a_chained_hook_still_runs_first_on_the_same_input_and_can_refuse_a_feature_branch(sandbox):
    mark = _watch_python(sandbox)
    seen = sandbox.root / "chained-input"
    chained = sandbox.repo / "hooks" / "pre-receive.chained"
    chained.write_text(
        f'#!/bin/sh\ncat > {seen}\ngrep -q refs/heads/wip {seen} && {{ echo "no wip branches" >&2; exit 1; }}\nexit 0\n'
    )
    chained.chmod(0o755)
    old, new = sandbox.head("main"), sandbox.commit("one")
    assert sandbox.push("main:feature/x").returncode == 0
    assert seen.read_text() == f"{'0' * 40} {new} refs/heads/feature/x\n"
    assert not _started(mark)
    proc = sandbox.push("main:wip", check=False)
    assert proc.returncode == 1 and "no wip branches" in proc.stderr
    assert not _started(mark)
    sandbox.push("main")
    assert seen.read_text() == f"{old} {new} refs/heads/main\n"


def test_the_daemon_reads_a_repositorys_hook_settings_from_its_git_config_as_git_does_without_starting_git(sandbox, monkeypatch):
    def by_git() -> dict[str, str]:
        out = git(sandbox.root, "config", "--file", str(sandbox.repo / "config"), "--get-regexp", r"^gitopsd\.").stdout
        return {key: value for key, _, value in (line.partition(" ") for line in out.splitlines())}

    wanted = by_git()
    assert wanted["gitopsd.config"] == str(sandbox.config.resolve())
    with monkeypatch.context() as m:
        m.setenv("PATH", str(sandbox.root / "no-git-here"))  # a thousand repositories, a thousand git runs spared
        assert install_hooks.recorded_settings(sandbox.repo) == wanted
    # What only git reads right is left to git: a quoted value, a section spelled otherwise.
    git(sandbox.root, "config", "--file", str(sandbox.repo / "config"), "gitopsd.note", "a # b")
    assert install_hooks.recorded_settings(sandbox.repo) == by_git() == {**wanted, "gitopsd.note": "a # b"}
    (sandbox.repo / "config").write_text((sandbox.repo / "config").read_text() + "[GitOpsD]\n\tdatabase = /elsewhere\n")
    assert install_hooks.recorded_settings(sandbox.repo) == by_git()
    assert by_git()["gitopsd.database"] == "/elsewhere"
