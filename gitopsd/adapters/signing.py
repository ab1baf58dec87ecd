"""The service's ed25519 signing key and signature checks: the one module that imports `cryptography`.

The key signs what gitopsd vouches for (the provenance of what its CI built, ci/provenance.py). It is
made on first use under the state folder, readable by the service's user only; its public half is kept
beside it so that `gitopsd verify` and other readers need no secret.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

# `serialization` (0.1 s) is imported by the functions that use it: the hook's SSH checks (verify_ssh) do without.
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

from ..core.errors import ConfigurationError

if TYPE_CHECKING:
    from ..gate.sshsig import Check

KEY_NAME = "signing-key.pem"


class PublicKey(NamedTuple):
    """A key signatures are checked against: its id (sha256 of its public DER, hex) and where it came from.
    (A NamedTuple, not a dataclass: importing dataclasses costs the hook's SSH checks more than they take.)"""

    keyid: str
    source: str
    der: bytes


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_NAME


def _keyid(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _public_der(key: ed25519.Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private(path: Path) -> ed25519.Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"the signing key {path} cannot be read ({exc}): remove it and a new one is made "
            "(what it signed then no longer verifies)"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(f"the signing key {path} is not an ed25519 key: remove it and a new one is made")
    return key


def ensure_key(state_dir: Path) -> PublicKey:
    """Make the service's key under `state_dir` unless it exists (0600, public half beside it); return its public half."""
    from cryptography.hazmat.primitives import serialization

    path = key_path(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = _load_private(path)
    public = path.with_suffix(".pub")
    der = _public_der(key)
    if not public.exists():
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return PublicKey(_keyid(der), str(path), der)


def signing_key_id(state_dir: Path) -> str:
    """The id of the key the service signs with (its private half, read; nothing made). Raise ConfigurationError."""
    return _keyid(_public_der(_load_private(key_path(state_dir))))


def sign(state_dir: Path, data: bytes) -> tuple[str, bytes]:
    """Sign `data` with the service's key (made if missing); return (keyid, signature)."""
    ensure_key(state_dir)
    key = _load_private(key_path(state_dir))
    return _keyid(_public_der(key)), key.sign(data)


def service_key(state_dir: Path) -> PublicKey | None:
    """The public half of the service's key, or None when there is none yet."""
    public = key_path(state_dir).with_suffix(".pub")
    return load_public(public) if public.exists() else None


def load_public(path: Path) -> PublicKey:
    """A PEM public key (ed25519, ECDSA P-256/384 or RSA) from a file. Raise ConfigurationError saying what is wrong."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"{path}: not a PEM public key ({exc}): export it with `openssl pkey -pubout` or your signer's tool"
        ) from exc
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise ConfigurationError(f"{path}: a {type(key).__name__}; gitopsd checks ed25519, ECDSA and RSA keys")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(_keyid(der), str(path), der)


def verify(public: PublicKey, data: bytes, signature: bytes) -> bool:
    """Whether `signature` over `data` was made by `public`'s private half."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_der_public_key(public.der)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PSS(padding.MGF1(SHA256()), padding.PSS.AUTO), SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def ssh_crypto() -> Check:
    """gate/signatures.SshCrypto for the daemon and the CLI (the hook's is hook_entry.ssh_crypto): verify_ssh."""
    return verify_ssh


def verify_ssh(kind: str, key: list[bytes], sigtype: str, signature: list[bytes], data: bytes) -> bool:
    """Whether an SSH signature (fields as gate/sshsig.py parsed them: ed25519, RSA or ECDSA) is good over `data`."""
    try:
        if kind == "ssh-ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(key[0]).verify(signature[0], data)
        elif kind == "ssh-rsa":
            from cryptography.hazmat.primitives.hashes import SHA512

            numbers = rsa.RSAPublicNumbers(int.from_bytes(key[0], "big"), int.from_bytes(key[1], "big"))
            digest = SHA256() if sigtype == "rsa-sha2-256" else SHA512()
            numbers.public_key().verify(signature[0], data, padding.PKCS1v15(), digest)
        else:
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
            from cryptography.hazmat.primitives.hashes import SHA384, SHA512

            curve, hashed = {
                "ecdsa-sha2-nistp256": (ec.SECP256R1(), SHA256()),
                "ecdsa-sha2-nistp384": (ec.SECP384R1(), SHA384()),
                "ecdsa-sha2-nistp521": (ec.SECP521R1(), SHA512()),
            }[kind]
            public = ec.EllipticCurvePublicKey.from_encoded_point(curve, key[0])
            r, s = (int.from_bytes(v, "big") for v in signature)
            public.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashed))
    except (InvalidSignature, ValueError, KeyError):
        return False
    return True
