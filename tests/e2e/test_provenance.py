"""Signed provenance with the daemon as a real process: built-in CI signs what it built, `gitopsd verify` checks
it, and an environment with `require_provenance: true` refuses an artifact changed after signing before batch 1.

Real: the daemon, the CI steps in the sandbox, the service's ed25519 key, git notes, ansible-runner."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from tests.e2e.test_ci_builtin import BUILD, PLAYBOOK, finished, with_ci
from tests.support import Daemon, Sandbox, git

TAMPERED = b"not what CI built\n"


@pytest.fixture
def signed(short_tmp):
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1", "staging-2"]},
        env_options={
            "qa": {"require_provenance": True},
            "staging": {"require_provenance": True, "rollout": {"batches": [1, "100%"]}},
        },
    )
    box.write("playbooks/deploy.yml", PLAYBOOK)
    box.write("app.txt", "v1\n")
    with_ci(box, [{"name": "build", "run": BUILD, "artifacts": ["dist/*.tar.gz"]}])
    return box


def test_ci_signs_what_it_built_and_an_artifact_changed_after_signing_is_refused_before_batch_1(signed):
    with Daemon(signed) as daemon:
        v2 = signed.commit("v2 with a build")
        signed.push("main")
        daemon.wait_for(lambda: finished(signed, v2, 1), 90, "CI of v2")
        signed.push("main:qa")
        daemon.wait_state("qa", "in-sync", v2, timeout=120)
        qa = next(d for d in signed.history("qa") if d["commit"] == v2 and d["result"] == "succeeded")
        sha = qa["artifacts"]["dist/app.tar.gz"]
        blob = signed.state / "artifacts" / "sha256" / sha
        verified = signed.cli("verify", str(qa["id"]))
        assert f"ok: artifact dist/app.tar.gz sha256 {sha[:12]} signed by key" in verified.stdout
        note = git(signed.root, "--git-dir", str(signed.repo), "notes", "--ref=refs/notes/gitopsd", "show", v2).stdout
        # The run's number depends on whether the daemon saw main's first head before the push: any run will do.
        assert re.search(rf"gitopsd: built dist/app\.tar\.gz sha256:{sha} \(CI run #\d+\), provenance ", note), note

        blob.chmod(0o644)
        blob.write_bytes(TAMPERED)  # someone with access to the state folder swaps the bits
        signed.cli("promote", "qa", "staging")
        refused = daemon.wait_for(
            lambda: next((d for d in signed.history("staging") if d["result"] == "failed"), None), 120, "staging refused"
        )
    assert refused["outcome"].startswith(
        "batch 1/2: refused: artifact dist/app.tar.gz changed after signing (sha256 "
        f"{hashlib.sha256(TAMPERED).hexdigest()[:12]}, signed {sha[:12]})"
    )
    assert not list(signed.out.glob("staging-*")), "no host of staging received anything"
    assert refused["hosts"] == {"staging-1": "skipped", "staging-2": "skipped"}
    again = signed.cli("verify", str(blob), check=False)
    assert again.returncode == 1 and "refused: artifact dist/app.tar.gz changed after signing" in again.stdout
    assert len(again.stdout.splitlines()) == 1 and "Traceback" not in again.stderr
    assert json.loads(signed.cli("status", "--json").stdout)


def test_a_tree_that_nothing_built_is_refused_by_the_hook_and_blocked_by_the_daemon_past_it(signed):
    with_ci(signed, [])  # CI off: nothing is built, nothing signed
    with Daemon(signed) as daemon:
        v2 = signed.commit("v2 never built")
        signed.push("main")
        proc = signed.push("main:qa", check=False)
        assert proc.returncode == 1 and "for which no provenance statement is recorded" in proc.stderr
        # The git user moves qa by hand: no hook runs, the daemon judges it again.
        git(signed.root, "--git-dir", str(signed.repo), "update-ref", "refs/heads/qa", v2)
        row = daemon.wait_state("qa", "blocked", v2, timeout=120)
    assert row["reason"].startswith("qa only takes trees whose built artifacts have signed provenance")
    assert not [d for d in signed.history("qa") if d["commit"] == v2]
    assert not list(signed.out.iterdir())


def test_verify_says_in_one_line_what_it_was_given_that_it_cannot_check(signed):
    for target, said in (
        ("999", "gitopsd: error: no deployment #999: see `gitopsd history` for their numbers"),
        ("no-such-thing", "gitopsd: error: 'no-such-thing' is neither a deployment number nor a file"),
    ):
        out = signed.cli("verify", target, check=False)
        assert out.returncode == 1 and out.stderr.startswith(said) and len(out.stderr.splitlines()) == 1, out.stderr
    stranger = signed.root / "stranger.tar.gz"
    stranger.write_bytes(b"not built here\n")
    out = signed.cli("verify", str(stranger), check=False)
    assert out.returncode == 1 and out.stdout.startswith(f"refused: {stranger} (sha256 ") and "is no artifact" in out.stdout
