"""What the hook believes: who pushed (the transport's variables only from the transport's account), which refs
may shadow an environment branch (none), and which pushes go through while the config cannot be read.

Real: bare repositories with the installed hook, `git push` from a clone, the snapshot the hook reads.
The repository's owner is changed to another uid (no user needed) to make the pusher someone other than
the transport's account, with `safe.directory` in a global git config of the test's own (GIT_CONFIG_GLOBAL).
"""

from __future__ import annotations

import os
import pwd

import pytest

from tests.support import Sandbox, git, run

FREEZE = {"windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}], "override_by": ["alice"]}
OTHER_UID = 54329  # the repository's owner: an account other than the one pushing here


pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]}, env_options={"qa": FREEZE})


def push(sandbox: Sandbox, *args: str, **env: str) -> tuple[int, str]:
    safe = sandbox.root / "gitconfig"  # git's local transport drops GIT_CONFIG_COUNT, not a global file
    safe.write_text("[safe]\n\tdirectory = *\n")
    proc = run(["git", "push", *args], cwd=sandbox.work, check=False, env=sandbox.environ(GIT_CONFIG_GLOBAL=str(safe), **env))
    return proc.returncode, proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the repository to another uid needs root")
def test_a_local_push_naming_someone_in_gitopsd_user_is_its_unix_user_and_gets_none_of_their_overrides(sandbox):
    me = pwd.getpwuid(os.getuid()).pw_name
    sandbox.write("a.txt", "hotfix")
    commit = sandbox.commit("hotfix")
    sandbox.push("main")
    os.chown(sandbox.repo, OTHER_UID, -1)  # pushed through the file system by someone not the transport's account
    try:
        code, said = push(
            sandbox,
            "-o",
            "override=outage",
            "origin",
            "main:qa",
            GITOPSD_USER="alice",
            GL_USER="alice",
            SSH_CONNECTION="10.0.0.9 5000 10.0.0.1 22",
        )
        assert code == 1 and f"{me} may not override it" in said, said
        assert "alice may not" not in said and "override by alice" not in said
        assert sandbox.head("qa") != commit
    finally:
        os.chown(sandbox.repo, os.getuid(), -1)
    # The transport's account (sshd with `gitopsd git-shell alice`, Gitolite) owns the repository: its variable counts
    # (alice may override, though not alone: a second person confirms, docs/change-control.md).
    code, said = push(sandbox, "-o", "override=outage", "origin", "main:qa", GITOPSD_USER="alice")
    assert code == 1 and "alice may override qa's deploy windows, with a second identity confirming" in said, said
    assert sandbox.head("qa") != commit


def test_feature_branches_and_tags_go_through_while_the_config_cannot_be_read_and_environment_refs_do_not(sandbox):
    sandbox.config.write_text(sandbox.config.read_text() + "  - oops: [unclosed\n")  # an edit gone wrong
    sandbox.write("f.txt", "feature")
    sandbox.commit("feature")
    code, said = push(sandbox, "origin", "main:feature/x", "main:refs/tags/v1.0")
    assert code == 0, said
    assert "configuration cannot be read just now; this push touches no environment branch, so it goes through" in said
    assert git(sandbox.work, "ls-remote", "origin", "feature/x").stdout.strip()
    for refspec in (
        "main:qa",
        "main:staging",
        "main:refs/promote/staging",
        "main:refs/tags/rc/1",
        "main:refs/notes/gitopsd",
        "main:refs/for/main",
        "main:refs/tags/qa",
    ):
        code, said = push(sandbox, "origin", refspec)
        assert code == 1 and "gitopsd configuration is invalid" in said, (refspec, said)
    code, said = push(sandbox, "origin", "main:feature/y", "main:qa")  # one policed ref holds up the whole push
    assert code == 1 and "gitopsd configuration is invalid" in said


def test_a_tag_or_branch_whose_name_shadows_an_environment_branch_is_refused_in_one_line(sandbox):
    for ref in (
        "refs/tags/qa",
        "refs/heads/refs/heads/qa",
        "refs/heads/refs/tags/staging",
        "refs/qa",
        "refs/remotes/staging/HEAD",
    ):
        code, said = push(sandbox, "origin", f"main:{ref}")
        remote = [line for line in said.splitlines() if line.startswith("remote: gitopsd")]
        assert code == 1 and len(remote) == 1, (ref, said)
        assert remote[0].startswith(f"remote: gitopsd: push to {ref} refused: its name shadows the environment branch ")
        assert "would be ambiguous for everyone; push it under another name" in remote[0]
    assert "qa" not in git(sandbox.work, "ls-remote", "--tags", "origin").stdout
    # Names that only contain an environment's name are anybody's.
    code, said = push(sandbox, "origin", "main:feature/qa", "main:refs/tags/qa-2026-12", "main:refs/notes/qa")
    assert code == 0, said
    # A shadow that got in some other way may always be deleted.
    git(sandbox.root, "--git-dir", str(sandbox.repo), "tag", "qa", "main")
    code, said = push(sandbox, "origin", ":refs/tags/qa")
    assert code == 0, said
