"""The tests' Sandbox (tests/support.py): a copy of a template is what a sandbox made the long way would be.

Real: git, the hook, `gitopsd install-hooks` for the template and for the sandbox made the long way. Nothing faked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support import Sandbox, git

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
