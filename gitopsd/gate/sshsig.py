"""SSH commit signatures (SSHSIG, namespace git) checked in this process, as `git verify-commit` and `ssh-keygen -Y` would.

Git starts ssh-keygen once or twice per commit (find-principals, then verify): 500 new commits took
28 s (docs/benchmarks.md, row m; a p95 of 164 ms now, on a quiet machine). Here the commits are read with one
`git cat-file --batch`, split the way git splits them (payload and `gpgsig` header), and each signature is checked against the
allowed_signers file. Only a good verdict is taken from here: a commit whose signature, key or
allowed_signers line uses anything not implemented below (certificates, patterns in principals or
namespaces, webauthn signatures, a revocation file, a time zone suffix, a line ssh-keygen would not parse) or
whose signature does not verify is left to git and ssh-keygen, and their verdict (and its message)
stands. So this is never more lenient than `ssh-keygen -Y verify`; it is only faster when all is well.

Standard library only (it runs in the hook): the cryptographic check is the port `Check`, given by the
caller (adapters/signing.verify_ssh, the one importer of `cryptography`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:
    from collections.abc import Callable

    # (key type, key fields, signature type, signature fields, signed data) -> does the signature verify?
    Check = Callable[[str, "list[bytes]", str, "list[bytes]", bytes], bool]

BEGIN = b"-----BEGIN SSH SIGNATURE-----\n"
END = b"\n-----END SSH SIGNATURE-----"
CURVES = {"ecdsa-sha2-nistp256": b"nistp256", "ecdsa-sha2-nistp384": b"nistp384", "ecdsa-sha2-nistp521": b"nistp521"}
# FIDO keys (PROTOCOL.u2f): the token signs sha256(application) || flags || counter || sha256(data) with the plain key
SK_TYPES = {"sk-ssh-ed25519@openssh.com": "ssh-ed25519", "sk-ecdsa-sha2-nistp256@openssh.com": "ecdsa-sha2-nistp256"}
CHECKED_TYPES = ("ssh-ed25519", "ssh-rsa", *CURVES, *SK_TYPES)
# Key types ssh-keygen reads in allowed_signers; a line with one not checked here never matches a key checked here.
OTHER_TYPES = (
    "ssh-dss",
    *(f"{t}-cert-v01@openssh.com" for t in ("ssh-ed25519", "ssh-rsa", "ssh-dss", *CURVES, *SK_TYPES)),
)
RSA_SIGNATURES = ("rsa-sha2-256", "rsa-sha2-512")
HASHES = (b"sha256", b"sha512")


class Unsupported(ValueError):
    """Something this module does not implement: git and ssh-keygen decide instead."""


class Reader:
    """SSH wire format (RFC 4251): uint32 and length-prefixed strings, nothing left over at the end."""

    __slots__ = ("data", "at")

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def u8(self) -> int:
        if self.at + 1 > len(self.data):
            raise Unsupported("short")
        self.at += 1
        return self.data[self.at - 1]

    def u32(self) -> int:
        if self.at + 4 > len(self.data):
            raise Unsupported("short")
        self.at += 4
        return int.from_bytes(self.data[self.at - 4 : self.at], "big")

    def string(self) -> bytes:
        size = self.u32()
        if self.at + size > len(self.data):
            raise Unsupported("short")
        self.at += size
        return self.data[self.at - size : self.at]

    def mpint(self) -> bytes:
        """A positive integer in its one canonical encoding (anything else is left to ssh-keygen)."""
        value = self.string()
        if not value or value[0] & 0x80 or (len(value) > 1 and value[0] == 0 and not value[1] & 0x80):
            raise Unsupported("mpint")
        return value

    def end(self) -> None:
        if self.at != len(self.data):
            raise Unsupported("trailing data")


def string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def fingerprint(blob: bytes) -> str:
    """`ssh-keygen -l`'s SHA256:... fingerprint of a public key blob (what git shows as the key)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_key(blob: bytes) -> tuple[str, list[bytes]]:
    """(type, fields) of a public key blob of a type checked here. Raise Unsupported."""
    reader = Reader(blob)
    kind = reader.string().decode("ascii", "replace")
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        fields = [reader.string()]
        if len(fields[0]) != 32:
            raise Unsupported("ed25519 key size")
    elif kind == "ssh-rsa":
        fields = [reader.mpint(), reader.mpint()]  # e, n
        if not 2048 <= int.from_bytes(fields[1], "big").bit_length() <= 16384:
            raise Unsupported("RSA key size")
    elif kind in CURVES or kind == "sk-ecdsa-sha2-nistp256@openssh.com":
        curve = SK_TYPES.get(kind, kind)
        if reader.string() != CURVES[curve]:
            raise Unsupported("curve")
        fields = [reader.string()]
        size = {"ecdsa-sha2-nistp256": 32, "ecdsa-sha2-nistp384": 48, "ecdsa-sha2-nistp521": 66}[curve]
        if len(fields[0]) != 1 + 2 * size or fields[0][0] != 4:  # uncompressed points only
            raise Unsupported("point")
    else:
        raise Unsupported(kind)
    if kind in SK_TYPES:
        fields.append(reader.string())  # the application, hashed into what the token signs
        if b"\0" in fields[-1]:
            raise Unsupported("application")  # OpenSSH reads it as a C string: one ending in NUL equals one without
    reader.end()
    return kind, fields


def parse_signature_blob(kind: str, key_fields: list[bytes], blob: bytes) -> tuple[str, list[bytes]]:
    """(signature type, fields) of the signature inside an SSHSIG, for a key of `kind` (a FIDO key's: the signature's
    fields, then its flags byte and counter as the token signed them). Raise Unsupported."""
    reader = Reader(blob)
    sigtype = reader.string().decode("ascii", "replace")
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        fields = [reader.string()]
        if sigtype != kind or len(fields[0]) != 64:
            raise Unsupported("ed25519 signature")
    elif kind == "ssh-rsa":
        fields = [reader.string()]
        if sigtype not in RSA_SIGNATURES or len(fields[0]) != len(key_fields[1].lstrip(b"\0")):
            raise Unsupported("RSA signature")
    else:
        if sigtype != kind:
            raise Unsupported("ECDSA signature type")
        inner = Reader(reader.string())
        fields = [inner.mpint(), inner.mpint()]  # r, s
        inner.end()
    if kind in SK_TYPES:  # (a webauthn signature has another type: left to ssh-keygen above)
        fields.append(reader.u8().to_bytes(1, "big") + reader.u32().to_bytes(4, "big"))
    reader.end()
    return sigtype, fields


def split_commit(raw: bytes, header: bytes) -> tuple[bytes, bytes] | None:
    """(payload, signature) of a commit object exactly as git's parse_buffer_signed_by_header splits it; None unsigned."""
    payload, signature = bytearray(), bytearray()
    in_signature = other = saw = False
    at, size = 0, len(raw)
    while at < size:
        nl = raw.find(b"\n", at)
        nxt = size if nl < 0 else nl + 1
        line = raw[at:nxt]
        sig = None
        if in_signature and line[:1] == b" ":
            sig = line[1:]
        elif line.startswith(header + b" "):
            sig, other = line[len(header) + 1 :], False
        elif line.startswith(b"gpgsig"):
            other = True
        elif other and line[:1] != b" ":
            other = False
        if sig is not None:
            signature += sig
            saw = in_signature = True
        else:
            if line[:1] == b"\n":
                nxt = size  # the message: the rest is payload
                line = raw[at:]
            if not other:
                payload += line
            in_signature = False
        at = nxt
    return (bytes(payload), bytes(signature)) if saw else None


def committer(payload: bytes) -> tuple[int, str]:
    """(verify time, e-mail) of the committer line: git checks a key's validity at the commit's time. Raise Unsupported."""
    head = payload.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if line.startswith(b"committer "):
            ident, _, when = line.rpartition(b">")
            fields = when.split()
            if len(fields) != 2 or not fields[0].isdigit() or b"<" not in ident or not 0 < int(fields[0]) < 2**33:
                raise Unsupported("committer")
            return verify_time(int(fields[0])), ident.rpartition(b"<")[2].decode("utf-8", "replace")
    raise Unsupported("no committer")


def verify_time(when: int) -> int:
    """The time ssh-keygen checks a key at for a commit made at `when`: git passes it as local YYYYMMDDHHMMSS
    (-Overify-time), which ssh-keygen reads back with mktime and no daylight saving time, as it reads valid-before."""
    return int(time.mktime((*time.localtime(when)[:6], 0, 0, 0)))


def dearmor(armored: bytes) -> tuple[bytes, bytes, bytes]:
    """(public key blob, hash algorithm, signature blob) of an armored SSHSIG for namespace git. Raise Unsupported."""
    end = armored.find(END, len(BEGIN) - 1)
    if not armored.startswith(BEGIN) or end < 0 or armored[end + len(END) :] not in (b"", b"\n"):
        raise Unsupported("armor")
    text = b"".join(armored[len(BEGIN) : end].split())
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unsupported("base64") from exc
    if base64.b64encode(blob) != text:
        raise Unsupported("base64 not canonical")
    reader = Reader(blob)
    if blob[:6] != b"SSHSIG":
        raise Unsupported("magic")
    reader.at = 6
    if reader.u32() != 1:
        raise Unsupported("version")
    key, namespace, _reserved, hashalg, signature = (reader.string() for _ in range(5))
    reader.end()
    if namespace != b"git" or hashalg not in HASHES:
        raise Unsupported("namespace or hash")  # ssh-keygen refuses these: git says so in its own words
    return key, hashalg, signature


class Signer:
    """One line of allowed_signers, as ssh-keygen reads it."""

    __slots__ = ("principals", "key", "ca", "namespaces", "after", "before")

    def __init__(
        self, principals: str, key: bytes, ca: bool, namespaces: list[str] | None, after: int | None, before: int | None
    ):
        self.principals, self.key, self.ca, self.namespaces = principals, key, ca, namespaces
        self.after, self.before = after, before

    @property
    def literal(self) -> bool:
        """One principal, no pattern: what find-principals prints is then what verify -I matches."""
        return not any(c in self.principals for c in ',*?!"\\')

    def valid_at(self, when: int) -> bool:
        return (self.after is None or when >= self.after) and (self.before is None or when <= self.before)


def absolute_time(text: str) -> int:
    """ssh-keygen's YYYYMMDD[HHMM[SS]] in local time (mktime, no DST), as its parse_absolute_time. Raise Unsupported."""
    if len(text) not in (8, 12, 14) or not text.isdigit() or not text.isascii():
        raise Unsupported("time")  # a Z or UTC suffix too: ssh-keygen decides
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[8:10] or 0), int(text[10:12] or 0), int(text[12:14] or 0)
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if not (1 <= month <= 12 and 1 <= day <= days[month - 1] and hour < 24 and minute < 60 and second < 60):
        raise Unsupported("time")
    when = int(time.mktime((year, month, day, hour, minute, second, 0, 0, 0)))
    if when <= 0:
        raise Unsupported("time")
    return when


def parse_options(text: str) -> tuple[bool, list[str] | None, int | None, int | None]:
    """(cert-authority, namespaces, valid-after, valid-before) of an options field. Raise Unsupported."""
    options: list[str] = []
    quoted, start = False, 0
    for at, char in enumerate(text):  # commas inside quotes belong to the value (namespaces="git,file")
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            options.append(text[start:at])
            start = at + 1
    options.append(text[start:])
    ca, values = False, {}
    for option in options:
        name, eq, value = option.partition("=")
        if not eq and name == "cert-authority" and not ca:
            ca = True
        elif (
            eq
            and name in ("namespaces", "valid-after", "valid-before")
            and name not in values
            and len(value) >= 2
            and value[0] == value[-1] == '"'
            and not any(c in value[1:-1] for c in '"\\')
        ):
            values[name] = value[1:-1]
        else:
            raise Unsupported("option")
    namespaces = values["namespaces"].split(",") if "namespaces" in values else None
    if namespaces is not None and any(c in n for n in namespaces for c in "*?!"):
        raise Unsupported("namespace pattern")
    after = absolute_time(values["valid-after"]) if "valid-after" in values else None
    before = absolute_time(values["valid-before"]) if "valid-before" in values else None
    if after is not None and before is not None and before <= after:
        raise Unsupported("times")
    return ca, namespaces, after, before


def parse_allowed_signers(content: bytes) -> list[Signer]:
    """Every line of an allowed_signers file. Raise Unsupported for anything ssh-keygen might read otherwise."""
    signers = []
    for raw in content.split(b"\n"):
        if any(b < 0x20 and b != 0x09 or b > 0x7E for b in raw):
            raise Unsupported("character")
        line = raw.decode("ascii").strip(" \t")
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3 or '"' in fields[0]:
            raise Unsupported("line")
        principals, rest = fields[0], fields[1:]
        options: tuple[bool, list[str] | None, int | None, int | None] = (False, None, None, None)
        if rest[0] not in CHECKED_TYPES + OTHER_TYPES:
            options, rest = parse_options(rest[0]), rest[1:]
        if len(rest) < 2 or rest[0] not in CHECKED_TYPES + OTHER_TYPES:
            raise Unsupported("key type")
        try:
            blob = base64.b64decode(rest[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unsupported("key") from exc
        if base64.b64encode(blob).decode() != rest[1] or Reader(blob).string() != rest[0].encode():
            raise Unsupported("key")
        if rest[0] in CHECKED_TYPES:
            parse_key(blob)
        signers.append(Signer(principals, blob, *options))
    return signers


def verdict(raw: bytes, header: bytes, signers: list[Signer], check: Check) -> tuple[str, str, str, str] | None:
    """(letter, principal, key fingerprint, committer e-mail) as git's %G? would say for a commit object, for the
    cases decided here: G good and allowed, U good but no allowed_signers line for the key at the commit's time,
    B not verifying. None: git and ssh-keygen must decide (unsigned, not SSH, or anything not implemented here)."""
    try:
        split = split_commit(raw, header)
        if split is None:
            return None
        payload, armored = split
        when, email = committer(payload)
        key_blob, hashalg, signature = dearmor(armored)
        kind, key_fields = parse_key(key_blob)
        sigtype, sig_fields = parse_signature_blob(kind, key_fields, signature)
    except Unsupported:
        return None
    lines = [s for s in signers if s.key == key_blob]
    valid = [s for s in lines if s.valid_at(when)]
    if len(lines) > 1 or any(s.ca or not s.literal or (s.namespaces is not None and "git" not in s.namespaces) for s in lines):
        return None
    digest = hashlib.new(hashalg.decode(), payload).digest()
    data = b"SSHSIG" + string(b"git") + string(b"") + string(hashalg) + string(digest)
    if kind in SK_TYPES:
        # ssh-keygen -Y verify asks nothing of the flags (user presence, verification): neither does this. Its
        # allowed_signers has no no-touch-required or verify-required (a line with one is an error there, left to it).
        application, flags_counter = key_fields[-1], sig_fields[-1]
        data = hashlib.sha256(application).digest() + flags_counter + hashlib.sha256(data).digest()
        kind = sigtype = SK_TYPES[kind]
        key_fields, sig_fields = key_fields[:-1], sig_fields[:-1]
    good = check(kind, key_fields, sigtype, sig_fields, data)
    letter = ("G" if valid else "U") if good else "B"
    return letter, valid[0].principals if valid and good else "", fingerprint(key_blob), email
