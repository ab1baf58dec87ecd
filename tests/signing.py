"""Test helpers for signed commits and pushes: real SSH keys (ssh-keygen) and real OpenPGP keys (gpg in a temp GNUPGHOME)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from tests.support import git, run


def ssh_key(folder: Path, name: str, kind: str = "ed25519") -> Path:
    """A new key pair `folder/name` (and `.pub`) of type `kind` (ed25519, rsa, ecdsa), no passphrase; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(key)])
    return key


def allowed_signers(path: Path, *entries: tuple[str, Path] | tuple[str, Path, str]) -> Path:
    """Write an allowed_signers file: one `PRINCIPAL namespaces="git"[,OPTIONS] KEY` line per (principal, key[, options])."""
    lines = []
    for principal, key, *options in entries:
        opts = ",".join(['namespaces="git"', *options])
        lines.append(f"{principal} {opts} {Path(str(key) + '.pub').read_text().strip()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sign_with(work: Path, key: Path) -> None:
    """Make every later commit (and `git push --signed`) in the clone `work` signed with the SSH key `key`."""
    git(work, "config", "gpg.format", "ssh")
    git(work, "config", "user.signingkey", str(key))
    git(work, "config", "commit.gpgsign", "true")


def commit(work: Path, message: str, *, signed: bool = True, key: Path | None = None) -> str:
    """An empty commit in `work` (signed as configured, unsigned, or with another key); return its id."""
    options = ["-c", f"user.signingkey={key}"] if key else []
    options += [] if signed else ["-c", "commit.gpgsign=false"]
    git(work, *options, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(work, "rev-parse", "HEAD").stdout.strip()


def counting_ssh_keygen(folder: Path) -> tuple[Path, Path]:
    """(a bin folder to put first on PATH, the file it writes to): an `ssh-keygen` there records each call's arguments
    in that file, then runs the real one, so a test can say whether a check started ssh-keygen at all."""
    calls = folder / "ssh-keygen-calls"
    wrapper = folder / "bin" / "ssh-keygen"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec /usr/bin/ssh-keygen "$@"\n')
    wrapper.chmod(0o755)
    return wrapper.parent, calls


def gpg_home(folder: Path) -> Path:
    """An empty GnuPG home (mode 0700, as gpg wants it)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def gpg_key(home: Path, uid: str) -> str:
    """A new ed25519 signing key for `uid` in the keyring `home`, no passphrase; return its fingerprint."""
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    run([*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"])
    out = run([*gpg, "--with-colons", "--list-secret-keys", uid]).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def gpg_export(home: Path, fingerprint: str, into: Path) -> None:
    """Copy a public key from one keyring to another (the server's keyring holds public keys only)."""
    key = run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fingerprint]).stdout
    run(["gpg", "--homedir", str(into), "--batch", "--import"], input=key)


def gpg_env(home: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(home)}


class SkKey(NamedTuple):
    """A FIDO key (sk-ssh-ed25519 or sk-ecdsa-sha2-nistp256) made in Python: ssh-keygen makes one only with a token."""

    kind: str
    private: Any  # ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    application: bytes
    blob: bytes

    @property
    def public_line(self) -> str:
        """The key as allowed_signers and `.pub` files write it."""
        return f"{self.kind} {base64.b64encode(self.blob).decode()}"


def _ssh_string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def sk_key(kind: str = "ed25519", application: bytes = b"ssh:", private: Any = None) -> SkKey:
    """A new FIDO key of `kind` (ed25519 or ecdsa) whose public blob names `application` (PROTOCOL.u2f); `private`: the
    same key pair as another SkKey's (for another application)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    if kind == "ed25519":
        private = private or ed25519.Ed25519PrivateKey.generate()
        name = "sk-ssh-ed25519@openssh.com"
        fields = _ssh_string(private.public_key().public_bytes(*raw))
    else:
        private = private or ec.generate_private_key(ec.SECP256R1())
        name = "sk-ecdsa-sha2-nistp256@openssh.com"
        fields = _ssh_string(b"nistp256") + _ssh_string(private.public_key().public_bytes(*point))
    return SkKey(name, private, application, _ssh_string(name.encode()) + fields + _ssh_string(application))


def sk_sign(
    key: SkKey,
    message: bytes,
    *,
    flags: int = 0x01,
    counter: int = 1,
    application: bytes | None = None,
    blob: bytes | None = None,
) -> bytes:
    """An armored SSHSIG (namespace git, sha512) over `message` as a token would make it (PROTOCOL.u2f, PROTOCOL.sshsig):
    the token signs sha256(application) || flags || counter || sha256(SSHSIG data). `application` is the one the token
    signs for (the key's unless given), `blob` the public key the SSHSIG names (the key's unless given)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.hazmat.primitives.hashes import SHA256

    data = b"SSHSIG" + _ssh_string(b"git") + _ssh_string(b"") + _ssh_string(b"sha512")
    data += _ssh_string(hashlib.sha512(message).digest())
    extra = bytes([flags]) + counter.to_bytes(4, "big")
    signed = hashlib.sha256(key.application if application is None else application).digest()
    signed += extra + hashlib.sha256(data).digest()
    if key.kind.startswith("sk-ssh-ed25519"):
        signature = _ssh_string(key.private.sign(signed))
    else:
        r, s = decode_dss_signature(key.private.sign(signed, ec.ECDSA(SHA256())))
        mpints = b"".join(_ssh_string(v.to_bytes(v.bit_length() // 8 + 1, "big")) for v in (r, s))
        signature = _ssh_string(mpints)
    sig_blob = _ssh_string(key.kind.encode()) + signature + extra
    sshsig = b"SSHSIG" + (1).to_bytes(4, "big") + _ssh_string(key.blob if blob is None else blob)
    sshsig += _ssh_string(b"git") + _ssh_string(b"") + _ssh_string(b"sha512") + _ssh_string(sig_blob)
    text = base64.b64encode(sshsig)
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return b"-----BEGIN SSH SIGNATURE-----\n" + b"\n".join(lines) + b"\n-----END SSH SIGNATURE-----\n"


def sk_commits(work: Path, key: SkKey, messages: list[str], **sign: Any) -> list[str]:
    """Commits on top of HEAD in `work` (its tree, one per message, in a row), each signed with the FIDO key `key`
    (`sign`: sk_sign's flags, counter, application, blob) as git writes a signature (a `gpgsig` header), written with
    one `git hash-object`; HEAD's branch moves to the last. Return their ids."""
    head = git(work, "rev-parse", "HEAD").stdout.strip()
    tree = git(work, "rev-parse", "HEAD^{tree}").stdout.strip()
    folder = work.parent / "sk-commits"
    folder.mkdir(exist_ok=True)
    ids, paths, parent, when = [], [], head, int(time.time())
    for message in messages:
        ident = f"Alice <alice@example.com> {when} +0000"
        payload = f"tree {tree}\nparent {parent}\nauthor {ident}\ncommitter {ident}\n\n{message}\n".encode()
        armored = sk_sign(key, payload, **sign)
        top, _, body = payload.partition(b"\n\n")
        raw = top + b"\ngpgsig " + b"\n ".join(armored.rstrip(b"\n").split(b"\n")) + b"\n\n" + body
        parent = hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest()
        ids.append(parent)
        paths.append(folder / parent)
        paths[-1].write_bytes(raw)
    written = run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin-paths"], cwd=work, input="\n".join(map(str, paths)) + "\n"
    )
    assert written.stdout.split() == ids, "git hashed the commits otherwise"
    for path in paths:
        path.unlink()
    git(work, "update-ref", "HEAD", ids[-1])
    return ids
