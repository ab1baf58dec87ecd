"""Signed commits at the door: real SSH and OpenPGP keys, real signed commits, real pushes through the pre-receive hook."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitopsd.config import load
from gitopsd.installers import doctor
from gitopsd.services.revert import make_revert
from tests.signing import (
    allowed_signers,
    commit,
    counting_ssh_keygen,
    gpg_export,
    gpg_home,
    gpg_key,
    sign_with,
    sk_commits,
    sk_key,
    ssh_key,
)
from tests.support import Sandbox, git, run


@pytest.fixture
def keys(short_tmp: Path) -> dict[str, Path]:
    folder = short_tmp / "keys"
    return {name: ssh_key(folder, name) for name in ("alice", "ops", "mallory")}


def signed_sandbox(root: Path, keys: dict[str, Path], **signatures: object) -> Sandbox:
    signers = allowed_signers(root / "allowed_signers", ("alice@example.com", keys["alice"]), ("ops@example.com", keys["ops"]))
    sandbox = Sandbox(
        root / "s",
        {"qa": ["qa-1"]},
        env_options={"qa": {"signatures": {"allowed_signers": str(signers), **signatures}}},
        extra={"groups": {"ops": ["ops@example.com"]}},
    )
    sign_with(sandbox.work, keys["alice"])
    return sandbox


def remote_text(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line.rstrip() for line in proc.stderr.splitlines() if line.startswith("remote:"))


def test_an_unsigned_commit_under_a_signed_merge_is_refused_by_the_hook_naming_it(short_tmp, keys):
    sandbox = signed_sandbox(short_tmp, keys)
    git(sandbox.work, "checkout", "--quiet", "-b", "feature")
    sandbox.write("feature.txt", "unsigned work")
    git(sandbox.work, "add", "-A")
    unsigned = commit(sandbox.work, "unsigned work", signed=False)
    git(sandbox.work, "checkout", "--quiet", "main")
    signed = commit(sandbox.work, "signed work")
    git(sandbox.work, "merge", "--quiet", "--no-ff", "-m", "signed merge", "feature")
    merge = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    assert git(sandbox.work, "verify-commit", merge, check=False).returncode == 1  # no allowedSignersFile in the clone
    assert sandbox.push("main").returncode == 0  # main has no signature rule here
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    text = remote_text(proc)
    assert (
        "remote:   rule: every commit that reaches qa must be signed by an allowed signer "
        f"(allowed_signers {short_tmp / 'allowed_signers'})"
    ) in text
    assert f"remote:   commit {unsigned[:7]} has no signature" in text
    assert merge[:7] not in text.split("what to do")[0] and signed[:7] not in text  # the signed ones pass
    assert "remote:   (3 new commit(s) checked, 1 refused; nothing was deployed)" in text
    assert sandbox.head("qa") != merge


def test_commits_all_signed_by_allowed_keys_pass_and_only_the_new_ones_are_checked(short_tmp, keys):
    sandbox = signed_sandbox(short_tmp, keys)
    # qa is at the unsigned initial commit: it is not new, so it is not judged.
    sandbox.write("a.txt", "v2")
    git(sandbox.work, "add", "-A")
    v2 = commit(sandbox.work, "v2")
    commit(sandbox.work, "v3 by ops", key=keys["ops"])
    sandbox.push("main")
    proc = sandbox.push("main:qa")
    assert proc.returncode == 0, proc.stderr
    assert sandbox.head("qa") == git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    assert v2


def test_a_key_that_is_not_allowed_expired_or_signing_other_content_is_refused_with_the_key_named(short_tmp, keys):
    root = short_tmp
    expired = ssh_key(root / "keys", "expired")
    sandbox = signed_sandbox(root, keys)
    before = sandbox.head("qa")
    allowed_signers(
        root / "allowed_signers",
        ("alice@example.com", keys["alice"]),
        ("ops@example.com", keys["ops"]),
        ("old@example.com", expired, 'valid-before="20200101"'),
    )
    fingerprint = run(["ssh-keygen", "-l", "-f", f"{keys['mallory']}.pub"]).stdout.split()[1]
    bad = commit(sandbox.work, "by mallory", key=keys["mallory"])
    sandbox.push("main")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert (f"remote:   commit {bad[:7]} has a signature by a key that is not an allowed signer (key {fingerprint})") in text
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    old = commit(sandbox.work, "by an expired key", key=expired)
    sandbox.push("main", "--force")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert f"remote:   commit {old[:7]} has a signature by a key that is not an allowed signer" in text
    # A signature copied onto other content: the commit object edited after signing.
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    good = commit(sandbox.work, "signed by alice")
    body = git(sandbox.work, "cat-file", "commit", good).stdout.replace("signed by alice", "signed by nobody")
    forged = run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=sandbox.work, input=body).stdout.strip()
    git(sandbox.work, "reset", "--quiet", "--hard", forged)
    sandbox.push("main", "--force")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert f"remote:   commit {forged[:7]} has a bad signature (it does not match the commit's content)" in text
    assert sandbox.head("qa") == before


def test_paths_may_be_signed_only_by_the_signers_the_config_names(short_tmp, keys):
    sandbox = signed_sandbox(short_tmp, keys, paths={"environments/production/**": ["group:ops"]})
    sandbox.write("environments/production/hosts.yml", "all: {}\n")
    git(sandbox.work, "add", "-A")
    by_alice = commit(sandbox.work, "production inventory by alice")
    sandbox.push("main")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert (
        f"remote:   commit {by_alice[:7]} changes environments/production/hosts.yml, which only "
        "ops@example.com may sign; it is signed by alice@example.com"
    ) in text
    git(sandbox.work, "reset", "--quiet", "--soft", "HEAD~1")
    commit(sandbox.work, "production inventory by ops", key=keys["ops"])
    sandbox.write("app.txt", "alice may change this")
    git(sandbox.work, "add", "-A")
    commit(sandbox.work, "app change by alice")
    sandbox.push("main", "--force")
    proc = sandbox.push("main:qa")
    assert proc.returncode == 0, proc.stderr


def test_an_allowed_signers_file_with_a_syntax_error_is_named_with_its_line_by_check_config(short_tmp, keys):
    sandbox = signed_sandbox(short_tmp, keys)
    path = short_tmp / "allowed_signers"
    path.write_text(path.read_text() + "bob@example.com ssh-ed25519\n# fine\nnamespaces=git carol ssh-ed25519 AAAA\n")
    proc = sandbox.command("check-config", check=False)
    assert proc.returncode != 0
    assert f"{path}:3: expected `PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY`" in proc.stdout + proc.stderr
    assert f"{path}:5: unknown option 'carol'" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def openpgp(short_tmp: Path) -> tuple[Path, Path, str]:
    """A developer's keyring with a signing key, and the server's keyring holding its public key."""
    mine, server = gpg_home(short_tmp / "gpg-dev"), gpg_home(short_tmp / "gpg-server")
    fingerprint = gpg_key(mine, "Alice <alice@example.com>")
    gpg_export(mine, fingerprint, server)
    return mine, server, fingerprint


def test_openpgp_signatures_verify_against_the_configured_keyring_and_a_revoked_key_is_refused(short_tmp, openpgp):
    mine, server, fingerprint = openpgp
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"gpg_home": str(server)}}})
    git(sandbox.work, "config", "user.signingkey", fingerprint)
    env = {"GNUPGHOME": str(mine)}
    signed = run(
        ["git", "commit", "--quiet", "--allow-empty", "-S", "-m", "gpg signed"], cwd=sandbox.work, env=sandbox.environ(**env)
    )
    assert signed.returncode == 0
    sandbox.push("main")
    proc = sandbox.push("main:qa")
    assert proc.returncode == 0, proc.stderr
    # Revoke the key on the server (the revocation certificate gpg made with it), then push another signed commit.
    revocation = (mine / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
    run(["gpg", "--homedir", str(server), "--batch", "--import"], input=revocation)
    run(
        ["git", "commit", "--quiet", "--allow-empty", "-S", "-m", "after revocation"],
        cwd=sandbox.work,
        env=sandbox.environ(**env),
    )
    late = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    sandbox.push("main")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert f"remote:   commit {late[:7]} has a signature by a revoked key" in text


def test_an_openpgp_key_not_in_the_servers_keyring_is_refused_as_such_with_the_key_named(short_tmp, openpgp):
    mine, server, _fingerprint = openpgp
    newcomer = gpg_key(mine, "Nina <nina@example.com>")  # in her own keyring, not yet in the server's
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"gpg_home": str(server)}}})
    git(sandbox.work, "config", "user.signingkey", newcomer)
    run(
        ["git", "commit", "--quiet", "--allow-empty", "-S", "-m", "v2"],
        cwd=sandbox.work,
        env=sandbox.environ(GNUPGHOME=str(mine)),
    )
    late = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    sandbox.push("main")
    text = remote_text(sandbox.push("main:qa", check=False))
    assert f"remote:   commit {late[:7]} has a signature by a key that is not in the keyring (key {newcomer[-16:]})" in text


def test_gpg_missing_on_the_server_is_said_as_such(short_tmp, openpgp):
    mine, server, fingerprint = openpgp
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"gpg_home": str(server)}}})
    git(sandbox.work, "config", "user.signingkey", fingerprint)
    run(
        ["git", "commit", "--quiet", "--allow-empty", "-S", "-m", "gpg signed"],
        cwd=sandbox.work,
        env=sandbox.environ(GNUPGHOME=str(mine)),
    )
    late = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    sandbox.push("main")
    # The hook's PATH without gpg: a folder with git, python and ssh-keygen only.
    bare = short_tmp / "nogpg"
    bare.mkdir()
    for tool in ("git", "ssh-keygen"):
        (bare / tool).symlink_to(run(["sh", "-c", f"command -v {tool}"]).stdout.strip())
    proc = run(
        ["git", "push", "origin", "main:qa"],
        cwd=sandbox.work,
        check=False,
        env=sandbox.environ(PATH=f"{Path(sys.executable).parent}:{bare}"),
    )
    text = remote_text(proc)
    assert (
        f"remote:   commit {late[:7]} cannot be checked: gpg is not installed on the deploy server (apt-get install gnupg)"
    ) in text


def test_gitopsds_own_promotion_commits_are_signed_with_its_key_and_verify_with_git_verify_commit(short_tmp, keys):
    service = ssh_key(short_tmp / "keys", "gitopsd")
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", keys["alice"]), ("gitopsd@localhost", service))
    sandbox = Sandbox(
        short_tmp / "s",
        {"qa": ["qa-1"]},
        extra={"signing_key": str(service)},
        env_options={"qa": {"signatures": {"allowed_signers": str(signers)}}},
    )
    sign_with(sandbox.work, keys["alice"])
    sandbox.write("a.txt", "v2")
    git(sandbox.work, "add", "-A")
    v2 = commit(sandbox.work, "v2")
    sandbox.push("main")
    # A promotion request: the hook writes the exact-tree promotion commit itself, as gitopsd.
    proc = sandbox.push("main:refs/promote/qa", check=False)
    assert "gitopsd: promoted by" in proc.stderr, proc.stderr
    promotion = sandbox.head("qa")
    assert git(sandbox.repo, "rev-parse", f"{promotion}^2").stdout.strip() == v2
    verified = run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", promotion], cwd=sandbox.repo, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert 'Good "git" signature for gitopsd@localhost with ED25519 key' in verified.stderr
    # A rollback's revert commit (as the daemon's automatic rollback writes it) is signed the same way.
    revert = make_revert(
        sandbox.repo, "qa", promotion, sandbox.tree(f"{promotion}^1"), requested_by="gitopsd", reason="test", automatic=True
    )
    assert revert is not None and sandbox.head("qa") == revert
    verified = run(["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", revert], cwd=sandbox.repo, check=False)
    assert 'Good "git" signature for gitopsd@localhost with ED25519 key' in verified.stderr, verified.stderr


def test_doctor_signs_with_the_service_key_and_names_an_environment_whose_allowed_signers_lack_it(short_tmp, keys):
    service = ssh_key(short_tmp / "keys", "gitopsd")
    sandbox = signed_sandbox(short_tmp, keys)
    sandbox.write_config(signing_key=str(service))
    me = pwd.getpwuid(os.getuid()).pw_name
    findings = doctor.signing_key_findings(load(sandbox.config), me)
    assert [(f.ok, f.what) for f in findings] == [
        (True, f"{me} signs gitopsd's own commits with {service}"),
        (
            False,
            f"shop/qa: {short_tmp / 'allowed_signers'} does not allow gitopsd's signing key, so its own commits "
            "there (promotions, reverts) would be refused",
        ),
    ]
    assert (
        findings[1].fix == f'add the line: gitopsd@localhost namespaces="git" {Path(f"{service}.pub").read_text().split()[0]} '
        f"{Path(f'{service}.pub').read_text().split()[1]}"
    )
    allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", keys["alice"]), ("gitopsd@localhost", service))
    assert all(f.ok for f in doctor.signing_key_findings(load(sandbox.config), me))
    service.write_text("not a key\n")
    [broken] = doctor.signing_key_findings(load(sandbox.config), me)
    assert not broken.ok and broken.what.startswith(f"{me} cannot sign with the signing key {service}: ")


def test_the_repositorys_own_signatures_rule_guards_main_and_names_the_unsigned_commit(short_tmp, keys):
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", keys["alice"]))
    sandbox = Sandbox(
        short_tmp / "s",
        {"qa": ["qa-1"]},
        extra={
            "repositories": [
                {
                    "name": "shop",
                    "path": str(short_tmp / "s" / "shop.git"),
                    "signatures": {"allowed_signers": str(signers)},
                    "environments": [{"name": "qa"}],
                }
            ]
        },
    )
    sign_with(sandbox.work, keys["alice"])
    before = sandbox.head("main")
    commit(sandbox.work, "signed")
    unsigned = commit(sandbox.work, "unsigned", signed=False)
    text = remote_text(sandbox.push("main", check=False))
    assert "remote: gitopsd: push to refs/heads/main refused" in text
    assert f"remote:   commit {unsigned[:7]} has no signature" in text
    assert sandbox.head("main") == before
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    assert sandbox.push("main").returncode == 0
    feature = commit(sandbox.work, "unsigned on a feature branch", signed=False)
    assert sandbox.push(f"{feature}:refs/heads/feature").returncode == 0  # only main has the rule


def test_a_promotion_commit_gitopsd_could_not_sign_is_refused_with_the_setting_that_is_missing(short_tmp, keys):
    sandbox = signed_sandbox(short_tmp, keys)
    sandbox.write("a.txt", "v2")
    git(sandbox.work, "add", "-A")
    commit(sandbox.work, "v2")
    sandbox.push("main")
    text = remote_text(sandbox.push("main:refs/promote/qa", check=False))
    assert (
        "has no signature; gitopsd wrote it: set signing_key in the config and add its public key to the "
        "allowed signers (docs/trust-model.md)"
    ) in text


def test_an_openpgp_signature_checked_with_the_pushers_own_keyring_does_not_pass_an_ssh_only_rule(short_tmp, keys, openpgp):
    mine, _server, fingerprint = openpgp
    sandbox = signed_sandbox(short_tmp, keys)
    env = sandbox.environ(GNUPGHOME=str(mine))  # reaches the hook over the local transport
    run(
        [
            "git",
            "-c",
            "gpg.format=openpgp",
            "-c",
            f"user.signingkey={fingerprint}",
            "commit",
            "--quiet",
            "--allow-empty",
            "-S",
            "-m",
            "gpg signed",
        ],
        cwd=sandbox.work,
        env=env,
    )
    late = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    run(["git", "push", "origin", "main"], cwd=sandbox.work, env=env)
    proc = run(["git", "push", "origin", "main:qa"], cwd=sandbox.work, env=env, check=False)
    assert proc.returncode == 1
    # gpg, given no keyring, names the key by its long id (the fingerprint's last 16 digits)
    assert (
        f"remote:   commit {late[:7]} has an OpenPGP signature (key {fingerprint[-16:]}), but only SSH signers are allowed here"
    ) in remote_text(proc)


def test_a_checking_program_set_in_the_repositorys_config_is_not_used(short_tmp, keys):
    """The repository's config belongs to the git user, not to gitopsd: the hook pins ssh-keygen and gpg."""
    sandbox = signed_sandbox(short_tmp, keys)
    fake = short_tmp / "fake-ssh-keygen"
    fake.write_text(
        "#!/bin/sh\necho alice@example.com\n"
        "echo 'Good \"git\" signature for alice@example.com with ED25519 key SHA256:x' >&2\nexit 0\n"
    )
    fake.chmod(0o755)
    git(sandbox.repo, "config", "gpg.ssh.program", str(fake))
    signed = commit(sandbox.work, "signed by mallory", key=keys["mallory"])
    sandbox.push("main")
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    assert f"remote:   commit {signed[:7]} has a signature by a key that is not an allowed signer" in remote_text(proc)


def test_commits_verified_on_main_cost_no_ssh_keygen_when_promoted_and_a_changed_allowed_signers_checks_again(short_tmp, keys):
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", keys["alice"]))
    rule = {"allowed_signers": str(signers)}
    sandbox = Sandbox(
        short_tmp / "s",
        {"qa": ["qa-1"]},
        extra={
            "repositories": [
                {
                    "name": "shop",
                    "path": str(short_tmp / "s" / "shop.git"),
                    "signatures": rule,
                    "environments": [{"name": "qa", "signatures": rule}],
                }
            ]
        },
    )
    sign_with(sandbox.work, keys["alice"])
    wrapper_bin, calls = counting_ssh_keygen(short_tmp)
    env = sandbox.environ()
    env["PATH"] = f"{wrapper_bin}:{env['PATH']}"
    for n in range(3):
        commit(sandbox.work, f"signed {n}")
    run(["git", "push", "origin", "main"], cwd=sandbox.work, env=env)
    assert not calls.exists()  # checked for real on main, in the hook's own process (gate/sshsig.py)
    assert list(sandbox.repo.glob("gitopsd-signatures-*"))  # and remembered
    run(["git", "push", "origin", "main:qa"], cwd=sandbox.work, env=env)
    assert not calls.exists()  # the same commits under the same allowed_signers: remembered
    assert sandbox.head("qa") == sandbox.head("main")
    mallory = commit(sandbox.work, "signed by mallory", key=keys["mallory"])
    allowed_signers(signers, ("alice@example.com", keys["alice"]), ("mallory@example.com", keys["mallory"]))
    run(["git", "push", "origin", "main"], cwd=sandbox.work, env=env)
    allowed_signers(signers, ("alice@example.com", keys["alice"]))  # mallory's key withdrawn again
    proc = run(["git", "push", "origin", "main:qa"], cwd=sandbox.work, env=env, check=False)
    assert proc.returncode == 1
    assert f"remote:   commit {mallory[:7]} has a signature by a key that is not an allowed signer" in remote_text(proc)


def test_commits_signed_with_fido_keys_pass_the_hook_without_ssh_keygen_and_a_forged_one_is_refused_by_it(short_tmp):
    """FIDO keys (sk-ssh-ed25519, sk-ecdsa-sha2-nistp256; made in Python, signed as a token signs) checked in the hook's
    own process; a signature that does not verify goes to ssh-keygen, whose refusal stands."""
    fido, fido_ec = sk_key("ed25519"), sk_key("ecdsa")
    signers = short_tmp / "allowed_signers"
    signers.write_text(f"fido@example.com {fido.public_line}\nfido-ec@example.com {fido_ec.public_line}\n")
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"allowed_signers": str(signers)}}})
    wrapper_bin, calls = counting_ssh_keygen(short_tmp)
    env = sandbox.environ()
    env["PATH"] = f"{wrapper_bin}:{env['PATH']}"
    sk_commits(sandbox.work, fido, [f"by fido {n}" for n in range(3)])
    sk_commits(sandbox.work, fido_ec, [f"by fido-ec {n}" for n in range(3)], flags=0x05)
    run(["git", "push", "origin", "main"], cwd=sandbox.work, env=env)
    run(["git", "push", "origin", "main:qa"], cwd=sandbox.work, env=env)
    assert sandbox.head("qa") == sandbox.head("main")
    assert not calls.exists()  # all six checked in the hook's process
    [forged] = sk_commits(sandbox.work, fido, ["signed for another application"], application=b"ssh:other")
    run(["git", "push", "origin", "main"], cwd=sandbox.work, env=env)
    proc = run(["git", "push", "origin", "main:qa"], cwd=sandbox.work, env=env, check=False)
    assert proc.returncode == 1
    assert f"remote:   commit {forged[:7]} has a bad signature (it does not match the commit's content)" in remote_text(proc), (
        remote_text(proc)
    )
    assert "-Y" in calls.read_text()  # ssh-keygen decided


def test_a_rotated_key_keeps_the_commits_it_signed_before_its_valid_before_and_signs_nothing_after_it(short_tmp, keys):
    """docs/trust-model.md, Rotating a key: the old line gets valid-before, the new key a line of its own; removing the
    old line instead leaves its commits that have not reached an environment yet unpromotable."""
    sandbox = signed_sandbox(short_tmp, keys)
    month_ago = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 30 * 86400))
    rotated = time.strftime("%Y%m%d", time.gmtime(time.time() - 10 * 86400))
    dated = {**os.environ, "GIT_COMMITTER_DATE": month_ago, "GIT_AUTHOR_DATE": month_ago}
    run(["git", "commit", "--quiet", "--allow-empty", "-m", "signed a month ago"], cwd=sandbox.work, env=dated)
    old = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    sandbox.push("main")
    new_key = ssh_key(short_tmp / "keys", "alice-2027")
    signers = short_tmp / "allowed_signers"
    allowed_signers(signers, ("alice@example.com", new_key))  # the old line removed: its pending commit is refused
    refused = remote_text(sandbox.push("main:qa", check=False))
    assert f"commit {old[:7]} has a signature by a key that is not an allowed signer" in refused
    allowed_signers(signers, ("alice@example.com", keys["alice"], f'valid-before="{rotated}"'), ("alice@example.com", new_key))
    assert sandbox.push("main:qa", check=False).returncode == 0
    late = commit(sandbox.work, "after the rotation, with the old key")
    sandbox.push("main")
    refused = remote_text(sandbox.push("main:qa", check=False))
    assert f"commit {late[:7]} has a signature by a key that is not an allowed signer" in refused
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    sandbox.push("main", "--force")
    fresh = commit(sandbox.work, "with the new key", key=new_key)
    sandbox.push("main")
    assert sandbox.push("main:qa", check=False).returncode == 0 and sandbox.head("qa") == fresh


def test_a_promotion_refused_for_a_commit_already_in_the_source_environment_does_not_ask_to_rewrite_it(short_tmp, keys):
    """After a key's line was deleted, what qa already runs cannot be re-signed without rewriting qa: the refusal
    says what an operator does instead (docs/trust-model.md, Rotating a key)."""
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", keys["alice"]))
    rule = {"signatures": {"allowed_signers": str(signers)}}
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"], "staging": ["s-1"]}, env_options={"qa": rule, "staging": rule})
    sign_with(sandbox.work, keys["alice"])
    ran = commit(sandbox.work, "v2")
    sandbox.push("main", "main:qa")
    allowed_signers(signers, ("alice@example.com", keys["ops"]))  # alice's old key deleted instead of given valid-before
    text = remote_text(sandbox.push("main:staging", check=False))
    assert f"remote:   commit {ran[:7]} has a signature by a key that is not an allowed signer" in text
    assert "git rebase --exec" not in text, text
    assert (
        f"remote:     commit {ran[:7]} is in qa already, so re-signing it would rewrite qa: if the key that signed it was "
        "rotated, an operator keeps that key's line in allowed_signers with valid-before (docs/trust-model.md)"
    ) in text, text
