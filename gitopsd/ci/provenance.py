"""Signed provenance: an in-toto Statement (v1) with a SLSA provenance (v1) predicate for each built artifact.

Built-in CI writes one for each artifact it keeps, in a DSSE envelope signed with the service's key
(adapters/signing.py), into `artifacts_dir/provenance/<repo>/<tree>/`, and the tree's manifest names
it. External CI may upload its own envelope with a commit status (docs/ci.md); it must be signed by a
key in the repository's `ci.provenance_keys` and speak of the status's commit or tree. `check` says,
one line per artifact or statement, whether the signature holds and the bits are the bits signed:
`gitopsd verify` prints it, and `require_provenance: true` refuses a tree before each batch unless all holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..adapters import signing
from ..core.errors import ConfigurationError, UserError
from ..core.settings import Config
from .artifacts import ArtifactStore

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://gitopsd.dev/ci-steps/v1"
MAX_ENVELOPE = 1 << 20  # bytes of an uploaded envelope
CHUNK = 1 << 20


class InvalidProvenance(UserError):
    """An envelope or statement gitopsd cannot accept (422 in the API): the message says what is wrong."""


@dataclass(frozen=True)
class Finding:
    """One line of a verification: what was checked and whether it holds."""

    ok: bool
    line: str


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed (the type and the payload, with their lengths)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def statement(
    *,
    name: str,
    sha256: str,
    repo: str,
    repo_path: str,
    commit: str,
    tree: str,
    steps: list[dict[str, Any]],
    run_id: int,
    started: float,
    builder: str,
) -> dict[str, Any]:
    """The in-toto Statement for one artifact built from `commit` (`tree`) by `steps` (each {name, run})."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "repository": repo,
                    "commit": commit,
                    "tree": tree,
                    "steps": [{"name": s["name"], "run": list(s["run"])} for s in steps],
                },
                "internalParameters": {},
                "resolvedDependencies": [
                    {"uri": f"git+file://{repo_path}", "name": repo, "digest": {"gitCommit": commit, "gitTree": tree}}
                ],
            },
            "runDetails": {
                "builder": {"id": builder},
                "metadata": {
                    "invocationId": f"{repo}/ci/{run_id}",
                    "startedOn": _rfc3339(started),
                    "finishedOn": _rfc3339(time.time()),
                },
                "byproducts": [{"name": name, "digest": {"sha256": sha256}}],
            },
        },
    }


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def builder_id() -> str:
    return f"https://gitopsd.dev/builder/{socket.gethostname()}"


def envelope(state_dir: Path, body: dict[str, Any]) -> dict[str, Any]:
    """`body` as a DSSE envelope signed with the service's key."""
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    keyid, sig = signing.sign(state_dir, pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}],
    }


NAME_MAX = 200  # characters of a statement's file name before .intoto.json (a file name holds 255 bytes)


def folder(artifacts_dir: Path, repo: str, tree: str) -> Path:
    return Path(artifacts_dir) / "provenance" / repo / tree


def write(artifacts_dir: Path, repo: str, tree: str, stem: str, env: dict[str, Any]) -> Path:
    """Store an envelope for `tree` as `<stem>.intoto.json` (atomically); return its path. A stem too long for a file
    name (a status context may have 255 characters, each up to 12 bytes quoted) keeps its start and a digest of it all."""
    with staged(artifacts_dir, repo, tree, stem, env) as path:
        return path


@contextlib.contextmanager
def staged(artifacts_dir: Path, repo: str, tree: str, stem: str, env: dict[str, Any]) -> Iterator[Path]:
    """Write an envelope for `tree` beside its place and yield the place (write's); it is put there only when the block
    succeeds. A failure in the block (the store refusing the status) or in the writing leaves no file and no new
    folder behind, and an earlier statement of the same name as it was."""
    name = quote(stem, safe="")
    if len(name) > NAME_MAX:
        name = f"{name[: NAME_MAX - 17]}-{hashlib.sha256(stem.encode()).hexdigest()[:16]}"
    path = folder(artifacts_dir, repo, tree) / f"{name}.intoto.json"
    made = [p for p in reversed(path.parents) if not p.exists()]  # the folders this write creates, outermost first
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(env, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        yield path
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for created in reversed(made):
            try:
                created.rmdir()  # only while empty: another upload may have put its statement there meanwhile
            except FileNotFoundError:  # not made after all (the mkdir failed before it)
                continue
            except OSError:
                break
        raise


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidProvenance(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidProvenance(f"{what} is not base64 ({exc})") from exc


def open_envelope(env: Any, keys: list[signing.PublicKey]) -> tuple[dict[str, Any], str]:
    """Given a decoded DSSE envelope, return (its in-toto statement, the id of the trusted key that signed it).

    Raise InvalidProvenance saying what is wrong: not an envelope, no signature by a trusted key, not a Statement.
    """
    if not isinstance(env, dict) or not isinstance(env.get("signatures"), list):
        raise InvalidProvenance("not a DSSE envelope: expected {payloadType, payload, signatures: [{keyid, sig}]}")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise InvalidProvenance(f"payloadType must be {PAYLOAD_TYPE}, not {str(env.get('payloadType'))[:80]!r}")
    payload = _b64(env.get("payload"), "payload")
    signed = pae(PAYLOAD_TYPE, payload)
    by = None
    for entry in env["signatures"][:16]:
        if isinstance(entry, dict):
            sig = _b64(entry.get("sig"), "a signature's sig")
            by = next((k.keyid for k in keys if signing.verify(k, signed, sig)), None)
            if by:
                break
    if by is None:
        raise InvalidProvenance(
            "no signature by a trusted key (the service's own, or one in ci.provenance_keys): "
            "signed by another key, or changed after signing"
        )
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise InvalidProvenance(f"the payload is not JSON ({exc})") from exc
    except RecursionError as exc:
        raise InvalidProvenance("the payload is nested too deeply to read") from exc
    if not isinstance(body, dict) or body.get("_type") != STATEMENT_TYPE or not isinstance(body.get("subject"), list):
        raise InvalidProvenance(f"the payload is not an in-toto Statement ({STATEMENT_TYPE}) with a subject list")
    for subject in body["subject"]:
        digest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
            raise InvalidProvenance("every subject needs a name and a sha256 digest")
    return body, by


def sources(body: dict[str, Any]) -> set[str]:
    """The commits and trees a statement says it was built from (SLSA v1 resolvedDependencies, and ours)."""
    found: set[str] = set()
    predicate = body.get("predicate")
    definition = predicate.get("buildDefinition") if isinstance(predicate, dict) else None
    deps = definition.get("resolvedDependencies") if isinstance(definition, dict) else None
    for dep in deps if isinstance(deps, list) else []:
        digest = dep.get("digest") if isinstance(dep, dict) else None
        if isinstance(digest, dict):
            found |= {str(digest[k]).lower() for k in ("gitCommit", "gitTree", "sha1") if k in digest}
    return found


def accept_upload(
    state_dir: Path, artifacts_dir: Path, key_files: tuple[Path, ...], repo: str, commit: str, tree: str, context: str, env: Any
) -> contextlib.AbstractContextManager[Path]:
    """Check an envelope external CI uploaded with its status for `commit`; return its storing (staged): the block that
    records the status runs in it, and the statement stays only when that succeeds.

    Raise InvalidProvenance when it is not signed by a key of `ci.provenance_keys` or speaks of other content.
    """
    keys = trusted(state_dir, key_files, service=False)
    if not keys:
        raise InvalidProvenance("this repository trusts no CI key: list the CI's public key file in ci.provenance_keys")
    body, _by = open_envelope(env, keys)
    if not {commit, tree} & sources(body):
        raise InvalidProvenance(
            f"the statement is about other content: its resolvedDependencies name no gitCommit "
            f"{commit[:12]} or gitTree {tree[:12]}; upload it with the status of the commit it built"
        )
    return staged(artifacts_dir, repo, tree, f"external-{context}", env)


def subjects(env: Any) -> list[tuple[str, str]]:
    """(name, sha256) of each subject of an envelope accept_upload took (for the store's attestations: gate/attested.py)."""
    body = json.loads(_b64(env.get("payload"), "payload"))
    return [(str(s.get("name", "?")), str((s.get("digest") or {}).get("sha256", ""))) for s in body.get("subject", [])]


def trusted(state_dir: Path, key_files: tuple[Path, ...], service: bool = True) -> list[signing.PublicKey]:
    """The keys provenance is checked against: the service's own (if any and `service`) and the repository's."""
    keys = [signing.load_public(path) for path in key_files]
    own = signing.service_key(state_dir) if service else None
    return [own, *keys] if own else keys


def check(
    artifacts_dir: Path, keys: list[signing.PublicKey], repo: str, tree: str, manifest: dict[str, dict[str, Any]]
) -> list[Finding]:
    """Verify each built artifact of `tree` (`manifest`: name -> {sha256, path, provenance?}) and each uploaded statement.

    A tree with neither gets one failing finding: with `require_provenance` it has nothing to vouch for it.
    """
    findings = []
    for name, entry in sorted(manifest.items()):
        findings.append(_check_artifact(keys, tree, name, entry))
    where = folder(artifacts_dir, repo, tree)
    for path in sorted(where.glob("external-*.intoto.json")) if where.is_dir() else []:
        try:
            body, by = open_envelope(json.loads(path.read_text(encoding="utf-8")), keys)
            subjects = ", ".join(str(s.get("name", "?")) for s in body["subject"])
            findings.append(Finding(True, f"ok: uploaded statement {path.name} for {subjects} signed by key {by[:12]}"))
        except (OSError, ValueError, InvalidProvenance) as exc:
            findings.append(Finding(False, f"refused: uploaded statement {path.name}: {exc}"))
    if not findings:
        findings.append(
            Finding(
                False,
                f"refused: tree {tree[:12]} has no artifacts and no provenance: "
                "let CI build it (ci.steps with artifacts) or upload a statement with a status",
            )
        )
    return findings


def _check_artifact(keys: list[signing.PublicKey], tree: str, name: str, entry: dict[str, Any]) -> Finding:
    expected = str(entry.get("sha256", ""))
    where = entry.get("provenance")
    if not where:
        return Finding(
            False,
            f"refused: artifact {name} has no provenance (built before signing was on?): build the tree again (gitopsd ci rerun)",
        )
    try:
        body, by = open_envelope(json.loads(Path(where).read_text(encoding="utf-8")), keys)
    except (OSError, ValueError, InvalidProvenance) as exc:
        return Finding(False, f"refused: artifact {name}: its provenance {where}: {exc}")
    if tree not in sources(body):
        return Finding(False, f"refused: artifact {name}: its statement is about other content, not tree {tree[:12]}")
    signed = {str(s["digest"]["sha256"]) for s in body["subject"] if s.get("name") == name}
    if expected not in signed:
        return Finding(False, f"refused: artifact {name}: the statement signs other content, not sha256 {expected[:12]}")
    try:
        actual = sha256_file(Path(str(entry.get("path"))))
    except OSError as exc:
        return Finding(False, f"refused: artifact {name} cannot be read ({exc.strerror or exc}): build the tree again")
    if actual != expected:
        return Finding(
            False,
            f"refused: artifact {name} changed after signing (sha256 {actual[:12]}, signed "
            f"{expected[:12]}): build the tree again (gitopsd ci rerun) and find who wrote it",
        )
    return Finding(True, f"ok: artifact {name} sha256 {expected[:12]} signed by key {by[:12]}")


def verify_tree(config: Config, repo: str, tree: str) -> list[Finding]:
    """`check` for a configured repository's tree, with the service's key and the repository's `ci.provenance_keys`."""
    settings = config.repository(repo)
    try:
        keys = trusted(config.state_dir, settings.ci.provenance_keys if settings else ())
    except ConfigurationError as exc:
        return [Finding(False, f"refused: {exc}")]
    return check(config.artifacts_dir, keys, repo, tree, ArtifactStore(config.artifacts_dir).manifest(repo, tree))


def refusal(config: Config, repo: str, tree: str) -> str | None:
    """The first reason `tree`'s artifacts may not be deployed (require_provenance), or None when every check holds."""
    return next((f.line for f in verify_tree(config, repo, tree) if not f.ok), None)


def verify_file(config: Config, path: Path) -> list[Finding]:
    """`check` for every tree whose manifest lists the file at `path` (a kept artifact: by its stored name or bits)."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    wanted = {actual, Path(path).name}
    findings = []
    for manifest in sorted((Path(config.artifacts_dir) / "manifests").glob("*/*.json")):
        repo, tree = manifest.parent.name, manifest.stem
        listed = ArtifactStore(config.artifacts_dir).manifest(repo, tree)
        for name, entry in sorted(listed.items()):
            if entry.get("sha256") in wanted:
                settings = config.repository(repo)
                try:
                    keys = trusted(config.state_dir, settings.ci.provenance_keys if settings else ())
                except ConfigurationError as exc:
                    findings.append(Finding(False, f"refused: {exc}"))
                    continue
                found = _check_artifact(keys, tree, name, {**entry, "path": str(path)})
                findings.append(Finding(found.ok, f"{found.line} ({repo} tree {tree[:12]})"))
    if not findings:
        findings.append(
            Finding(
                False,
                f"refused: {path} (sha256 {actual[:12]}) is no artifact gitopsd's CI kept: "
                "give a file under <state_dir>/artifacts/sha256/ or a deployment number",
            )
        )
    return findings
