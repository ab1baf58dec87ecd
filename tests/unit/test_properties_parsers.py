"""Properties of every parser that takes outside input in the hook, the API, the dashboard and the daemon (Hypothesis).

The rule each is held to: any input gives a value or the one error the parser documents (its caller turns that
into one line), and what a writer of the format writes reads back the same. Real: the parsers, the state store,
the tokens file, the service's signing key. The same surfaces are fuzzed by coverage in fuzz/ (`make fuzz`).
Not here because gitopsd has no parser of them yet: commit trailers (gitopsd writes them, never reads them) and
alertmanager-style payloads.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import string
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitopsd.adapters.store import Store
from gitopsd.api import inputs, statuses
from gitopsd.ci import provenance
from gitopsd.core.settings import Environment, Repository
from gitopsd.gate import nudge, push
from gitopsd.services import notes_ledger, tokens
from gitopsd.web import auth

HEX40 = st.text("0123456789abcdef", min_size=40, max_size=40)
REF = st.text(string.ascii_letters + string.digits + "/._-", min_size=1, max_size=60).map(lambda r: "refs/heads/" + r)
FOLDER = Path(tempfile.mkdtemp(prefix="gt-props-"))  # one per run of this file: a key, a tokens file, a store
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(st.lists(st.tuples(HEX40, HEX40, REF), max_size=20))
def test_ref_update_lines_git_writes_read_back_the_same(updates):
    text = "".join(f"{old} {new} {ref}\n" for old, new, ref in updates)
    assert [(u.old, u.new, u.ref) for u in push.read_updates(text)] == updates


@given(st.text())
def test_any_hook_input_reads_as_updates_of_three_fields_or_nothing(text):
    for update in push.read_updates(text):
        assert all(part and not any(c.isspace() for c in part) for part in (update.old, update.new, update.ref))
        push.shadowed(update.ref, {"qa", "production"})


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))), max_size=6))
def test_a_push_option_is_the_first_one_named_so_stripped_and_bounded_and_none_otherwise(options):
    environ = {"GIT_PUSH_OPTION_COUNT": str(len(options)), **{f"GIT_PUSH_OPTION_{i}": o for i, o in enumerate(options)}}
    with mock.patch.dict(os.environ, environ):
        got = push.push_option("override")
    wanted = next(
        (
            v.strip()[:200]
            for k, _, v in (o.partition("=") for o in options)
            if k in ("override", "gitopsd.override") and v.strip()
        ),
        None,
    )
    assert got == wanted


TEXT = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=50)


@given(TEXT, st.sampled_from(["push", "promote", "rollback"]), st.none() | TEXT, st.lists(HEX40, max_size=5))
def test_a_nudge_reads_back_as_it_was_sent(repo, trigger, actor, commits):
    got = nudge.Nudge.decode(nudge.Nudge(repo, trigger, actor, tuple(commits)).encode(), 0)
    assert got is not None and (got.repo, got.trigger, got.actor, got.commits) == (
        repo,
        trigger,
        actor[:100] if actor else None,
        tuple(commits),
    )


@given(st.binary(max_size=300))
def test_any_datagram_is_a_nudge_or_nothing(data):
    got = nudge.Nudge.decode(data, 0)
    assert got is None or (got.repo and all(len(c) == 40 for c in got.commits))


@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_status_body_is_a_report_or_one_line_saying_what_is_wrong(raw):
    try:
        report = statuses.parse_report(inputs.decode(raw, "send a JSON object with a state"))
    except (ValueError, statuses.InvalidStatus, statuses.ReservedContext) as exc:
        assert "\n" not in str(exc)
        return
    assert report.state in statuses.STATES and report.context.isprintable()


@given(
    st.sampled_from(statuses.STATES),
    st.text(string.ascii_letters + "/-_.", min_size=1, max_size=40),
    st.none() | st.text(string.printable, max_size=100),
)
def test_a_valid_status_reads_back_as_reported(state, context, description):
    body = {"state": state, "context": "ci/" + context, "description": description}
    report = statuses.parse_report(inputs.decode(json.dumps(body).encode(), "x"))
    assert (report.state, report.context, report.description) == (state, "ci/" + context, description or None)


SECRET = tokens.create(FOLDER / "tokens.yml", "ci", ["statuses:write"], created_by="test")
CHECK = tokens.TokenCheck(lambda: FOLDER / "tokens.yml")


@given(st.text(max_size=300))
def test_an_authorization_header_names_a_token_only_with_its_secret(header):
    assert CHECK.authenticate(header) is None
    assert CHECK.authenticate(f"Bearer {SECRET}") is not None


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=60)
@given(st.binary(max_size=400) | JSON.map(lambda v: json.dumps({"tokens": v}).encode()))
def test_any_tokens_file_reads_as_tokens_or_one_error(content):
    path = FOLDER / "fuzzed-tokens.yml"
    path.write_bytes(content)
    try:
        found = tokens.read_tokens(path)
    except tokens.TokenError:
        return
    assert all(set(t.scopes) <= set(tokens.SCOPES) for t in found)


STORE = Store(FOLDER / "state.db")
REPO = Repository("shop", FOLDER, (Environment("qa", "qa", "main", "i", "p"),))


@settings(deadline=None, max_examples=60)
@given(
    st.integers(0, 2**80),
    st.tuples(*(st.integers(0, top) for top in (9999, 99, 99, 99, 99))),
    st.sampled_from(["succeeded", "failed"]),
    st.text(string.ascii_letters, min_size=1, max_size=10),
)
def test_a_deployment_note_is_restored_or_listed_as_unread_never_a_stop(number, when, result, actor):
    line = (
        f"gitopsd: deploy to qa {result} (deployment #{number}, push by {actor}) at "
        "{:04d}-{:02d}-{:02d} {:02d}:{:02d} UTC".format(*when)
    )
    report = notes_ledger.Report()
    notes_ledger._restore(STORE, REPO, [("c" * 40, "d" * 40, line)], report)
    assert report.deployments or report.already or report.unread


@given(st.text(max_size=200))
def test_any_note_line_is_read_or_listed_never_a_stop(line):
    report = notes_ledger.Report()
    notes_ledger._restore(STORE, REPO, [("c" * 40, "d" * 40, line)], report)
    report.lines()


KEYS = [provenance.signing.ensure_key(FOLDER / "key")]
BODY = {"_type": provenance.STATEMENT_TYPE, "subject": [{"name": "app", "digest": {"sha256": "0" * 64}}]}


@given(JSON)
def test_any_uploaded_envelope_is_accepted_or_refused_in_one_line(value):
    for env in (value, {"payloadType": provenance.PAYLOAD_TYPE, "payload": value, "signatures": [{"sig": value}]}):
        try:
            provenance.open_envelope(env, KEYS)
        except provenance.InvalidProvenance as exc:
            assert "\n" not in str(exc)


@given(st.integers(0, 10_000), st.integers(1, 255))
def test_a_signed_statement_changed_anywhere_after_signing_is_refused(where, flip):
    signed = provenance.envelope(FOLDER / "key", BODY)
    assert provenance.open_envelope(signed, KEYS)[0] == BODY
    payload = bytearray(base64.b64decode(signed["payload"]))
    payload[where % len(payload)] ^= flip
    try:
        provenance.open_envelope({**signed, "payload": base64.b64encode(bytes(payload)).decode()}, KEYS)
    except provenance.InvalidProvenance as exc:
        assert "no signature by a trusted key" in str(exc)
    else:
        raise AssertionError("a changed statement was accepted")


@given(st.text(max_size=200), st.text(max_size=300), st.binary(max_size=300))
def test_a_browser_cookie_form_or_next_link_never_leads_off_the_site(target, cookie, body):
    local = auth._local(target)
    assert local.startswith("/") and not local.startswith("//") and "\\" not in local
    assert local == target or local == "/"
    assert all(isinstance(v, str) for v in auth._cookies({"cookie": cookie}).values())
    auth._posted_csrf({"content-type": "application/x-www-form-urlencoded"}, body)


def teardown_module() -> None:
    STORE.close()
    shutil.rmtree(FOLDER, ignore_errors=True)


def test_a_withdrawal_note_is_read_back_as_one_in_todays_wording_and_the_old_one():
    for word in ("approval withdrawn", "rejection withdrawn", "withdrew their word on"):
        found = notes_ledger.APPROVAL.fullmatch(f"gitopsd: rc/r9 {word} by bob at 2026-12-07 10:00 UTC: withdrawn")
        assert found is not None and notes_ledger.APPROVAL_KIND[found[2]] == "withdraw", word
