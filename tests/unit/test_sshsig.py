"""gate/sshsig.py's parsers: what ssh-keygen might read otherwise is not read here (git and ssh-keygen then decide)."""

from __future__ import annotations

import base64

import pytest

from gitopsd.gate import sshsig

# An ed25519 public key blob: string "ssh-ed25519", string 32 bytes.
KEY = base64.b64encode(sshsig.string(b"ssh-ed25519") + sshsig.string(bytes(range(32)))).decode()
SK = b"sk-ssh-ed25519@openssh.com"
# FIDO keys: an application ending in NUL (OpenSSH reads it as a C string: the same key as "ssh:"), none at all.
SK_NUL = base64.b64encode(sshsig.string(SK) + sshsig.string(bytes(range(32))) + sshsig.string(b"ssh:\0")).decode()
SK_NONE = base64.b64encode(sshsig.string(SK) + sshsig.string(bytes(range(32)))).decode()


def test_plain_lines_with_namespaces_and_validity_are_read():
    signers = sshsig.parse_allowed_signers(
        f'# comment\n\nalice@example.com namespaces="git,file",valid-after="20200101",valid-before="20300101120000" '
        f"ssh-ed25519 {KEY} alice's laptop\n  ops ssh-ed25519 {KEY}\n".encode()
    )
    assert [(s.principals, s.namespaces, s.literal) for s in signers] == [
        ("alice@example.com", ["git", "file"], True),
        ("ops", None, True),
    ]
    assert signers[0].after is not None and signers[0].before is not None and signers[0].after < signers[0].before
    assert signers[0].valid_at(signers[0].after) and not signers[0].valid_at(signers[0].after - 1)


@pytest.mark.parametrize(
    "line",
    [
        f'alice namespaces="g*t" ssh-ed25519 {KEY}',  # a namespace pattern
        f'alice valid-before="20300101Z" ssh-ed25519 {KEY}',  # a time in UTC
        f'alice valid-before="2030010" ssh-ed25519 {KEY}',  # not a time
        f'alice valid-after="20300101",valid-before="20200101" ssh-ed25519 {KEY}',  # before ends before after starts
        f'alice namespaces="git",namespaces="git" ssh-ed25519 {KEY}',  # twice
        f"alice namespaces=git ssh-ed25519 {KEY}",  # no quotes
        f"alice no-touch-required ssh-ed25519 {KEY}",  # an option not read here
        f'"alice smith" ssh-ed25519 {KEY}',  # a quoted principal
        f"alice ssh-ed25519 {KEY}\r",  # a carriage return
        f"alice ssh-ed25519 {KEY[:-4]}",  # a key cut short
        f"alice ssh-rsa {KEY}",  # a key of another type than it says
        f"alice ssh-foo {KEY}",  # a key type ssh-keygen does not know
        f"alice sk-ssh-ed25519@openssh.com {SK_NUL}",  # a FIDO application with a NUL
        f"alice sk-ssh-ed25519@openssh.com {SK_NONE}",  # a FIDO key without its application
        f"alice verify-required sk-ssh-ed25519@openssh.com {SK_NONE}",  # sshd's option, not allowed_signers'
    ],
)
def test_lines_ssh_keygen_might_read_otherwise_make_the_whole_file_left_to_it(line):
    with pytest.raises(sshsig.Unsupported):
        sshsig.parse_allowed_signers(f"ops ssh-ed25519 {KEY}\n{line}\n".encode())


def test_a_commit_splits_into_payload_and_signature_as_git_splits_it():
    signed = (
        b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1700000000 +0100\n"
        b"gpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n"
        b"gpgsig-sha256 other\n more\n\nmessage\ngpgsig in the message stays\n"
    )
    payload, signature = sshsig.split_commit(signed, b"gpgsig") or (b"", b"")
    assert signature == b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
    assert payload == (
        b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\n"
        b"committer C <c@x> 1700000000 +0100\n\nmessage\ngpgsig in the message stays\n"
    )
    assert sshsig.committer(payload)[1] == "c@x"
    assert sshsig.split_commit(payload, b"gpgsig") is None
