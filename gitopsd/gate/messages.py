"""What the hook says when a push meets no rule of `policy.judge`: a reserved ref, an unreadable store; imported only then."""

from __future__ import annotations

import os

from ..base import gitcli, hookenv, storeerrors
from . import nudge, policy
from .push import AUDIT_NOTES, HEAD_NAMES, RC_TAGS, squats

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from typing import TextIO

    from .push import RefUpdate


def reserved_refusal(update: RefUpdate, repo_name: str) -> policy.Verdict:
    """Why a push may not touch a replace ref or gitopsd's notes, and what to do instead."""
    action = "delete" if update.new == gitcli.ZERO else "create" if update.old == gitcli.ZERO else "update"
    above = ", and a ref by this name would keep gitopsd from writing its own" if not update.ref.startswith(RC_TAGS) else ""
    if squats(update.ref, RC_TAGS.rstrip("/")):
        return policy.refuse(
            "reserved-ref",
            "release candidates (rc/* tags) are made by gitopsd only",
            [f"this push would {action} {update.ref}: an rc/* tag is what approvals bind to{above}."],
            [
                f"create one on the server: gitopsd rc create --repo {repo_name}",
                "push your own tags under another name (e.g. v1.2.3), or leave rc/* out of the push",
            ],
        )
    if squats(update.ref, AUDIT_NOTES):
        return policy.refuse(
            "reserved-ref",
            f"{AUDIT_NOTES} is gitopsd's own record; pushes may not change it",
            [f"this push would {action} it." if update.ref == AUDIT_NOTES else f"this push would {action} {update.ref}{above}."],
            [
                "push your notes under another name: git push origin refs/notes/<yours>",
                f"leave {AUDIT_NOTES} out of the push (no --mirror, no refs/notes/* refspec)",
            ],
        )
    if any(squats(update.ref, name) for name in HEAD_NAMES):
        return policy.refuse(
            "reserved-ref",
            "HEAD is not a name for a branch or a tag",
            [
                f"this push would {action} {update.ref}: every clone would fetch it as origin/HEAD, in place of",
                "the pointer to the default branch, and `git log HEAD` would be ambiguous (git branch refuses the name).",
            ],
            [
                "push it under another name: git push origin HEAD:refs/heads/<name>",
                f"to remove one already there, ask an operator: git --git-dir <repo> update-ref -d {update.ref}",
            ],
        )
    return policy.refuse(
        "reserved-ref",
        "replace refs (refs/replace/*) are not accepted in a deployment repository",
        [
            f"this push would {action} {update.ref}. A replace ref makes git show another commit in place of",
            "a real one; gitopsd judges and deploys the real commits, so it would only make them disagree.",
        ],
        [
            "keep replace refs in your clone (git replace works locally) and leave them out of the push",
            f"to change what an environment runs, push a new commit or roll back: gitopsd rollback <env> --repo {repo_name}",
        ],
    )


def unreadable(database: str, exc: Exception, out: TextIO) -> None:
    """Refuse with what is really wrong with the store: the pusher's access, a damaged file, or a busy one."""
    kind = storeerrors.classify(exc)
    print(
        f"\ngitopsd: push refused: the deployment records in {database} cannot be read ({exc}),\n"
        "so environment branches cannot be checked.",
        file=out,
    )
    if kind == storeerrors.DAMAGED:
        print(
            "The file is damaged. Ask an operator to look at it: the daemon's log says more, and\n"
            "`gitopsd status` on the deploy server shows the same error.\n",
            file=out,
        )
    elif kind == storeerrors.BUSY:
        print("Another process holds the file just now. Push again in a moment.\n", file=out)
    elif kind == storeerrors.PERMISSION:
        user = nudge.user_name(hookenv.uid())
        print(
            f"The hook runs as {user}, who must be able to read the state folder:\n"
            f"ask an operator to add {user} to the daemon's group (usermod -aG {_group(database)} {user}).\n",
            file=out,
        )
    else:
        print("Ask an operator to look at the daemon's log and `gitopsd status` on the deploy server.\n", file=out)


def _group(database: str) -> str:
    """The group of the state folder around DATABASE (the daemon's), by name for usermod; gitopsd if none is seen."""
    import grp  # only on this refusal: the hook's imports stay within its budget

    try:
        gid = os.stat(os.path.dirname(database) or ".").st_gid
        return grp.getgrgid(gid).gr_name if gid != 0 else "gitopsd"
    except (OSError, KeyError):
        return "gitopsd"
