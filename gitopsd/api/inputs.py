"""What an API request carries, read and refused in one line: its body as JSON, a human gate's fields, `?limit=`.

A refusal is an ApiError: the Refused it carries (core/errors.py) gives its status and body, the
one shape every answer other than success has.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ..core.errors import INVALID, Refused
from . import statuses

MAX_LIMIT = 1000
NOTE_MAX = 1000


class ApiError(Exception):
    """An answer other than success: a refusal (its kind gives the status, core.errors.STATUS) and headers."""

    def __init__(self, refused: Refused, headers: dict[str, str] | None = None):
        super().__init__(str(refused))
        self.refused, self.status, self.body, self.headers = refused, refused.status, refused.body(), headers or {}


def refuse(message: str, kind: str, reason: str, field: str | None = None) -> ApiError:
    """An ApiError of one refusal: its line, kind, stable reason id and the field it is about."""
    return ApiError(Refused(message, kind, reason, field))


def unprocessable(field: str, message: str) -> ApiError:
    return refuse(message, INVALID, "bad_field", field)


def refused(field: str, message: str) -> ApiError:
    """422 for a human-gate request's bad field: the `message` line names it (and `field` too, as elsewhere)."""
    return refuse(f"{field} {message}", INVALID, "bad_field", field)


async def body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY by its Content-Length and by the bytes that really came."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 9 or int(length) > statuses.MAX_BODY):
        raise unprocessable("body", f"is {length} bytes; at most {statuses.MAX_BODY} are taken")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > statuses.MAX_BODY:
            raise unprocessable("body", f"is over {statuses.MAX_BODY} bytes; at most that is taken")
        chunks.append(chunk)
    return b"".join(chunks)


class _NotJson(ValueError):
    """A constant JSON does not allow (NaN, Infinity): told apart by its type, not its words."""


def decode(raw: bytes, send: str) -> Any:
    """Given a request body, return its JSON value. Raise ValueError with the one line that says what is wrong
    (not UTF-8, not JSON, NaN, nested too deep, a number too long to read, a lone surrogate) and what to send."""

    def constant(name: str) -> Any:
        raise _NotJson(f"has {name}, which JSON does not allow; {send}")

    try:
        data = json.loads(raw, parse_constant=constant)
    except RecursionError:
        raise ValueError(f"is nested too deeply to read; {send}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not JSON ({exc.__class__.__name__}); {send}") from None
    except _NotJson:  # NaN, from constant(): its own line
        raise
    except ValueError:  # int()'s limit on digits
        raise ValueError(f"has a number too long to read; {send}") from None
    try:  # a lone surrogate ("\ud800") decodes, and fails later where the text is stored or sent back
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"has a lone surrogate escape (\\ud800 to \\udfff) in a string; {send}") from None
    return data


def status_json(raw: bytes) -> Any:
    """A commit status's body as JSON, or a 422 naming the body."""
    try:
        return decode(raw, "send a JSON object with a state")
    except ValueError as exc:
        raise unprocessable("body", str(exc)) from exc


async def gate_fields(request: Request, types: dict[str, type], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A human-gate request's JSON body (an empty one is {}) with only known fields of the right type. Raise a 422."""
    try:
        raw = await body(request)
    except ApiError as exc:
        raise refused("body", str(exc)) from exc
    try:
        data = decode(raw, "send a JSON object") if raw.strip() else {}
    except ValueError as exc:
        raise refused("body", str(exc)) from exc
    if not isinstance(data, dict):
        raise refused("body", f"must be a JSON object with {', '.join(types)}")
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise refused(str(unknown[0])[:40], f"is not a field here (known: {', '.join(types)})")
    fields = {k: v for k, v in data.items() if v is not None}
    for key, kind in types.items():
        if key not in fields:
            if key in required:
                raise refused(key, "is required")
            continue
        if not isinstance(fields[key], kind):
            raise refused(key, f"must be {'true or false' if kind is bool else 'a string'}")
        if kind is str and (len(fields[key]) > NOTE_MAX or any(ord(c) < 32 and c != "\t" for c in fields[key])):
            raise refused(key, f"must be one line of at most {NOTE_MAX} characters")
    return fields


def reason_as_note(fields: dict[str, Any]) -> dict[str, Any]:
    """`reason` is another name for `note` (every human act carries one: locks and overrides call it reason)."""
    if "note" in fields and "reason" in fields:
        raise refused("reason", "is another name for note: give one of them")
    if "reason" in fields:
        fields["note"] = fields.pop("reason")
    return fields


def limit(request: Request, default: int, alias: str = "limit") -> int:
    """`?limit=` (or GitHub's name for it, `alias`, e.g. per_page), 1 to MAX_LIMIT."""
    field = alias if alias in request.query_params else "limit"
    raw = request.query_params.get(field, str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_LIMIT:
        raise unprocessable(field, f"must be a whole number from 1 to {MAX_LIMIT}, not {raw[:20]!r}")
    return int(raw)
