"""One error taxonomy: every error gitopsd raises on purpose is a GitopsdError, of the kind the caller acts on.

The reconciler acts on the kind (Flux's contract): a StalledError needs a person and is not retried,
a TransientError is retried with backoff (a look soon again, no traceback in the log); anything else
is a failed attempt, retried too. The CLI
prints any GitopsdError as one line (`--debug` adds the traceback). Errors of pygit2, sqlite3,
ansible-runner and git's processes are translated into these in the one module that talks to each.

Stdlib only and no imports but core/reasons.py: the pre-receive hook imports this on every push.
"""

from .reasons import REASONS


class GitopsdError(Exception):
    """Base of gitopsd's own errors; the message is one line for an operator: what, where, what to do."""


class ConfigurationError(GitopsdError):
    """The server configuration (or something it names) is wrong; a person fixes the file."""


class StalledError(GitopsdError):
    """Retrying the same thing cannot help (a tree that cannot be exported, a path leading out): a person must act."""


class TransientError(GitopsdError):
    """Worth retrying with backoff: the next attempt may succeed (a busy database, a host not answering)."""


class StoreError(GitopsdError):
    """The state database cannot be used; the message says which file, why and what to do (base/storeerrors.py).

    Raised as one of the kinds above too: busy or full is transient, permission is configuration, damaged is stalled.
    """


class GitError(GitopsdError):
    """A git command or pygit2 failed; the message carries git's own words."""


class UserError(GitopsdError):
    """A command line mistake or a refused command: printed as `gitopsd: error: ...`, exit code 1."""


# A refusal's kind says what the caller does about it; each kind has exactly one HTTP status (STATUS),
# which the API and the dashboard both answer with. Callers act on the kind and the reason id, never the words.
INVALID, FORBIDDEN, MISSING, CONFLICT, UNAVAILABLE = "invalid", "forbidden", "missing", "conflict", "unavailable"
UNAUTHENTICATED, UNSUPPORTED, INTERNAL = "unauthenticated", "unsupported", "internal"
STATUS = {
    INVALID: 422,
    FORBIDDEN: 403,
    MISSING: 404,
    CONFLICT: 409,
    UNAVAILABLE: 503,
    UNAUTHENTICATED: 401,
    UNSUPPORTED: 405,
    INTERNAL: 500,
}


class Refused(UserError):
    """A request that cannot be done as asked: one line saying why and what instead, its kind (STATUS) and a stable
    reason id (core/reasons.py) that clients may match on instead of the words."""

    def __init__(self, message: str, kind: str, reason: str, field: str | None = None):
        super().__init__(message)
        if kind not in STATUS:
            raise ValueError(f"unknown refusal kind {kind!r} (known: {', '.join(STATUS)})")
        if REASONS.get(reason, ("",))[0] != kind:
            raise ValueError(f"refusal reason {reason!r} is not registered for kind {kind!r} in core/reasons.py")
        self.kind, self.reason, self.field = kind, reason, field

    @property
    def status(self) -> int:
        """The HTTP status every front end answers this refusal with."""
        return STATUS[self.kind]

    def body(self) -> dict[str, str | None]:
        """The one error body shape of the API and the control socket's answers."""
        return {"message": str(self), "kind": self.kind, "reason": self.reason, "field": self.field}


def error_body(message: str, kind: str, reason: str, field: str | None = None) -> dict[str, str | None]:
    """`{"message", "kind", "reason", "field"}`: the one shape every refusal is answered in (the reason checked as Refused's)."""
    return Refused(message, kind, reason, field).body()


def refusal_answer(exc: Refused) -> dict[str, object]:
    """A refusal as a control-socket answer: the body's fields, the line under `error` (the CLI's name since the start)."""
    return {"ok": False, "error": str(exc), "kind": exc.kind, "reason": exc.reason, "field": exc.field}


def refused_from(answer: dict[str, object]) -> Refused:
    """The Refused a control-socket answer `{"ok": false, "error", "kind", "reason", "field"}` carries (an answer
    without a registered reason of its kind, such as the socket's own "busy", is a `refused` conflict)."""
    kind, reason = str(answer.get("kind") or ""), str(answer.get("reason") or "")
    if REASONS.get(reason, ("",))[0] != kind:
        kind, reason = CONFLICT, "refused"
    return Refused(
        str(answer.get("error") or answer.get("message") or "refused"), kind, reason, str(answer.get("field") or "") or None
    )
