"""Signed provenance of built artifacts (ci/provenance.py, adapters/signing.py) and its check before each batch.

Real: the service's ed25519 key (made under a temp state folder), DSSE envelopes, the artifact store's files and
manifests. Faked: the playbook runs of `execute` (RunOutcome values), as in test_deployment.py.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

from gitopsd.adapters import signing
from gitopsd.ci import provenance
from gitopsd.ci.artifacts import ArtifactStore
from gitopsd.core.deployment import Toolbox, execute
from gitopsd.core.settings import Environment, Rollout
from gitopsd.core.types import HostInfo, PlaybookRun, RunOutcome

TREE = "a" * 40
COMMIT = "b" * 40


def built(tmp_path: Path) -> tuple[ArtifactStore, dict]:
    """One artifact kept for TREE, with a statement signed by the service's key, as ci/steps.py does."""
    export = tmp_path / "export"
    (export / "dist").mkdir(parents=True)
    (export / "dist" / "app.tar.gz").write_bytes(b"the bits CI built\n")
    store = ArtifactStore(tmp_path / "artifacts")
    kept = store.keep("shop", TREE, export, ("dist/*",))
    for name, entry in kept.items():
        body = provenance.statement(
            name=name,
            sha256=entry["sha256"],
            repo="shop",
            repo_path="/srv/git/shop.git",
            commit=COMMIT,
            tree=TREE,
            steps=[{"name": "build", "run": ["make"]}],
            run_id=1,
            started=0.0,
            builder=provenance.builder_id(),
        )
        path = provenance.write(store.root, "shop", TREE, name, provenance.envelope(tmp_path / "state", body))
        store.attest("shop", TREE, name, path)
    return store, kept


def findings(tmp_path: Path, store: ArtifactStore) -> list[provenance.Finding]:
    keys = provenance.trusted(tmp_path / "state", ())
    return provenance.check(store.root, keys, "shop", TREE, store.manifest("shop", TREE))


def test_an_artifact_signed_by_the_service_verifies_with_its_digest_and_key(tmp_path):
    store, kept = built(tmp_path)
    (finding,) = findings(tmp_path, store)
    assert finding.ok, finding.line
    assert finding.line.startswith(f"ok: artifact dist/app.tar.gz sha256 {kept['dist/app.tar.gz']['sha256'][:12]}")
    env = json.loads(Path(store.manifest("shop", TREE)["dist/app.tar.gz"]["provenance"]).read_text())
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"] == {
        "gitCommit": COMMIT,
        "gitTree": TREE,
    }
    assert (tmp_path / "state" / "signing-key.pem").stat().st_mode & 0o077 == 0


def test_an_artifact_changed_after_signing_is_refused_in_one_line(tmp_path):
    store, kept = built(tmp_path)
    Path(kept["dist/app.tar.gz"]["path"]).write_bytes(b"other bits\n")
    (finding,) = findings(tmp_path, store)
    assert not finding.ok
    assert "artifact dist/app.tar.gz changed after signing" in finding.line and "\n" not in finding.line


def test_a_statement_over_other_content_is_refused(tmp_path):
    store, kept = built(tmp_path)
    path = Path(store.manifest("shop", TREE)["dist/app.tar.gz"]["provenance"])
    body = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
    body["subject"][0]["digest"]["sha256"] = "0" * 64  # validly signed, but about other bits
    path.write_text(json.dumps(provenance.envelope(tmp_path / "state", body)))
    (finding,) = findings(tmp_path, store)
    assert not finding.ok and "the statement signs other content" in finding.line


def test_an_envelope_edited_after_signing_or_signed_by_another_key_is_refused(tmp_path):
    store, _kept = built(tmp_path)
    path = Path(store.manifest("shop", TREE)["dist/app.tar.gz"]["provenance"])
    env = json.loads(path.read_text())
    body = json.loads(base64.b64decode(env["payload"]))
    body["predicate"]["runDetails"]["builder"]["id"] = "https://evil.example"
    path.write_text(json.dumps({**env, "payload": base64.b64encode(json.dumps(body).encode()).decode()}))
    (finding,) = findings(tmp_path, store)
    assert not finding.ok and "no signature by a trusted key" in finding.line
    path.write_text(json.dumps(provenance.envelope(tmp_path / "other-state", body)))  # another service's key
    (finding,) = findings(tmp_path, store)
    assert not finding.ok and "no signature by a trusted key" in finding.line


def test_a_tree_with_neither_artifacts_nor_statements_has_nothing_to_vouch_for_it(tmp_path):
    signing.ensure_key(tmp_path / "state")
    store = ArtifactStore(tmp_path / "artifacts")
    (finding,) = findings(tmp_path, store)
    assert not finding.ok and "has no artifacts and no provenance" in finding.line


def test_provenance_is_checked_before_each_batch_and_a_refusal_stops_the_rollout_before_the_next(tmp_path):
    hosts = ["p-1", "p-2"]
    env = Environment(
        "production", "production", "staging", "i", "p", rollout=Rollout(batches=(1, "100%")), require_provenance=True
    )
    run = PlaybookRun(
        marker="m",
        workdir=tmp_path,
        playbook=tmp_path / "p",
        inventory=tmp_path / "i",
        data_dir=tmp_path / "run",
        timeout=10,
        extravars={"gitopsd_repo": "shop", "gitopsd_tree": TREE},
    )
    answers = [None, "refused: artifact app changed after signing"]  # fine before batch 1, tampered before batch 2
    ran: list[str | None] = []

    def run_playbook(r: PlaybookRun, _cancel: threading.Event) -> RunOutcome:
        ran.append(r.limit)
        return RunOutcome(ok=True, status="successful", rc=0, reason="ok", hosts={h: "ok" for h in (r.limit or "").split(",")})

    tools = Toolbox(
        run_playbook=run_playbook,
        hosts_of=lambda _r, _n, _c: [HostInfo(h, {}) for h in hosts],
        provenance=lambda repo, tree: answers.pop(0),
    )
    attempt = execute(env, run, "deploy", tools, threading.Event())
    assert not attempt.ok and attempt.permanent
    assert ran == ["p-1"]
    assert attempt.reason == "batch 2/2: refused: artifact app changed after signing"
    assert attempt.hosts == {"p-1": "ok", "p-2": "skipped"}


def test_the_statements_of_a_pruned_tree_go_with_its_manifest(tmp_path):
    store, _kept = built(tmp_path)
    assert provenance.folder(store.root, "shop", TREE).is_dir()
    assert store.prune({"shop": 0}) == 1  # never deployed, none kept: its file, manifest and statements go
    assert not provenance.folder(store.root, "shop", TREE).exists() and store.manifest("shop", TREE) == {}
