"""gate/signatures.py's pure parts: the snapshot encoding of a rule and the allowed_signers syntax check."""

from __future__ import annotations

from gitopsd.gate.signatures import Rule, Signed, allowed_signers_problems, problem


def test_a_rule_survives_the_snapshot_encoding_with_globs_that_hold_equals_signs_and_commas():
    rule = Rule(
        "/etc/gitopsd/allowed_signers",
        "/etc/gitopsd/gnupg",
        (("environments/production/**", ("ops@example.com", "bob")), ("a=b,c/*", ("alice",))),
        True,
    )
    again = Rule.decode(rule.encode())
    assert again is not None
    assert (again.allowed_signers, again.gpg_home, again.paths, again.signed_push) == (
        rule.allowed_signers,
        rule.gpg_home,
        rule.paths,
        True,
    )
    assert Rule.decode("") is None


def test_an_openpgp_key_of_the_keyring_passes_with_unknown_validity_but_an_ssh_key_outside_allowed_signers_does_not():
    rule = Rule("/dev/null", "/tmp/keyring")
    assert (
        problem(rule, Signed("a" * 40, "U", "Alice <alice@example.com>", "B4B8BEB8661452977EC4EB3C2E1BBF88C906890A", [])) is None
    )
    assert problem(rule, Signed("b" * 40, "U", "", "SHA256:otLg704mBEcdUvb7+iwWxV7U16wsCQ9Mmf3EtSCBwH0", [])) == (
        "commit bbbbbbb has a signature by a key that is not an allowed signer "
        "(key SHA256:otLg704mBEcdUvb7+iwWxV7U16wsCQ9Mmf3EtSCBwH0)"
    )


def test_paths_name_openpgp_signers_by_email_and_refuse_others(tmp_path):
    rule = Rule("", "/tmp/keyring", (("environments/production/**", ("ops@example.com",)),))
    ops = Signed("c" * 40, "G", "Ops <ops@example.com>", "F" * 40, ["environments/production/hosts.yml"])
    dev = Signed("d" * 40, "G", "Dev <dev@example.com>", "E" * 40, ["environments/production/hosts.yml", "app.py"])
    assert problem(rule, ops) is None
    assert problem(rule, dev) == (
        "commit ddddddd changes environments/production/hosts.yml, which only "
        "ops@example.com may sign; it is signed by Dev <dev@example.com>"
    )


def test_allowed_signers_syntax_problems_name_their_lines(tmp_path):
    path = tmp_path / "allowed_signers"
    path.write_text(
        "# team\n\nalice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\n"
        'bob@example.com namespaces="git",valid-before="20300101" ssh-ed25519 AAAAC3Nz\n'
        "carol@example.com ssh-ed25519\n"
        "dave@example.com nope=1 ssh-ed25519 AAAA\n"
        "erin@example.com ssh-ed25519 not-base64!\n"
    )
    assert allowed_signers_problems(str(path)) == [
        f"{path}:5: expected `PRINCIPALS [OPTIONS] KEYTYPE BASE64-KEY`, e.g. `alice@example.com ssh-ed25519 AAAA...` "
        "(the line of `ssh-keygen -y -f KEY`)",
        f"{path}:6: unknown option 'nope' (expected principals, options such as namespaces=\"git\", then the key type and key)",
        f"{path}:7: the key after ssh-ed25519 is not base64",
    ]


def test_an_openpgp_signature_counts_for_nothing_where_only_ssh_signers_are_allowed():
    rule = Rule("/etc/gitopsd/allowed_signers")
    signed = Signed("e" * 40, "G", "Alice <alice@example.com>", "B4B8BEB8661452977EC4EB3C2E1BBF88C906890A", [])
    assert problem(rule, signed) == (
        "commit eeeeeee has an OpenPGP signature (key "
        "B4B8BEB8661452977EC4EB3C2E1BBF88C906890A), but only SSH signers are allowed here"
    )
