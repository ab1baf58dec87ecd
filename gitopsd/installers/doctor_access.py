"""`gitopsd doctor` on the pushers' side: the git user's groups and access, each repository's layout and hook."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from ..base import gitcli
from ..config import Config, Repository
from . import install_hooks
from .doctor_report import Finding

# -- the git user: the daemon's group, the state and the socket -----------------------------------------


def pusher(config: Config, name: str, service: pwd.struct_passwd) -> list[Finding]:
    """The git user NAME: in the daemon's group, reads the state database, sends nudges on the socket."""
    user = install_hooks._user(name)
    if user is None:
        return [
            Finding(
                False,
                f"the git user {name or '(none)'} does not exist: who pushes? (the repository "
                "belongs to root and there is no user git)",
                "gitopsd doctor --git-user USER",
            )
        ]
    group = grp.getgrgid(service.pw_gid).gr_name
    member = service.pw_gid in _groups(user)
    found = [
        Finding(member, f"{name} is in the daemon's group {group} (reads the state, sends nudges)", f"usermod -aG {group} {name}")
    ]
    found.append(access(user, config.database, os.R_OK, "read the state database", group))
    if config.nudge_socket.exists():
        found.append(access(user, config.nudge_socket, os.W_OK, "send nudges on the socket", group))
    else:
        found.append(
            Finding(
                False,
                f"the nudge socket {config.nudge_socket} does not exist: the daemon is not "
                "running (pushes are deployed only once it runs)",
                f"systemctl start gitopsd   # or: gitopsd run --config {config.source}",
            )
        )
    if config.judge_socket.exists():
        found.append(access(user, config.judge_socket, os.W_OK, "have its pushes judged by the daemon", group))
    found.append(_credential_cache())
    return found


def _credential_cache() -> Finding:
    """The shim asks the daemon to judge a push through git's credential-cache client (daemon/judge.py): is it here?"""
    code, _out, err = gitcli.run(["git", "credential-cache", "--socket", "/nonexistent/gitopsd-doctor.sock", "get"], input="")
    return Finding(
        code == 0,
        "git's credential-cache client is here: the hook asks the daemon to judge a push (no Python per push)"
        if code == 0
        else f"git has no credential-cache client ({(err.strip().splitlines() or ['exit ' + str(code)])[0]}): every push "
        "to an environment branch starts the hook's Python (slower, same rule)",
        "apt-get install git   # Debian's git has it (git-credential-cache)",
    )


def _groups(user: pwd.struct_passwd) -> set[int]:
    return {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}


def _denied(user: pwd.struct_passwd, path: Path, want: int) -> Path | None:
    """The first path on the way to PATH that USER's mode bits refuse (None if none does). Raise OSError."""
    if user.pw_uid == 0:
        return None
    groups = _groups(user)
    path = Path(os.path.realpath(path))
    for step, need in [*((p, os.X_OK) for p in reversed(path.parents)), (path, want)]:
        info = step.stat()
        shift = 6 if info.st_uid == user.pw_uid else 3 if info.st_gid in groups else 0
        if (stat.S_IMODE(info.st_mode) >> shift) & need != need:
            return step
    return None


def access(user: pwd.struct_passwd, path: Path, want: int, purpose: str, group: str) -> Finding:
    """Whether USER's mode bits let it PURPOSE (PATH, WANT); if not, the step that refuses and the command that fixes it."""
    verb = "write" if want & os.W_OK else "read"
    if not path.exists():
        return Finding(
            False,
            f"{user.pw_name} cannot {purpose}: {path} does not exist (the daemon makes it when it starts)",
            "systemctl start gitopsd",
        )
    denied = _denied(user, path, want)
    if denied is None:
        return Finding(True, f"{user.pw_name} may {purpose} ({path})")
    info = denied.stat()
    owner = f"{_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}"
    what = f"{user.pw_name} cannot {purpose}: {denied} is {stat.filemode(info.st_mode)} {owner}"
    bits = "rx" if denied.is_dir() else verb[0]
    if info.st_gid not in _groups(user):
        fix = (
            f"usermod -aG {group} {user.pw_name}"
            if _name(grp.getgrgid, info.st_gid) == group
            else f"chgrp {group} {denied} && chmod g+{bits} {denied}"
        )
    else:
        fix = f"chmod g+{bits} {denied}"
    return Finding(False, what, fix)


def _name(lookup: Callable[[int], object], ident: int) -> str:
    try:
        return str(lookup(ident)[0])  # type: ignore[index]
    except KeyError:
        return str(ident)


# -- one repository ---------------------------------------------------------------------------------------


def repository(
    config: Config, repo: Repository, pusher_name: str, service: pwd.struct_passwd, git_user: str | None
) -> list[Finding]:
    """One repository: its layout and group, the daemon's writes and safe.directory, the hook and its settings."""
    path = repo.path
    if not (path / "objects").is_dir() or not (path / "config").is_file():
        return [
            Finding(
                False, f"{path} is not a bare Git repository (or cannot be read)", f"gitopsd init {path} --config {config.source}"
            )
        ]
    pusher = install_hooks._user(pusher_name)
    group = grp.getgrgid(service.pw_gid).gr_name
    options = f" --git-user {pusher_name}" if git_user else ""
    options += f" --service-user {service.pw_name}" if service.pw_name != "gitopsd" else ""
    install = f"{install_hooks.gitopsd_executable()} install-hooks {path} --config {config.source}{options}"
    found = [_layout(path, pusher, service, group, install), _writable(path, service, install), _safe_directory(path, service)]
    found += _hook(config, path, pusher, install)
    return found


def _layout(path: Path, pusher: pwd.struct_passwd | None, service: pwd.struct_passwd, group: str, install: str) -> Finding:
    """Owner the git user, group the daemon's, folders group-writable and setgid, core.sharedRepository=group."""
    info = path.stat()
    owner = _name(pwd.getpwuid, info.st_uid)
    wrong = []
    if pusher is not None and info.st_uid != pusher.pw_uid:
        wrong.append(f"it belongs to {owner}, not {pusher.pw_name}")
    shared = install_hooks.get_setting(path, "core.sharedRepository")
    if (shared or "").lower() not in ("group", "true", "1"):
        wrong.append(f"core.sharedRepository is {shared or 'not set'}, not group")
    bad = [p for p in [path, *install_hooks._tree(path)] if not p.is_symlink() and _unshared(p, service.pw_gid)]
    if bad:
        mode = stat.filemode(bad[0].lstat().st_mode)
        wrong.append(
            f"{len(bad)} {'file or folder is' if len(bad) == 1 else 'files or folders are'} not {group}'s with group access, e.g. {bad[0]} ({mode} "
            f"{_name(pwd.getpwuid, bad[0].lstat().st_uid)}:{_name(grp.getgrgid, bad[0].lstat().st_gid)})"
        )
    if wrong:
        return Finding(False, f"{path}: {'; '.join(wrong)}", f"{install}   # as root")
    return Finding(True, f"{path} belongs to {owner}:{group}, group-writable, setgid folders, shared with the group")


def _unshared(path: Path, gid: int) -> bool:
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    need = 0o2070 if stat.S_ISDIR(info.st_mode) else 0o040
    return info.st_gid != gid or mode & need != need


def _writable(path: Path, service: pwd.struct_passwd, install: str) -> Finding:
    """The daemon writes revert commits (objects) and moves branches (refs) for automatic rollbacks."""
    folders = [path / "objects", path / "refs"]
    folders += [Path(d) for top in folders for d, _subdirs, _files in os.walk(top)]
    denied = next((d for d in folders if _denied(service, d, os.W_OK | os.X_OK) is not None), None)
    if denied is not None:
        info = denied.stat()
        return Finding(
            False,
            f"{service.pw_name} cannot write {denied} ({stat.filemode(info.st_mode)} "
            f"{_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}): automatic "
            "rollbacks cannot write their revert commit",
            f"{install}   # as root",
        )
    return Finding(True, f"{service.pw_name} may write {path} (automatic rollbacks)")


def _safe_directory(path: Path, service: pwd.struct_passwd) -> Finding:
    """git and pygit2 refuse a repository another user owns unless safe.directory names it."""
    if path.stat().st_uid == service.pw_uid:
        return Finding(True, f"{service.pw_name} owns {path}: no safe.directory needed")
    fix = install_hooks.trust_command(path, service.pw_name)
    prefix = install_hooks.as_user(service, [])
    if prefix is None:  # not root: read its config instead of asking git as that user
        trusted = {str(path), "*"} & set(install_hooks.safe_directories(service))
        return Finding(bool(trusted), f"{service.pw_name}'s safe.directory names {path}", fix)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": service.pw_dir}
    code, stderr = gitcli.opens_as(prefix, path, env)
    if code == 0:
        return Finding(True, f"{service.pw_name}'s git opens {path} (safe.directory)")
    first = (stderr.strip().splitlines() or [f"exit {code}"])[0]
    return Finding(False, f"{service.pw_name}'s git cannot open {path}: {first}", fix if "dubious ownership" in stderr else None)


def _hook(config: Config, path: Path, pusher: pwd.struct_passwd | None, install: str) -> list[Finding]:
    shim = (install_hooks.shim_source() / "pre-receive").read_text(encoding="utf-8")
    target = path / "hooks" / "pre-receive"
    try:
        ours = target.read_text(encoding="utf-8", errors="replace") == shim
    except OSError:
        ours = False
    if ours and os.access(target, os.X_OK):
        found = [Finding(True, f"{target} is gitopsd's hook", install)]
    else:  # say what is wrong: the name of the check alone read as if all were well
        why = (
            "is gitopsd's hook but not executable, so git skips it"
            if ours
            else "is not gitopsd's hook (install-hooks keeps it, as pre-receive.chained)"
            if target.exists()
            else "does not exist"
        )
        found = [Finding(False, f"{target} {why}: pushes to environment branches are not judged before they land", install)]
    python, entry = install_hooks.get_setting(path, "gitopsd.python"), install_hooks.get_setting(path, "gitopsd.entry")
    if pusher is not None:
        problem = install_hooks.hook_python_problem(pusher.pw_name, python, entry)
        here = install_hooks.hook_python_problem(
            pusher.pw_name, sys.executable, str(Path(install_hooks.__file__).parent.parent / "hook_entry.py")
        )
        fix = (
            f"{Path(sys.executable).parent / 'gitopsd'} install-hooks {path} --config {config.source}"
            if problem and here is None
            else install_hooks.PYTHON_ADVICE
        )
        if install_hooks.as_user(pusher, ["true"]) is None:  # not a problem of the install: only root can look
            fix = f"sudo {Path(sys.executable).parent / 'gitopsd'} doctor --config {config.source}"
        found.append(Finding(problem is None, problem or f"{pusher.pw_name} can run the hook's Python {python}", fix))
    for key, wanted in (("gitopsd.database", str(config.database)), ("gitopsd.config", str(config.source.resolve()))):
        recorded = install_hooks.get_setting(path, key)
        found.append(
            Finding(
                recorded == wanted,
                f"the hook's {key} is {recorded or 'not set'}"
                + (
                    ""
                    if recorded == wanted
                    else f", but the config says {wanted}: pushes take the slow path (or read the wrong records)"
                ),
                f"systemctl reload gitopsd   # the daemon updates it; or: {install}",
            )
        )
    return found
