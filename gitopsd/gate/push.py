"""A push as Git hands it to pre-receive: its ref updates, who pushes, its options, and the refs it may not touch.

The hook imports this on every push (receive.py), and so do the modules it imports for some pushes only
(promotion_request.py, messages.py, ...): the standard library's `os` and the nudge, nothing more.
"""

from __future__ import annotations

import os

from ..base import hookenv
from . import nudge

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from .snapshot import GateConfig


class RefUpdate:
    __slots__ = ("old", "new", "ref")

    def __init__(self, old: str, new: str, ref: str):
        self.old, self.new, self.ref = old, new, ref

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/") :] if self.ref.startswith("refs/heads/") else None


def read_updates(text: str) -> list[RefUpdate]:
    """Git's pre-receive input: one `<old> <new> <ref>` line per ref."""
    return [RefUpdate(*parts) for parts in (line.split() for line in text.splitlines()) if len(parts) == 3]


def pusher(identity_env: tuple[str, ...], repo_path: str = ".") -> str:
    """Who pushed: the transport's variable (GL_USER, GITOPSD_USER, ...) or the Unix user; never commit metadata.

    The variables count only when the hook runs as the repository's owner: the account sshd (with
    `gitopsd git-shell NAME` or authorized_keys' environment=) or Gitolite logs people in to, whose
    environment the transport sets. Any other Unix user pushing (through the file system, or over SSH
    as their own account) sets what they like, so they are who the kernel says.
    """
    uid, environ = hookenv.uid(), hookenv.environ()
    try:
        transport = os.stat(repo_path).st_uid == uid
    except OSError:
        transport = False
    for name in identity_env if transport else ():
        value = environ.get(name)
        if value:
            return value
    return nudge.user_name(uid)


def push_option(name: str) -> str | None:
    """A push option (`git push -o name=value`); pusher-controlled, so only ever a request."""
    environ = hookenv.environ()
    for i in range(int(environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)):
        key, _, value = environ.get(f"GIT_PUSH_OPTION_{i}", "").partition("=")
        if key in (name, f"gitopsd.{name}") and value.strip():
            return value.strip()[:200]
    return None


REPLACE_REFS = "refs/replace/"
AUDIT_NOTES = "refs/notes/gitopsd"  # reserved for gitopsd's own audit trail
RC_TAGS = "refs/tags/rc/"  # release candidates: only gitopsd makes them (`gitopsd rc create`)
HEAD_NAMES = ("refs/heads/HEAD", "refs/tags/HEAD")  # `git branch HEAD` is refused; pushed, it clobbers clones' origin/HEAD
REQUEST_PREFIX = "refs/promote/"  # a promotion request: the hook makes the promotion, the ref never lands


def is_reserved(ref: str) -> bool:
    """Is `ref` gitopsd's, or a name above one of gitopsd's (refs/notes/gitopsd/x, refs/tags/rc) that would keep git
    from ever writing it?"""
    return (
        ref.startswith(REPLACE_REFS)
        or squats(ref, AUDIT_NOTES)
        or squats(ref, RC_TAGS.rstrip("/"))
        or any(squats(ref, name) for name in HEAD_NAMES)
    )


def squats(ref: str, name: str) -> bool:
    """Is `ref` the ref `name`, a ref below it or a folder above it (git keeps no two refs where one is the other's folder)?"""
    return ref == name or ref.startswith(name + "/") or name.startswith(ref + "/")


def shadowed(ref: str, branches: set[str]) -> str | None:
    """The environment branch that `ref` shadows, if any: a tag `qa`, a branch `refs/heads/qa`, a `refs/qa` would make
    `git push origin main:qa` (and `git log qa`) ambiguous for everyone."""
    name = ref
    while True:
        for prefix in ("refs/heads/", "refs/tags/", "refs/remotes/", "refs/"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            break
        if name.removesuffix("/HEAD") in branches and ref != "refs/heads/" + name:
            return name.removesuffix("/HEAD")
    if ref.startswith("refs/heads/"):  # git keeps no branch qa/x beside a branch qa: pushed first, qa could never be made
        name = ref[len("refs/heads/") :]
        for branch in sorted(branches):
            if name != branch and squats(name, branch):
                return branch
    return None


def unpoliced(updates: list[RefUpdate], branches: set[str]) -> bool:
    """Does the push touch only refs nobody polices (feature branches, main, ordinary tags)? Environment branches come
    from the newest snapshot, even a stale one: a branch it does not know the daemon judges again anyway."""
    for update in updates:
        ref = update.ref
        if ref.startswith("refs/heads/"):
            if ref[len("refs/heads/") :] in branches:
                return False
        elif not ref.startswith("refs/tags/"):
            return False  # notes, replace refs, promotion requests, and whatever cannot be told apart
        if is_reserved(ref) or shadowed(ref, branches) is not None:
            return False
    return True


def report_refusals(config: GateConfig, repo_path: str, refusals: list[tuple[str, str]]) -> None:
    """Tell the daemon which rules refused this push, by environment (its metrics count them). Never waits."""
    nudge.send(config.nudge_socket, nudge.Nudge(repo=repo_path, trigger=nudge.REFUSED, refusals=tuple(refusals)), wait=0.0)
