"""The daemon judges signatures again: a head moved past the hook (`git update-ref` on the server) is blocked, not deployed."""

from __future__ import annotations

import os
import pwd

from tests.signing import allowed_signers, commit, sign_with, ssh_key
from tests.support import Daemon, Sandbox, git, run


def test_an_unsigned_commit_under_a_signed_merge_moved_in_by_update_ref_is_blocked_by_the_daemon(short_tmp):
    key = ssh_key(short_tmp / "keys", "alice")
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", key))
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"allowed_signers": str(signers)}}})
    sign_with(sandbox.work, key)
    v1 = commit(sandbox.work, "v1, signed")
    sandbox.push("main", "main:qa")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", v1, timeout=120)
        git(sandbox.work, "checkout", "--quiet", "-b", "feature")
        sandbox.write("feature.txt", "unsigned")
        git(sandbox.work, "add", "-A")
        unsigned = commit(sandbox.work, "unsigned work", signed=False)
        git(sandbox.work, "checkout", "--quiet", "main")
        git(sandbox.work, "merge", "--quiet", "--no-ff", "-m", "signed merge", "feature")
        merge = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
        sandbox.push("main")
        # The git user moves qa by hand: no hook runs.
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", merge)
        row = daemon.wait_state("qa", "blocked", merge, timeout=120)
        assert row["reason"].startswith(
            f"every commit that reaches qa must be signed by an allowed signer "
            f"(allowed_signers {signers}): commit {unsigned[:7]} has no signature"
        )
        assert not [d for d in sandbox.history("qa") if d["commit"] == merge]


def test_a_signed_push_deploys_as_the_certificates_signer_in_history_and_notes(short_tmp):
    key = ssh_key(short_tmp / "keys", "alice")
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", key))
    sandbox = Sandbox(
        short_tmp / "s",
        {"qa": ["qa-1"]},
        env_options={"qa": {"signatures": {"allowed_signers": str(signers)}, "signed_push": "required"}},
    )
    sign_with(sandbox.work, key)
    v1 = commit(sandbox.work, "v1, signed")
    sandbox.push("main")
    with Daemon(sandbox) as daemon:
        # qa's first head is the unsigned initial commit: nothing deployed yet, so the daemon judges that head alone.
        row = daemon.wait_state("qa", "blocked", timeout=120)
        assert row["reason"].endswith(
            f"commit {sandbox.head('qa')[:7]} has no signature (1 new commit(s) checked, 1 refused; nothing was deployed)"
        )
        run(["git", "push", "--signed", "origin", "main:qa"], cwd=sandbox.work, env=sandbox.environ())
        daemon.wait_result("qa", v1, "succeeded", timeout=120)
        # The certificate says who; the daemon adds the Unix account the hook ran as (the transport's).
        signer = f"alice@example.com (via {pwd.getpwuid(os.getuid()).pw_name})"
        daemon.wait_for(lambda: sandbox.history("qa")[0]["actor"] == signer, 60, "the signer recorded")
        notes = daemon.wait_for(
            lambda: (
                git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref", "gitopsd", "show", v1, check=False).stdout
            ),
            60,
            "notes",
        )
        assert "alice@example.com" in notes
