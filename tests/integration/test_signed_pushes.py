"""Signed pushes: `signed_push: required` takes only `git push --signed` with a fresh nonce and an allowed key (real
push certificates over the local transport, which carries them as ssh:// does)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from tests.signing import allowed_signers, commit, gpg_export, gpg_home, gpg_key, sign_with, ssh_key
from tests.support import Sandbox, git, run


def signed_push_sandbox(root: Path) -> tuple[Sandbox, dict[str, Path]]:
    keys = {name: ssh_key(root / "keys", name) for name in ("alice", "mallory")}
    signers = allowed_signers(root / "allowed_signers", ("alice@example.com", keys["alice"]))
    sandbox = Sandbox(
        root / "s",
        {"qa": ["qa-1"]},
        env_options={"qa": {"signatures": {"allowed_signers": str(signers)}, "signed_push": "required"}},
    )
    sign_with(sandbox.work, keys["alice"])
    return sandbox, keys


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def replay(sandbox: Sandbox, certificate: str) -> subprocess.CompletedProcess[bytes]:
    """Send an old push certificate to `git receive-pack` as `git push --signed` sends one, with an empty pack."""
    body = pkt(b"push-cert\0report-status") + b"".join(pkt(line.encode()) for line in certificate.splitlines(keepends=True))
    header = b"PACK" + (2).to_bytes(4, "big") + (0).to_bytes(4, "big")
    body += pkt(b"push-cert-end\n") + b"0000" + header + hashlib.sha1(header).digest()  # noqa: S324 (git's pack checksum)
    return subprocess.run(
        ["git", "receive-pack", str(sandbox.repo)],
        input=body,
        capture_output=True,
        env=sandbox.environ(),
        timeout=120,
        check=False,
    )


def test_an_unsigned_push_and_a_push_signed_by_a_key_that_is_not_allowed_are_refused(short_tmp):
    sandbox, keys = signed_push_sandbox(short_tmp)
    v2 = commit(sandbox.work, "v2")
    sandbox.push("main")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert (
        "remote:   rule: qa only takes signed pushes (git push --signed) by an allowed signer, with a fresh certificate" in text
    )
    assert "remote:   this push has no certificate: push with `git push --signed`" in text
    proc = run(
        ["git", "-c", f"user.signingkey={keys['mallory']}", "push", "--signed", "origin", "main:qa"],
        cwd=sandbox.work,
        env=sandbox.environ(),
        check=False,
    )
    assert "remote:   the push certificate is signed by a key that is not in allowed_signers" in remote_text(proc)
    assert sandbox.head("qa") != v2
    proc = run(["git", "push", "--signed", "origin", "main:qa"], cwd=sandbox.work, env=sandbox.environ(), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr  # receive-pack's own check of the certificate stays quiet
    assert sandbox.head("qa") == v2


def test_a_replayed_push_certificate_with_an_old_nonce_is_refused(short_tmp):
    sandbox, _keys = signed_push_sandbox(short_tmp)
    before = sandbox.head("qa")
    v2 = commit(sandbox.work, "v2")
    sandbox.push("main")
    run(["git", "push", "--signed", "origin", "main:qa"], cwd=sandbox.work, env=sandbox.environ())
    assert sandbox.head("qa") == v2
    blobs = git(sandbox.repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)").stdout
    certificate = next(
        text
        for oid, kind in (line.split() for line in blobs.splitlines())
        if kind == "blob"
        for text in [git(sandbox.repo, "cat-file", "blob", oid).stdout]
        if text.startswith("certificate version 0.1")
    )
    assert f"{before} {v2} refs/heads/qa" in certificate
    # Someone puts qa back and replays the certificate they saw: its nonce is from another second.
    git(sandbox.repo, "update-ref", "refs/heads/qa", before)
    time.sleep(1.5)  # the nonce names the second it was issued in: a new second, a new nonce
    proc = replay(sandbox, certificate)
    err = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert "the push certificate's nonce is not fresh (" in err, err
    assert "a replayed certificate" in err or "not one this server issued" in err
    assert sandbox.head("qa") == before


def test_an_openpgp_signed_push_is_checked_against_the_configured_keyring_not_the_git_users(short_tmp):
    mine, server = gpg_home(short_tmp / "gpg-dev"), gpg_home(short_tmp / "gpg-server")
    fingerprint = gpg_key(mine, "Alice <alice@example.com>")
    other = gpg_key(mine, "Mallory <mallory@example.com>")  # in the pusher's keyring only
    gpg_export(mine, fingerprint, server)
    sandbox = Sandbox(
        short_tmp / "s",
        {"qa": ["qa-1"]},
        env_options={"qa": {"signatures": {"gpg_home": str(server)}, "signed_push": "required"}},
    )
    env = sandbox.environ(GNUPGHOME=str(mine))
    run(
        ["git", "-c", f"user.signingkey={fingerprint}", "commit", "--quiet", "--allow-empty", "-S", "-m", "v2"],
        cwd=sandbox.work,
        env=env,
    )
    v2 = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    sandbox.push("main")
    proc = run(
        ["git", "-c", f"user.signingkey={other}", "push", "--signed", "origin", "main:qa"], cwd=sandbox.work, env=env, check=False
    )
    # Named as a commit signed by that key is: which key, and the keyring an operator adds it to.
    assert f"remote:   the push certificate is signed by a key that is not in the keyring (key {other[-16:]})" in remote_text(
        proc
    )
    assert f"ask an operator to add yours to keyring {server}" in remote_text(proc)
    proc = run(
        ["git", "-c", f"user.signingkey={fingerprint}", "push", "--signed", "origin", "main:qa"],
        cwd=sandbox.work,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sandbox.head("qa") == v2


def test_a_promotion_request_to_an_environment_that_wants_signed_pushes_needs_one_too(short_tmp):
    sandbox, _keys = signed_push_sandbox(short_tmp)
    sandbox.write("a.txt", "v2")
    git(sandbox.work, "add", "-A")
    commit(sandbox.work, "v2")
    sandbox.push("main")
    before = sandbox.head("qa")
    proc = sandbox.push("main:refs/promote/qa", check=False)
    assert "remote:   this push has no certificate: push with `git push --signed`" in remote_text(proc)
    assert sandbox.head("qa") == before


def test_a_push_signed_by_a_key_not_allowed_yet_names_the_key_and_the_file_an_operator_adds_it_to(short_tmp):
    sandbox, keys = signed_push_sandbox(short_tmp)
    commit(sandbox.work, "v2")
    sandbox.push("main")
    fingerprint = run(["ssh-keygen", "-l", "-f", f"{keys['mallory']}.pub"]).stdout.split()[1]
    proc = run(
        ["git", "-c", f"user.signingkey={keys['mallory']}", "push", "--signed", "origin", "main:qa"],
        cwd=sandbox.work,
        env=sandbox.environ(),
        check=False,
    )
    text = remote_text(proc)
    # The same words as a commit signed by that key gets: which key, and which file an operator adds it to.
    assert f"remote:   the push certificate is signed by a key that is not in allowed_signers (key {fingerprint})" in text
    assert f"ask an operator to add yours to allowed_signers {short_tmp / 'allowed_signers'}" in text, text
