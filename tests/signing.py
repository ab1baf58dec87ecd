"""Test helpers for signed commits and pushes: real SSH keys (ssh-keygen) and real OpenPGP keys (gpg in a temp GNUPGHOME)."""

from __future__ import annotations

import os
from pathlib import Path

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
