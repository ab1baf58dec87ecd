"""A DSSE envelope uploaded with a commit status (ci/provenance.open_envelope): refused in one line or accepted."""

from __future__ import annotations

import base64
import json

import atheris
from _harness import scratch

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.adapters import signing
    from gitopsd.ci import provenance

FOLDER = scratch("prov")
KEYS = [signing.ensure_key(FOLDER)]
SIGNED = provenance.envelope(
    FOLDER, {"_type": provenance.STATEMENT_TYPE, "subject": [{"name": "a", "digest": {"sha256": "0" * 64}}]}
)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():  # any JSON at all
        try:
            env = json.loads(fdp.ConsumeUnicodeNoSurrogates(2048))
        except (ValueError, RecursionError):
            return
    else:  # a validly signed envelope with a payload, a type or a signature changed
        env = json.loads(json.dumps(SIGNED))
        field = fdp.PickValueInList(["payload", "payloadType", "sig"])
        value = fdp.ConsumeUnicodeNoSurrogates(512)
        if field == "sig":
            env["signatures"][0]["sig"] = value
        elif field == "payload" and fdp.ConsumeBool():
            env["payload"] = base64.b64encode(value.encode()).decode()
        else:
            env[field] = value
    try:
        body, by = provenance.open_envelope(env, KEYS)
    except provenance.InvalidProvenance as exc:
        assert "\n" not in str(exc)
        return
    assert by == KEYS[0].keyid and body["_type"] == provenance.STATEMENT_TYPE
    provenance.sources(body)


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
