"""External CI uploads signed provenance with its commit status (docs/ci.md, "Signed provenance").

Real: the HTTP API served as the daemon serves it (tests/integration/test_api.py's Api), a repository, tokens, and
statements made and signed by the `in-toto` library (its DSSE Envelope, securesystemslib's CryptoSigner), as a CI
job using it would upload them. Faked: nothing.
"""

from __future__ import annotations

import json

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from in_toto.models.metadata import Envelope
from securesystemslib.signer import CryptoSigner

from gitopsd.adapters.store import Store
from gitopsd.ci import provenance
from gitopsd.config import load
from tests.integration.test_api import Api
from tests.support import Sandbox, free_port


def in_toto_envelope(key: ed25519.Ed25519PrivateKey, commit: str, subject: str = "shop-1.0.tar.gz") -> dict:
    """An in-toto Statement v1 with a SLSA provenance v1 predicate, signed by the in-toto library."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": subject, "digest": {"sha256": "ab" * 32}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://ci.example/build/v1",
                "externalParameters": {},
                "resolvedDependencies": [{"uri": "git+https://git.example/shop", "digest": {"gitCommit": commit}}],
            },
            "runDetails": {"builder": {"id": "https://ci.example/runner/7"}},
        },
    }
    envelope = Envelope(payload=json.dumps(statement).encode(), payload_type="application/vnd.in-toto+json", signatures={})
    envelope.create_signature(CryptoSigner(key))
    return envelope.to_dict()


@pytest.fixture
def ci_key(short_tmp):
    key = ed25519.Ed25519PrivateKey.generate()
    (short_tmp / "ci.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key


@pytest.fixture
def api(short_tmp, ci_key):
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={"api": {"listen": f"127.0.0.1:{free_port()}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    data = yaml.safe_load(box.config.read_text())
    data["repositories"][0]["ci"] = {"provenance_keys": [str(short_tmp / "ci.pub")]}
    box.config.write_text(yaml.safe_dump(data, sort_keys=False))
    served = Api(box)
    yield served
    served.close()


def test_external_ci_uploads_an_in_toto_statement_with_its_status_and_verify_accepts_it(api, ci_key):
    sandbox = api.sandbox
    token = api.token("jenkins", "statuses:write", "read")
    head = sandbox.head("main")
    code, _h, doc = api.post(head, token, state="success", context="ci/build", provenance=in_toto_envelope(ci_key, head))
    assert code == 201, doc
    tree = sandbox.tree(head)
    (finding,) = provenance.verify_tree(load(sandbox.config), "shop", tree)
    assert finding.ok and finding.line.startswith(
        "ok: uploaded statement external-ci%2Fbuild.intoto.json for shop-1.0.tar.gz signed by key"
    ), finding.line
    assert api.combined(head, token)["state"] == "success"
    with Store(load(sandbox.config).database) as store:  # what the hook's require_provenance reads
        assert store.attestations("shop", tree) == [("external-ci/build:shop-1.0.tar.gz", "ab" * 32, "ab" * 32)]


def test_a_statement_over_other_content_or_by_an_untrusted_key_is_refused_in_one_line_and_nothing_is_stored(api, ci_key):
    sandbox = api.sandbox
    token = api.token("jenkins", "statuses:write", "read")
    head = sandbox.head("main")
    sandbox.write("app.txt", "v2\n")
    other = sandbox.commit("v2")
    sandbox.push("main")
    answers = {
        "other content": api.post(head, token, state="success", context="ci/build", provenance=in_toto_envelope(ci_key, other)),
        "untrusted key": api.post(
            head,
            token,
            state="success",
            context="ci/build",
            provenance=in_toto_envelope(ed25519.Ed25519PrivateKey.generate(), head),
        ),
        "not an envelope": api.post(head, token, state="success", context="ci/build", provenance={"payload": 1}),
    }
    for what, (code, _h, doc) in answers.items():
        assert code == 422 and doc["field"] == "provenance" and "\n" not in doc["message"], (what, doc)
    assert answers["other content"][2]["message"].startswith(
        f"provenance: the statement is about other content: its resolvedDependencies name no gitCommit {head[:12]}"
    )
    assert "no signature by a trusted key" in answers["untrusted key"][2]["message"]
    assert "not a DSSE envelope" in answers["not an envelope"][2]["message"]
    assert api.combined(head, token)["statuses"] == []
    assert not (sandbox.state / "artifacts" / "provenance").exists()


def test_a_statement_uploaded_with_the_longest_context_allowed_is_stored_and_verified(api, ci_key):
    sandbox = api.sandbox
    token = api.token("jenkins", "statuses:write", "read")
    head = sandbox.head("main")
    contexts = ["ci/" + "x" * 252, "é" * 255]  # STATUS_CONTEXT_MAX characters: as a file name, over 255 bytes
    for context in contexts:
        code, _h, doc = api.post(head, token, state="success", context=context, provenance=in_toto_envelope(ci_key, head))
        assert code == 201, doc
    findings = provenance.verify_tree(load(sandbox.config), "shop", sandbox.tree(head))
    assert len(findings) == 2 and all(f.ok for f in findings), [f.line for f in findings]
