"""What the fuzz targets (fuzz/) found, each kept fixed: bad input gets one line, never a traceback.

Real: the `gitopsd` command line, a bare repository with real git notes, the state store, the tokens file.
"""

from __future__ import annotations

import pytest

from tests.support import Sandbox, git


@pytest.fixture
def sandbox(short_tmp):
    return Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"api": {"tokens_file": str(short_tmp / "tokens.yml")}})


@pytest.mark.parametrize(
    "content, said",
    [
        (b"\x8b\x08 tokens: []\n", "not UTF-8 text (byte 0)"),  # fuzz/fuzz_tokens_file.py
        (b"tokens: " + b"[" * 5000 + b"\n", "invalid YAML: exceeded maximum nesting depth"),  # found triaging it
    ],
    ids=["not-utf8", "nested-too-deeply"],
)
def test_a_tokens_file_that_is_not_utf8_or_nested_too_deeply_is_refused_in_one_line(sandbox, content, said):
    (sandbox.root / "tokens.yml").write_bytes(content)
    listed = sandbox.cli("token", "list", check=False)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert listed.stderr.startswith(f"gitopsd: error: {sandbox.root / 'tokens.yml'}: {said}"), listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1


def test_db_rebuild_lists_notes_whose_time_is_no_date_or_whose_number_no_store_keeps_and_restores_the_rest(sandbox):
    head = sandbox.head("qa")
    notes = [
        "gitopsd: deploy to qa succeeded (deployment #7, push by alice) at 2026-12-01 09:30 UTC",
        "gitopsd: deploy to qa succeeded (deployment #8, push by alice) at 2026-13-45 09:30 UTC",  # fuzz_notes.py
        "gitopsd: deploy to qa succeeded (deployment #99999999999999999999, push by alice) at 2026-12-01 09:31 UTC",
    ]
    for line in notes:
        git(sandbox.root, "--git-dir", str(sandbox.repo), "notes", "--ref=refs/notes/gitopsd", "append", "-m", line, head)
    rebuilt = sandbox.cli("db", "rebuild", check=False)
    assert "Traceback" not in rebuilt.stderr, rebuilt.stderr
    assert "shop/qa: 1 deployment restored" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert "2 note lines could not be read (not restored):" in rebuilt.stdout
    assert f"  shop {head[:7]}: {notes[1]}" in rebuilt.stdout and f"  shop {head[:7]}: {notes[2]}" in rebuilt.stdout
    assert [d["id"] for d in sandbox.history("qa")] == [7]
