"""The nudge: a datagram on the daemon's Unix socket saying "look at this repository".

Sending never fails a push: if the daemon is down, the sweep catches up when it is back. The
daemon reads the sender's uid from the kernel (SCM_CREDENTIALS), so who sent a nudge is never
taken on the sender's word alone.

The pre-receive hook sends one on every push, so the sending side imports nothing but `_socket`
and `pwd` (C modules; `socket` and `json` would add about 15 ms to every push). The datagram is
`gitopsd-nudge-1` followed by `key=value` fields, all separated by NUL bytes: no field can hold a
NUL (paths, environment variables and push options cannot), so nothing needs escaping.

A refused push is reported the same way (trigger `refused`, a `refused=<env> <rule>` field per
refusal) for the daemon's metrics: fire and forget, and only a short rule id from REFUSAL_RULES,
never the refusal's text.
"""

from __future__ import annotations

import _socket  # the C half of `socket`: all a datagram needs, without `socket`'s imports
import pwd

from ..base import hookenv

MAX_DATAGRAM = 65_000
MAGIC = b"gitopsd-nudge-1"
REFUSED = "refused"  # the trigger of a refusal report: counted, never looked at

# The short stable ids of the refusal rules, the metrics' `rule` label: each refusal names its own
# (policy.refuse), so rewording what a refusal says never moves its count.
REFUSAL_RULES = frozenset(
    (
        "delete",
        "create",
        "first-promotion",
        "non-fast-forward",
        "not-verified-upstream",
        "not-on-source",
        "required-checks",
        "signoff",
        "approvals",
        "deploy-window",
        "locked",
        "reserved-ref",
        "promotion-request",
        "rejected",
        "store-unreadable",
        "signature",
        "signed-push",
        "provenance",
        "other",
    )
)


class Nudge:
    """What a nudge says: which repository to look at, why, and (as a claim) who and which commits."""

    __slots__ = ("repo", "trigger", "actor", "commits", "sender_uid", "reason", "refusals")

    def __init__(
        self,
        repo: str,
        trigger: str,
        actor: str | None = None,
        commits: tuple[str, ...] = (),
        sender_uid: int | None = None,
        reason: str | None = None,
        refusals: tuple[tuple[str, str], ...] = (),
    ):
        self.repo = repo  # repository path as the sender saw it
        self.trigger = trigger  # push | promote | rollback | retry | cli
        self.actor = actor  # who the transport says pushed (GL_USER, REMOTE_USER, ...)
        self.commits = tuple(commits)  # new heads this nudge is about
        self.sender_uid = sender_uid  # filled in by the receiver from the kernel
        self.reason = reason  # e.g. an emergency override's reason, recorded with the deployment
        self.refusals = tuple(refusals)  # (environment, rule id) of each refusal, in a `refused` report

    def who(self) -> str:
        """The identity to record: the transport's user, checked against the kernel's uid."""
        unix = user_name(self.sender_uid) if self.sender_uid is not None else None
        if self.actor and unix and self.actor != unix:
            return f"{self.actor} (via {unix})"
        return self.actor or unix or "unknown"

    def encode(self) -> bytes:
        fields = [MAGIC, b"repo=" + self.repo.encode(), b"trigger=" + self.trigger.encode()]
        if self.actor:
            fields.append(b"actor=" + self.actor.encode())
        if self.reason:
            fields.append(b"reason=" + self.reason.encode())
        fields += [b"commit=" + c.encode() for c in self.commits[:200]]
        fields += [b"refused=" + f"{env} {rule}".encode() for env, rule in self.refusals[:20]]
        return b"\0".join(f.replace(b"\0", b"") for f in fields)[:MAX_DATAGRAM]

    @classmethod
    def decode(cls, data: bytes, sender_uid: int | None) -> Nudge | None:
        """Parse a datagram; None for anything malformed. Every field is bounded and checked."""
        parts = data.split(b"\0")
        if not parts or parts[0] != MAGIC:
            return None
        values: dict[str, str] = {}
        commits: list[str] = []
        refusals: list[tuple[str, str]] = []
        for part in parts[1:]:
            key, sep, raw = part.partition(b"=")
            if not sep:
                return None
            value = raw.decode("utf-8", "replace")
            if key == b"commit":
                if len(value) == 40 and all(ch in "0123456789abcdef" for ch in value):
                    commits.append(value)
            elif key == b"refused" and len(refusals) < 20:
                env, _, rule = value.partition(" ")
                refusals.append((env[:100], rule if rule in REFUSAL_RULES else "other"))
            elif key in (b"repo", b"trigger", b"actor", b"reason"):
                values[key.decode()] = value
        if not values.get("repo"):
            return None
        return cls(
            repo=values["repo"],
            trigger=values.get("trigger", "push")[:20] or "push",
            actor=values.get("actor", "")[:100] or None,
            commits=tuple(commits),
            sender_uid=sender_uid,
            reason=values.get("reason", "")[:300] or None,
            refusals=tuple(refusals),
        )


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def send(socket_path: str, nudge: Nudge, wait: float = 1.0) -> bool:
    """Send a nudge; return False (never raise) if no daemon is listening. `wait` 0: drop it if the daemon is behind.

    When the daemon judges the push itself (base/hookenv.py), the nudge is handed to it there, not sent."""
    deliver = hookenv.delivery()
    if deliver is not None:
        deliver(nudge)
        return True
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.settimeout(wait)
        sock.sendto(nudge.encode(), str(socket_path))
        return True
    except OSError:
        return False
    finally:
        sock.close()
