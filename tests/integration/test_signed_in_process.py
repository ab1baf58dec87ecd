"""SSH signatures checked in the process (gate/sshsig.py), compared with what git and `ssh-keygen -Y verify` say about the
same real commits signed with real keys: valid, changed after signing, another namespace, expired, unknown, another principal;
FIDO (sk-) keys made in Python (ssh-keygen makes them only with a token), their signatures made by hand as a token would."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest

from gitopsd.adapters.signing import ssh_crypto, verify_ssh
from gitopsd.adapters.store import Store
from gitopsd.config import load
from gitopsd.core.types import Head
from gitopsd.daemon.wiring import PolicyJudge
from gitopsd.gate import sshsig
from gitopsd.gate.signatures import Rule, check_commits
from tests.signing import SkKey, allowed_signers, commit, counting_ssh_keygen, sign_with, sk_commits, sk_key, ssh_key
from tests.support import Sandbox, git, run

PRINCIPALS = (
    "alice@example.com",
    "ops@example.com",
    "ec@example.com",
    "old@example.com",
    "fido@example.com",
    "fido-ec@example.com",
)


@pytest.fixture
def signed(short_tmp: Path) -> tuple[Path, dict[str, Path], Path]:
    """A clone whose commits alice signs; allowed_signers with ed25519, RSA and ECDSA keys and one expired in 2020."""
    keys = {
        name: ssh_key(short_tmp / "keys", name, kind)
        for name, kind in (("alice", "ed25519"), ("ops", "rsa"), ("ec", "ecdsa"), ("old", "ed25519"), ("mallory", "ed25519"))
    }
    signers = allowed_signers(
        short_tmp / "allowed_signers",
        ("alice@example.com", keys["alice"]),
        ("ops@example.com", keys["ops"]),
        ("ec@example.com", keys["ec"]),
        ("old@example.com", keys["old"], 'valid-before="20200101"'),
    )
    work = short_tmp / "work"
    git(short_tmp, "init", "-q", str(work))
    sign_with(work, keys["alice"])
    return work, keys, signers


def cat(work: Path, commit_id: str) -> bytes:
    return subprocess.run(["git", "cat-file", "commit", commit_id], cwd=work, capture_output=True, check=True).stdout


def write(work: Path, body: bytes) -> str:
    """A commit object with exactly these bytes (as a forger would write it); return its id."""
    return (
        subprocess.run(
            ["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=work, input=body, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )


def with_signature(payload: bytes, armored: bytes) -> bytes:
    """The commit `payload` with `armored` as its gpgsig header, where git puts it."""
    head, _, message = payload.partition(b"\n\n")
    return head + b"\ngpgsig " + b"\n ".join(armored.rstrip(b"\n").split(b"\n")) + b"\n\n" + message


def keygen_principals(work: Path, signers: Path, commit_id: str) -> set[str]:
    """The principals for which `ssh-keygen -Y verify` accepts the commit's signature, at the commit's time as git asks."""
    split = sshsig.split_commit(cat(work, commit_id), b"gpgsig")
    if split is None:
        return set()
    payload, armored = split
    stamp = next(line for line in payload.split(b"\n") if line.startswith(b"committer ")).split()[-2]
    when = time.strftime("%Y%m%d%H%M%S", time.localtime(int(stamp)))  # as git passes it
    sig = work.parent / "commit.sig"
    sig.write_bytes(armored)
    return {
        p
        for p in PRINCIPALS
        if subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", p, "-n", "git", "-s", str(sig), f"-Overify-time={when}"],
            input=payload,
            capture_output=True,
        ).returncode
        == 0
    }


def judged(work: Path, signers: Path, commit_id: str) -> tuple[str, str, str] | None:
    """The in-process (letter, principal, key) of a commit, after checking it says what git (ssh-keygen) says."""
    here = sshsig.verdict(cat(work, commit_id), b"gpgsig", sshsig.parse_allowed_signers(signers.read_bytes()), verify_ssh)
    letter, principal, key = (
        git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?%x02%GS%x02%GK", commit_id)
        .stdout.strip("\n")
        .split("\x02")
    )
    accepted = keygen_principals(work, signers, commit_id)
    if here is not None:
        assert here[0] == letter and here[1] == principal, (here, letter, principal)
        assert key in ("", here[2])
    assert accepted == ({here[1]} if here is not None and here[0] == "G" else set()), (here, accepted)
    assert (letter == "G") == bool(accepted)
    final = check_commits(str(work), Rule(str(signers)), commit_id, [], ssh_crypto)
    assert [(s.commit, s.letter, s.signer) for s in final] == [(commit_id, letter, principal)]
    return None if here is None else (here[0], here[1], here[2])


def test_good_signatures_by_ed25519_rsa_and_ecdsa_keys_are_good_in_process_as_in_ssh_keygen(signed):
    work, keys, signers = signed
    for name, principal in (("alice", "alice@example.com"), ("ops", "ops@example.com"), ("ec", "ec@example.com")):
        good = commit(work, f"signed by {name}", key=keys[name])
        verdict = judged(work, signers, good)
        assert verdict is not None and verdict[:2] == ("G", principal)
        fingerprint = run(["ssh-keygen", "-l", "-f", f"{keys[name]}.pub"]).stdout.split()[1]
        assert verdict[2] == fingerprint
    # A namespaces list (a comma inside the quotes) names git among others.
    pub = Path(f"{keys['alice']}.pub").read_text().strip()
    signers.write_text(f'alice@example.com namespaces="file,git",valid-after="20200101" {pub}\n')
    by_alice = commit(work, "signed by alice again", key=keys["alice"])
    assert (judged(work, signers, by_alice) or ("",))[:2] == ("G", "alice@example.com")


def test_a_commit_changed_after_signing_in_message_tree_or_signature_bytes_is_bad_in_process_as_in_ssh_keygen(signed):
    work, _keys, signers = signed
    (work / "a.txt").write_text("1")
    git(work, "add", "a.txt")
    good = commit(work, "signed work")
    body = cat(work, good)
    message = write(work, body.replace(b"signed work", b"signed wOrk"))
    empty_tree = git(work, "hash-object", "-t", "tree", "-w", "/dev/null").stdout.strip()
    tree_line = body.split(b"\n")[0]
    tree = write(work, body.replace(tree_line, b"tree " + empty_tree.encode()))
    payload, armored = sshsig.split_commit(body, b"gpgsig") or (b"", b"")
    lines = armored.split(b"\n")
    blob = bytearray(base64.b64decode(b"".join(lines[1:-2])))
    blob[-1] ^= 1  # the last byte of the signature itself
    text = base64.b64encode(bytes(blob))
    forged = b"\n".join([lines[0], *(text[i : i + 70] for i in range(0, len(text), 70)), *lines[-2:]])
    signature = write(work, with_signature(payload, forged))
    assert (judged(work, signers, good) or ("",))[:2] == ("G", "alice@example.com")
    for changed in (message, tree, signature):
        verdict = judged(work, signers, changed)
        assert verdict is not None and verdict[0] == "B", verdict


def test_a_signature_made_for_another_namespace_is_good_neither_in_process_nor_in_ssh_keygen(signed):
    work, keys, signers = signed
    payload = (sshsig.split_commit(cat(work, commit(work, "to be signed again")), b"gpgsig") or (b"", b""))[0]
    (work.parent / "payload").write_bytes(payload)
    run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(keys["alice"]), "-n", "file", str(work.parent / "payload")])
    other = write(work, with_signature(payload, (work.parent / "payload.sig").read_bytes()))
    assert judged(work, signers, other) is None  # left to git, which says B
    assert git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?", other).stdout.strip() == "B"


def test_an_expired_key_an_unknown_key_and_another_principal_are_judged_in_process_as_ssh_keygen_judges_them(signed):
    work, keys, signers = signed
    expired = commit(work, "by a key that expired in 2020", key=keys["old"])
    assert (judged(work, signers, expired) or ("",))[0] == "U"
    # git checks a key's validity at the commit's own (committer) time, and so does the check here
    subprocess.run(
        ["git", "-c", f"user.signingkey={keys['old']}", "commit", "-q", "--allow-empty", "-m", "from 2019"],
        cwd=work,
        env={**os.environ, "GIT_COMMITTER_DATE": "2019-06-01T00:00:00Z"},
        check=True,
    )
    old = git(work, "rev-parse", "HEAD").stdout.strip()
    assert (judged(work, signers, old) or ("",))[:2] == ("G", "old@example.com")
    unknown = commit(work, "by mallory", key=keys["mallory"])
    assert (judged(work, signers, unknown) or ("",))[0] == "U"
    # The committer's e-mail names ops; the signature is alice's: the principal is the key's, never the commit's word.
    git(work, "-c", "user.email=ops@example.com", "commit", "-q", "--allow-empty", "-m", "claims to be ops")
    claims = git(work, "rev-parse", "HEAD").stdout.strip()
    assert (judged(work, signers, claims) or ("",))[:2] == ("G", "alice@example.com")


def test_allowed_signers_features_not_implemented_here_leave_the_verdict_to_ssh_keygen(signed, monkeypatch):
    work, keys, signers = signed
    good = commit(work, "signed by alice")
    wrapper_bin, calls = counting_ssh_keygen(work.parent)
    monkeypatch.setenv("PATH", f"{wrapper_bin}:{os.environ['PATH']}")
    assert [s.letter for s in check_commits(str(work), Rule(str(signers)), good, [], ssh_crypto)] == ["G"]
    assert not calls.exists()  # checked here
    pub = Path(f"{keys['alice']}.pub").read_text().strip()
    for line in (
        f'*@example.com namespaces="git" {pub}',  # a principal pattern
        f"alice@example.com cert-authority {pub}",  # a certificate authority
        f'alice@example.com valid-before="20991231Z" {pub}',
    ):  # a time in UTC
        signers.write_text(line + "\n")
        try:
            here = sshsig.verdict(cat(work, good), b"gpgsig", sshsig.parse_allowed_signers(signers.read_bytes()), verify_ssh)
        except sshsig.Unsupported:
            here = None
        assert here is None, line
        letter = git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?", good).stdout.strip()
        assert [s.letter for s in check_commits(str(work), Rule(str(signers)), good, [], ssh_crypto)] == [letter]
        assert "-Y" in calls.read_text()  # ssh-keygen decided
        calls.unlink()


def test_a_key_expiring_across_a_daylight_saving_change_is_judged_as_git_and_ssh_keygen_judge_it(signed, monkeypatch):
    """git hands ssh-keygen the commit's local time as text, which ssh-keygen reads back without daylight saving time:
    in Berlin, 03:20 summer time just after the change is read as 03:20 winter time, an hour later than it was."""
    work, keys, _signers = signed
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        signers = allowed_signers(work.parent / "dst_signers", ("old@example.com", keys["old"], 'valid-before="20190331030000"'))
        subprocess.run(
            ["git", "-c", f"user.signingkey={keys['old']}", "commit", "-q", "--allow-empty", "-m", "at 03:20"],
            cwd=work,
            env={**os.environ, "GIT_COMMITTER_DATE": "2019-03-31T01:20:00Z"},
            check=True,
        )
        late = git(work, "rev-parse", "HEAD").stdout.strip()
        assert (judged(work, signers, late) or ("",))[0] == "U"  # 01:20 UTC is before 03:00 local, yet expired
        subprocess.run(
            ["git", "-c", f"user.signingkey={keys['old']}", "commit", "-q", "--allow-empty", "-m", "at 01:50"],
            cwd=work,
            env={**os.environ, "GIT_COMMITTER_DATE": "2019-03-31T00:50:00Z"},
            check=True,
        )
        early = git(work, "rev-parse", "HEAD").stdout.strip()
        assert (judged(work, signers, early) or ("",))[:2] == ("G", "old@example.com")
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.fixture
def fido(short_tmp: Path) -> tuple[Path, dict[str, SkKey], Path]:
    """A clone with one unsigned commit; FIDO keys (application "ssh:") for fido (ed25519) and fido-ec (P-256) allowed,
    mallory's not."""
    keys = {"fido": sk_key("ed25519"), "fido-ec": sk_key("ecdsa"), "mallory": sk_key("ed25519")}
    signers = short_tmp / "allowed_signers"
    signers.write_text(
        f'fido@example.com namespaces="git" {keys["fido"].public_line}\nfido-ec@example.com {keys["fido-ec"].public_line}\n'
    )
    work = short_tmp / "work"
    git(short_tmp, "init", "-q", str(work))
    git(work, "commit", "-q", "--allow-empty", "-m", "unsigned start")
    return work, keys, signers


def test_fido_ed25519_and_ecdsa_signatures_are_good_in_process_as_in_ssh_keygen_whatever_flags_the_token_set(fido):
    """ssh-keygen -Y verify asks nothing of the flags: no user presence (0x01) is good, as user verification (0x04)."""
    work, keys, signers = fido
    for name in ("fido", "fido-ec"):
        (work.parent / f"{name}.pub").write_text(keys[name].public_line + "\n")
        fingerprint = run(["ssh-keygen", "-l", "-f", str(work.parent / f"{name}.pub")]).stdout.split()[1]
        for flags in (0x01, 0x00, 0x05, 0x04):
            [signed] = sk_commits(work, keys[name], [f"by {name}, flags {flags}"], flags=flags, counter=flags + 7)
            assert judged(work, signers, signed) == ("G", f"{name}@example.com", fingerprint), (name, flags)
            verify = git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", signed, check=False)
            assert verify.returncode == 0 and f'Good "git" signature for {name}@example.com' in verify.stderr, verify.stderr


def test_allowed_signers_with_no_touch_required_or_verify_required_are_left_to_ssh_keygen_which_refuses_them(fido):
    """Those are authorized_keys options of sshd: ssh-keygen's allowed_signers knows none (`bad options`), so no flags
    make such a line good; the check here does not read the file and git's verdict stands."""
    work, keys, signers = fido
    for option, flags in (
        ("no-touch-required", 0x00),
        ("no-touch-required", 0x01),
        ("verify-required", 0x05),
        ("verify-required", 0x01),
    ):
        signers.write_text(f"fido@example.com {option} {keys['fido'].public_line}\n")
        [signed] = sk_commits(work, keys["fido"], [f"{option}, flags {flags}"], flags=flags)
        with pytest.raises(sshsig.Unsupported):
            sshsig.parse_allowed_signers(signers.read_bytes())
        assert keygen_principals(work, signers, signed) == set()
        letter = git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?", signed).stdout.strip()
        assert letter != "G"
        assert git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", signed, check=False).returncode != 0
        assert [s.letter for s in check_commits(str(work), Rule(str(signers)), signed, [])] == [letter]


def test_a_fido_signed_commit_changed_after_signing_or_with_its_flags_or_counter_changed_is_bad_as_in_ssh_keygen(fido):
    work, keys, signers = fido
    for name in ("fido", "fido-ec"):
        [good] = sk_commits(work, keys[name], [f"signed work by {name}"], flags=0x01, counter=41)
        body = cat(work, good)
        assert (judged(work, signers, good) or ("",))[0] == "G"
        payload, armored = sshsig.split_commit(body, b"gpgsig") or (b"", b"")
        blob = base64.b64decode(b"".join(armored.split(b"\n")[1:-2]))
        changed = [write(work, body.replace(b"signed work", b"signed wOrk"))]
        for at in (-5, -1):  # the flags byte (user presence taken away), the counter's last byte
            forged = bytearray(blob)
            forged[at] ^= 1
            text = base64.b64encode(bytes(forged))
            lines = [b"-----BEGIN SSH SIGNATURE-----", *(text[i : i + 70] for i in range(0, len(text), 70))]
            changed.append(write(work, with_signature(payload, b"\n".join([*lines, b"-----END SSH SIGNATURE-----"]))))
        for commit_id in changed:
            assert (judged(work, signers, commit_id) or ("",))[0] == "B", (name, commit_id)


def test_a_fido_signature_for_another_application_or_key_is_not_good_in_process_as_in_ssh_keygen(fido):
    """The application is the key's: a token signing for "ssh:other" does not sign for the "ssh:" key (bad), and the same
    key pair named with "ssh:other" is another key, not allowed (U), as is a key not in allowed_signers at all."""
    work, keys, signers = fido
    for name in ("fido", "fido-ec"):
        [other_app] = sk_commits(work, keys[name], ["signed for ssh:other"], application=b"ssh:other")
        assert (judged(work, signers, other_app) or ("",))[0] == "B"
        other_key = sk_key("ed25519" if name == "fido" else "ecdsa", b"ssh:other", private=keys[name].private)
        [renamed] = sk_commits(work, other_key, ["signed by the same pair for ssh:other"])
        assert (judged(work, signers, renamed) or ("",))[0] == "U"
    [unknown] = sk_commits(work, keys["mallory"], ["by mallory's token"])
    assert (judged(work, signers, unknown) or ("",))[0] == "U"


def test_the_daemons_judge_checks_ssh_signatures_in_its_own_process_and_starts_no_ssh_keygen(short_tmp, monkeypatch):
    """The daemon hands the gate adapters/signing's check (daemon/wiring.py), as hook_entry does for the hook."""
    key = ssh_key(short_tmp / "keys", "alice")
    signers = allowed_signers(short_tmp / "allowed_signers", ("alice@example.com", key))
    sandbox = Sandbox(short_tmp / "s", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"allowed_signers": str(signers)}}})
    sign_with(sandbox.work, key)
    good = commit(sandbox.work, "signed by alice")
    sandbox.push("main")
    wrapper_bin, calls = counting_ssh_keygen(short_tmp)
    monkeypatch.setenv("PATH", f"{wrapper_bin}:{os.environ['PATH']}")
    config = load(sandbox.config)
    repo = config.repository("shop")
    store = Store(config.database)
    try:
        verdict = PolicyJudge(lambda: config, store)(repo, repo.environment("qa"), Head(good, sandbox.tree(good)), None, False)
    finally:
        store.close()
    assert verdict.rule_id != "signature", verdict.refusal_lines("refs/heads/qa")
    assert not calls.exists()  # checked here


def test_allowed_signers_options_and_principal_patterns_are_never_accepted_in_process_where_ssh_keygen_refuses(signed):
    """A red-team list of allowed_signers lines for alice's key, each judged in process and by git (ssh-keygen -Y): where
    the process decides, it says what git says; it never says G where git does not; the check's result is git's."""
    work, keys, signers = signed
    good = commit(work, "signed by alice")
    stamp = int(next(line for line in cat(work, good).split(b"\n") if line.startswith(b"committer ")).split()[-2])

    def local(when: int) -> str:
        return time.strftime("%Y%m%d%H%M%S", time.localtime(when))

    pub = Path(f"{keys['alice']}.pub").read_text().strip()
    kind, blob = pub.split()[:2]
    lines = [
        f'alice@example.com NAMESPACES="git" {pub}',  # ssh-keygen reads option names in any case
        f"alice@example.com Cert-Authority {pub}",
        f'alice@example.com namespaces="file" {pub}',
        f'alice@example.com namespaces="file,git" {pub}',
        f'alice@example.com namespaces="GIT" {pub}',
        f'alice@example.com namespaces="gi*" {pub}',
        f'alice@example.com namespaces="!git,*" {pub}',
        f'alice@example.com namespaces="" {pub}',
        f'alice@example.com namespaces="git",namespaces="file" {pub}',
        f'alice@example.com namespaces="git", {pub}',
        f'alice@example.com namespaces="g\\"it" {pub}',
        f'alice@example.com valid-after="{local(stamp)}" {pub}',  # the edges, at the commit's own second
        f'alice@example.com valid-after="{local(stamp + 1)}" {pub}',
        f'alice@example.com valid-before="{local(stamp)}" {pub}',
        f'alice@example.com valid-before="{local(stamp - 1)}" {pub}',
        f'alice@example.com valid-after="{local(stamp)}",valid-before="{local(stamp)}" {pub}',
        f'alice@example.com valid-after="{local(stamp + 86400)[:8]}" {pub}',
        f'alice@example.com valid-before="{local(stamp)[:12]}Z" {pub}',
        f'alice@example.com valid-after="20241301" {pub}',  # no such month
        f"alice@* {pub}",
        f"* {pub}",
        f"!mallory@example.com,alice@example.com {pub}",
        f"alice@example.com,ops@example.com {pub}",
        f'"alice@example.com" {pub}',
        f"ALICE@example.com {pub}",
        f"alice@example.com ssh-rsa {blob}",  # another key type named than the key's
        f"alice@example.com\t{kind}\t{blob}\tcomment words",
        f'alice@example.com valid-before="{local(stamp - 1)}" {pub}\nalice@example.com {pub}',  # the key twice
        f"alice@example.com {pub}\nmallory@example.com {pub}",
        f"# alice@example.com {pub}",
        f"mallory@example.com {Path(str(keys['mallory']) + '.pub').read_text().strip()}",
    ]
    decided = 0
    for line in lines:
        signers.write_text(line + "\n")
        try:
            here = sshsig.verdict(cat(work, good), b"gpgsig", sshsig.parse_allowed_signers(signers.read_bytes()), verify_ssh)
        except sshsig.Unsupported:
            here = None
        letter, principal = (
            git(work, "-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?%x02%GS", good)
            .stdout.strip("\n")
            .split("\x02")
        )
        if here is not None:
            decided += 1
            assert (here[0], here[1]) == (letter, principal), (line, here, letter, principal)
        assert here is None or here[0] != "G" or letter == "G", (line, here, letter)
        final = check_commits(str(work), Rule(str(signers)), good, [], ssh_crypto)
        assert [(s.letter, s.signer) for s in final] == [(letter, principal)], (line, final, letter)
    assert decided >= 5, decided  # the plain cases are still checked here, not all left to ssh-keygen
