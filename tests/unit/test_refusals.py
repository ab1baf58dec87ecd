"""One refusal vocabulary (issue 24, item 6): each kind has one HTTP status, and the front ends act on the kind, never on
a refusal's words.

Real: the error type itself, and the source of gitopsd/api and gitopsd/web read as Python syntax trees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gitopsd.core import errors
from gitopsd.core.errors import STATUS, Refused, error_body, refusal_answer, refused_from

ROOT = Path(__file__).resolve().parents[2]
FRONT_ENDS = [p for folder in ("api", "web") for p in sorted((ROOT / "gitopsd" / folder).rglob("*.py"))]
# Where a refusal's line travels: a control-socket answer's `error`, an API body's `message` (an ApiError's .body).
ANSWER_KEY, BODY_KEY = "error", "message"
TEXT_METHODS = ("startswith", "endswith", "find", "rfind", "index", "count", "split", "partition", "lower")


def test_every_refusal_kind_maps_to_exactly_one_status_and_no_two_kinds_share_one():
    kinds = [
        getattr(errors, name)
        for name in ("INVALID", "FORBIDDEN", "MISSING", "CONFLICT", "UNAVAILABLE", "UNAUTHENTICATED", "UNSUPPORTED", "INTERNAL")
    ]
    assert sorted(kinds) == sorted(STATUS)
    assert all(isinstance(STATUS[kind], int) and 400 <= STATUS[kind] < 600 for kind in kinds)
    assert len(set(STATUS.values())) == len(STATUS)
    assert {kind: Refused("x", kind).status for kind in kinds} == STATUS


def test_a_refusal_of_an_unknown_kind_cannot_be_made():
    with pytest.raises(ValueError, match="unknown refusal kind 'nope'"):
        Refused("x", "nope")


def test_a_refusal_has_one_body_shape_and_crosses_the_control_socket_unchanged():
    refused = Refused("note is required", errors.INVALID, "bad-field", "note")
    assert (
        refused.body()
        == error_body("note is required", "invalid", "bad-field", "note")
        == {"message": "note is required", "kind": "invalid", "reason": "bad-field", "field": "note"}
    )
    assert Refused("gone", errors.MISSING).body() == {"message": "gone", "kind": "missing", "reason": "missing", "field": None}
    back = refused_from(refusal_answer(refused))
    assert (str(back), back.kind, back.reason, back.field) == ("note is required", "invalid", "bad-field", "note")
    assert refused_from({"ok": False, "error": "odd", "kind": "unheard-of"}).kind == errors.CONFLICT


def _text_reads(tree: ast.AST) -> list[ast.AST]:
    """The expressions that read a refusal's words: str(E) and E.args of a caught exception, X.get("error"),
    X["error"], X.body.get("message"), X.body["message"], and the names given any of them."""
    caught = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}

    def key_of(holder: ast.AST, key: ast.AST) -> bool:
        if not isinstance(key, ast.Constant):
            return False
        return key.value == ANSWER_KEY or (key.value == BODY_KEY and isinstance(holder, ast.Attribute) and holder.attr == "body")

    def is_text(node: ast.AST, named: set[str]) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and node.args:
            return is_text(node.args[0], named) or (isinstance(node.args[0], ast.Name) and node.args[0].id in caught)
        if isinstance(node, ast.BoolOp):
            return any(is_text(v, named) for v in node.values)
        if isinstance(node, ast.Attribute) and node.attr in ("args", "message", "lines"):
            return isinstance(node.value, ast.Name) and node.value.id in caught
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
            return key_of(node.func.value, node.args[0])
        if isinstance(node, ast.Subscript):
            return key_of(node.value, node.slice)
        return isinstance(node, ast.Name) and node.id in named

    named: set[str] = set()
    for _ in range(3):  # names given names given the words
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and is_text(node.value, named):
                named |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.expr) and is_text(n, named)]


def _inspections(source: str) -> list[str]:
    """Where a module looks into a refusal's words: `in` or a string method on them, or hands them to one of its own
    functions that does `in` on a parameter (the old api.app.refusal_status)."""
    tree = ast.parse(source)
    text = {id(n) for n in _text_reads(tree)}
    matchers = {
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and any(
            isinstance(c, ast.Compare)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in c.ops)
            and any(isinstance(side, ast.Name) and side.id in {a.arg for a in f.args.args} for side in c.comparators)
            for c in ast.walk(f)
        )
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Compare)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
            and any(id(side) in text for side in node.comparators)
        ):
            found.append(f"line {node.lineno}: `in` on a refusal's words")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in TEXT_METHODS
            and id(node.func.value) in text
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}() on a refusal's words")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in matchers
            and any(id(a) in text for a in node.args)
        ):
            found.append(f"line {node.lineno}: {node.func.id}() matches on a refusal's words")
    return found


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_of_the_api_or_the_dashboard_inspects_a_refusals_message_text(path: Path):
    assert _inspections(path.read_text(encoding="utf-8")) == [], f"{path}: act on the refusal's kind or reason instead"


def test_the_inspection_check_catches_status_guessed_from_english_words():
    guessed = """
def refusal_status(line):
    for status, words in ((403, (" may not ",)), (404, ("no release candidate",))):
        if any(w in line for w in words):
            return status
    return 409

def ask(answer):
    line = str(answer.get("error") or "refused")
    return refusal_status(line)

def other(exc_source):
    try:
        exc_source()
    except Exception as exc:
        if "may not" in str(exc) or str(exc).startswith("no "):
            return 403
"""
    assert sorted(f.split(":")[0] for f in _inspections(guessed)) == ["line 10", "line 16", "line 16", "line 4"]
