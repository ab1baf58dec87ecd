"""Files written for the daemon get the owner, group and mode the daemon needs, whoever writes them.

Commands run as root (`init`, `install-hooks`, `token create`, `hosts trust`, `db upgrade`) write files
the daemon later reads or writes as its own user. The daemon's user is the owner of its state folder:
`install-service` creates that folder for the service user, so this needs no guess from the user
database and no systemd (its recursive chown of `StateDirectory=` happens only under systemd, and only
at start). Where the state folder is root's or missing, nothing is handed over.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    """A Unix user and its primary group, by number and by name."""

    uid: int
    gid: int
    user: str
    group: str

    @classmethod
    def of_ids(cls, uid: int, gid: int) -> Account:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
        return cls(uid, gid, user, group)

    @classmethod
    def named(cls, name: str) -> Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls.of_ids(entry.pw_uid, entry.pw_gid)


def daemon_account(state_dir: Path) -> Account | None:
    """The daemon's user and group: the owner of its state folder, unless that is root or the folder is missing."""
    try:
        st = os.stat(state_dir)
    except OSError:
        return None
    return None if st.st_uid == 0 else Account.of_ids(st.st_uid, st.st_gid)


def hand_over(paths: list[Path], account: Account | None) -> None:
    """As root, give PATHS (those that exist) to ACCOUNT; otherwise, or without an account, leave them."""
    if account is None or os.geteuid() != 0:
        return
    for path in paths:
        try:
            if os.lstat(path).st_uid != account.uid:
                os.lchown(path, account.uid, account.gid)
        except FileNotFoundError:
            continue


def describe(path: Path) -> str:
    """`root:root 0644`: who owns PATH and its mode, for a line that says why a file cannot be used."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or "unreadable"
    owner = Account.of_ids(st.st_uid, st.st_gid)
    return f"{owner.user}:{owner.group} {stat.S_IMODE(st.st_mode):04o}"
