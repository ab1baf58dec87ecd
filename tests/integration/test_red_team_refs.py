"""Refs a developer may push that would hurt everyone else: a branch in an environment's place, HEAD, absurd names.

Real: a bare repository with the installed pre-receive hook, real `git push` from a clone, git's own ref store.
"""

from __future__ import annotations

import pytest

from tests.integration.test_hook_trust import push
from tests.support import git

pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "production": ["production-1"]})


def _stamped(sandbox) -> None:
    """The shim (hooks/pre-receive) decides feature branches and tags alone while its stamp is fresh: these names it
    must hand on to be judged."""
    assert (sandbox.repo / "gitopsd-gate.stamp").read_text().split("\n")[1] == "qa production"


def test_the_hooks_judge_refuses_a_branch_below_an_environment_not_yet_created_so_it_can_still_be_made(sandbox):
    git(sandbox.root, "--git-dir", str(sandbox.repo), "branch", "-D", "production")  # configured, not made yet
    _stamped(sandbox)
    code, said = push(sandbox, "origin", "main:production/hotfix")
    remote = [line for line in said.splitlines() if line.startswith("remote: gitopsd")]
    assert code == 1 and len(remote) == 1, said
    assert remote[0].startswith("remote: gitopsd: push to refs/heads/production/hotfix refused: its name shadows")
    refs = git(sandbox.root, "--git-dir", str(sandbox.repo), "for-each-ref", "--format=%(refname)").stdout.split()
    assert "refs/heads/production/hotfix" not in refs
    # Names that only begin like an environment's are anybody's; one that got in some other way may be deleted.
    assert push(sandbox, "origin", "main:production-hotfix", "main:qa-x")[0] == 0
    git(sandbox.root, "--git-dir", str(sandbox.repo), "branch", "qa2/x", "main")
    assert push(sandbox, "origin", ":qa2/x")[0] == 0


def test_the_hooks_judge_refuses_a_branch_or_tag_named_head_saying_what_to_do_instead(sandbox):
    _stamped(sandbox)
    for ref in ("refs/heads/HEAD", "refs/tags/HEAD", "refs/heads/HEAD/x"):
        code, said = push(sandbox, "origin", f"main:{ref}")
        assert code == 1, said
        assert "HEAD is not a name for a branch or a tag" in said and "git push origin HEAD:refs/heads/<name>" in said
    assert "HEAD" not in git(sandbox.root, "--git-dir", str(sandbox.repo), "for-each-ref", "--format=%(refname)").stdout


def test_a_very_long_ref_name_is_refused_by_git_in_its_own_words_and_lands_nowhere(sandbox):
    ref = "refs/heads/" + "/".join(["x" * 200] * 25)  # 5 kB: longer than a path may be
    code, said = push(sandbox, "origin", f"main:{ref}")
    assert code != 0
    assert "Traceback" not in said
    assert ref not in git(sandbox.root, "--git-dir", str(sandbox.repo), "for-each-ref", "--format=%(refname)").stdout


def test_a_ref_name_with_characters_a_terminal_acts_on_is_named_in_the_refusal_by_their_escapes(sandbox):
    # Git refuses ESC and the other C0 controls in ref names, not C1's CSI (U+009B) nor a right-to-left override.
    ref = "refs/heads/production/\u009b2J\u202egnp.exe"
    code, said = push(sandbox, "origin", f"main:{ref}")
    remote = "\n".join(line for line in said.splitlines() if line.startswith("remote:"))
    assert code == 1 and "push to refs/heads/production/\\x9b2J\\u202egnp.exe refused" in remote, said
    assert "\u009b" not in remote and "\u202e" not in remote
