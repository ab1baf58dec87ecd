"""One refusal vocabulary (issue 24, item 6): each kind has one HTTP status, each refusal a registered reason id, and the
front ends act on the kind and the id, never on a refusal's words.

Real: the error type itself, its registry (core/reasons.py), and the source of gitopsd read as Python syntax trees.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gitopsd.core import errors
from gitopsd.core.errors import STATUS, Refused, error_body, refusal_answer, refused_from
from gitopsd.core.reasons import REASONS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = sorted((ROOT / "gitopsd").rglob("*.py"))
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
    one_of_each = {kind: next(r for r, (k, _m) in REASONS.items() if k == kind) for kind in kinds}
    assert {kind: Refused("x", kind, reason).status for kind, reason in one_of_each.items()} == STATUS


def test_a_refusal_of_an_unknown_kind_cannot_be_made():
    with pytest.raises(ValueError, match="unknown refusal kind 'nope'"):
        Refused("x", "nope", "refused")


def test_a_refusal_with_an_unregistered_reason_or_one_registered_for_another_kind_cannot_be_made():
    with pytest.raises(ValueError, match="refusal reason 'no-rc' is not registered for kind 'missing'"):
        Refused("x", errors.MISSING, "no-rc")
    with pytest.raises(ValueError, match="refusal reason 'rc_not_found' is not registered for kind 'conflict'"):
        Refused("x", errors.CONFLICT, "rc_not_found")
    with pytest.raises(ValueError, match="refusal reason 'missing' is not registered"):
        error_body("x", errors.MISSING, "missing")


def test_every_registered_reason_is_snake_case_of_a_known_kind_with_one_line_on_its_meaning():
    for reason, (kind, meaning) in REASONS.items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", reason), reason
        assert kind in STATUS, reason
        assert meaning and "\n" not in meaning and len(meaning) <= 100, reason


def test_a_refusal_has_one_body_shape_and_crosses_the_control_socket_unchanged():
    refused = Refused("note is required", errors.INVALID, "bad_field", "note")
    assert (
        refused.body()
        == error_body("note is required", "invalid", "bad_field", "note")
        == {"message": "note is required", "kind": "invalid", "reason": "bad_field", "field": "note"}
    )
    gone = {"message": "gone", "kind": "missing", "reason": "rc_not_found", "field": None}
    assert Refused("gone", errors.MISSING, "rc_not_found").body() == gone
    back = refused_from(refusal_answer(refused))
    assert (str(back), back.kind, back.reason, back.field) == ("note is required", "invalid", "bad_field", "note")
    # An answer without a registered reason of its kind (the socket's own "busy", an older daemon's) is a plain refusal.
    for odd in ({"kind": "unheard-of"}, {"kind": "missing", "reason": "no-rc"}, {"kind": "conflict", "reason": "rc_not_found"}):
        back = refused_from({"ok": False, "error": "odd", **odd})
        assert (str(back), back.kind, back.reason) == ("odd", errors.CONFLICT, "refused")


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


# What makes a refusal, and the argument index of its kind (its reason id is the next one): the one error type and its
# subclasses and aliases, the body maker (core/errors.py), the API's (api/inputs.py) and the dashboard's (web/actions.py).
MAKERS = {"Refused": 1, "error_body": 1, "refuse": 1, "Answer": 0}
DEFINED = {"core/errors.py": ("Refused", "error_body"), "api/inputs.py": ("refuse",), "web/actions.py": ("Answer",)}
KINDS = {name: getattr(errors, name) for name in ("INVALID", "FORBIDDEN", "MISSING", "CONFLICT", "UNAVAILABLE")} | {
    name: getattr(errors, name) for name in ("UNAUTHENTICATED", "UNSUPPORTED", "INTERNAL")
}


def _makers(tree: ast.AST, where: str) -> dict[str, int]:
    """The names that make a refusal in a module (`where`, relative to gitopsd/), each with its kind's index: MAKERS
    where they come from DEFINED's modules (imported, subclassed, aliased), not elsewhere (the gate's policy.refuse
    makes a push verdict, adapters/store/postgresql.py's Refused is a database error)."""
    makers = {name: MAKERS[name] for name in DEFINED.get(where, ())}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] in ("errors", "inputs", "actions"):
            makers |= {a.asname or a.name: MAKERS[a.name] for a in node.names if a.name in MAKERS}
    for _ in range(2):  # a subclass or an alias of a maker is one
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                made = [makers[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in makers]
                makers |= {node.name: made[0]} if made else {}
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in makers:
                makers |= {t.id: makers[node.value.id] for t in node.targets if isinstance(t, ast.Name)}
    return makers


def _refusals(source: str, where: str) -> tuple[list[str], set[str]]:
    """(problems, reason ids used) of the refusals a module of gitopsd (`where`, relative to gitopsd/) makes: each names
    a reason, and a literal one is registered for the kind given."""
    tree = ast.parse(source)
    makers = _makers(tree, where)
    problems, used = [], set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        if isinstance(func, ast.Name) and func.id in makers:
            at = makers[func.id]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "errors":
            at = MAKERS.get(func.attr, -1)
        else:
            continue
        if at < 0:
            continue
        named = {k.arg: k.value for k in call.keywords}
        positional = [a for a in call.args if not isinstance(a, ast.Starred)]
        kind = positional[at] if len(positional) > at else named.get("kind")
        reason = positional[at + 1] if len(positional) > at + 1 else named.get("reason")
        if reason is None or (isinstance(reason, ast.Constant) and not isinstance(reason.value, str)):
            problems.append(f"{where}:{call.lineno}: a refusal without a reason id")
            continue
        if not isinstance(reason, ast.Constant):
            continue  # handed on (refuse's, refused_from's, an Answer of a Refused): checked where it was made
        used.add(reason.value)
        given = KINDS.get(kind.id) if isinstance(kind, ast.Name) else kind.value if isinstance(kind, ast.Constant) else None
        if reason.value not in REASONS:
            problems.append(f"{where}:{call.lineno}: reason {reason.value!r} is not registered in core/reasons.py")
        elif given is not None and REASONS[reason.value][0] != given:
            problems.append(f"{where}:{call.lineno}: reason {reason.value!r} is registered for {REASONS[reason.value][0]}")
    return problems, used


def _package_refusals() -> tuple[list[str], set[str]]:
    problems, used = [], set()
    for path in PACKAGE:
        found, ids = _refusals(path.read_text(encoding="utf-8"), path.relative_to(ROOT / "gitopsd").as_posix())
        problems += found
        used |= ids
    return problems, used


def test_every_refusal_gitopsd_makes_names_a_reason_id_registered_for_its_kind():
    problems, used = _package_refusals()
    assert problems == [], "give each refusal a reason id of core/reasons.py (one naming the situation, of its kind)"
    assert len(used) > 40  # the scan found the raise sites


def test_every_registered_reason_id_is_used_by_some_refusal():
    _problems, used = _package_refusals()
    assert sorted(set(REASONS) - used) == [], "remove the ids no refusal uses from core/reasons.py"


def test_the_raise_site_check_catches_a_refusal_without_a_reason_an_unregistered_one_and_one_of_another_kind():
    module = """
from ..core.errors import CONFLICT, MISSING, Refused
from ..core import errors
from .inputs import refuse
from . import policy

class Odd(Refused):
    pass

Refusal = Refused

def f(repo):
    raise Refused(f"no release candidate in {repo}", MISSING)
    raise Odd("x", MISSING, "no-rc")
    raise Refusal("x", CONFLICT, reason="rc_not_found")
    raise errors.Refused("x", kind=MISSING, reason=None)
    raise refuse("x", MISSING, "rc_not_found")
    return policy.refuse("rule", "words", [], [])
"""
    problems, used = _refusals(module, "services/odd.py")
    assert problems == [
        "services/odd.py:13: a refusal without a reason id",
        "services/odd.py:14: reason 'no-rc' is not registered in core/reasons.py",
        "services/odd.py:15: reason 'rc_not_found' is registered for missing",
        "services/odd.py:16: a refusal without a reason id",
    ]
    assert used == {"no-rc", "rc_not_found"}
